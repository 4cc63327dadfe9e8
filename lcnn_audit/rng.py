"""Counter-based, per-sample random numbers.

Random draws (Lanczos start vectors, noise directions, attack restarts) are a pure
function of ``(seed, stream, sample index, position)``. They therefore do not depend on
batch size, batch composition, device count or rank, which is what makes batched,
resumed and distributed runs give identical per-sample results.

The generator is the 32-bit murmur3 finaliser applied to a mixed counter; it is fully
vectorised on the target device (no per-sample Python loop).
"""

from __future__ import annotations

import math

import torch

from .errors import UsageError

_MASK32 = 0xFFFFFFFF
SEED_RANGE = (-(2**63), 2**63 - 1)  # what torch generators and int64 tensors hold


def check_seed(seed: int, what: str = "--seed") -> int:
    """``seed`` if it fits a 64-bit signed integer, else a one-line :class:`UsageError`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise UsageError(f"{what} must be an integer between {SEED_RANGE[0]} and {SEED_RANGE[1]}, got {seed}")
    return seed


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """(h * c) mod 2**32 for int64 tensors holding values < 2**32, without int64 overflow."""
    lo = h & 0xFFFF
    hi = h >> 16
    return ((lo * c) + (((hi * c) & 0xFFFF) << 16)) & _MASK32


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _hash_bits(seed: int, stream: int, index: torch.Tensor, numel: int) -> torch.Tensor:
    """Independent 32-bit integers of shape (N, numel), one row per sample index."""
    device = index.device
    idx = index.to(torch.int64).reshape(-1, 1) & _MASK32
    pos = torch.arange(numel, device=device, dtype=torch.int64).reshape(1, -1)
    key = _fmix32(torch.tensor([(seed * 0x9E3779B1 + stream * 0x7F4A7C15) & _MASK32], device=device))
    h = _fmix32(idx ^ key)
    h = _fmix32((h + _mul32(pos, 0x9E3779B1)) & _MASK32)
    return _fmix32(h ^ (key >> 7))


def per_sample_uniform(
    seed: int, stream: int, index: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32
) -> torch.Tensor:
    """Uniform(0, 1) draws of shape (N, *shape), strictly inside (0, 1)."""
    numel = math.prod(shape)
    bits = _hash_bits(seed, stream, index, numel)
    u = (bits.to(torch.float64) + 0.5) / 4294967296.0
    return u.to(dtype).reshape(len(index), *shape)


def per_sample_normal(
    seed: int, stream: int, index: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32
) -> torch.Tensor:
    """Standard normal draws of shape (N, *shape) by Box-Muller on two hashed streams."""
    u1 = per_sample_uniform(seed, 2 * stream, index, shape, torch.float64)
    u2 = per_sample_uniform(seed, 2 * stream + 1, index, shape, torch.float64)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.to(dtype)


def per_sample_sphere(
    seed: int, stream: int, index: torch.Tensor, shape: tuple[int, ...], dtype=torch.float32
) -> torch.Tensor:
    """Directions uniform on the unit L2 sphere, one per sample, shape (N, *shape)."""
    z = per_sample_normal(seed, stream, index, shape, torch.float64)
    z = z / z.flatten(1).norm(dim=1).clamp_min(1e-300).view(-1, *([1] * len(shape)))
    return z.to(dtype)
