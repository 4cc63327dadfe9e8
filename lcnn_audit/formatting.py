"""Number formatting shared by the terminal tables and the reports (computes nothing)."""

from __future__ import annotations

import math


def num(v) -> str:
    """A compact number: 4 significant digits, scientific outside [1e-3, 1e4)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v == 0:
            return "0"
        return sci(v) if abs(v) >= 1e4 or abs(v) < 1e-3 else f"{v:.4g}"
    return str(v)


def sci(v: float) -> str:
    """Scientific notation in at most 9 characters plus sign: ``6.592e-5``, ``1.2e+7``, ``inf``."""
    if math.isnan(v) or v in (float("inf"), float("-inf")):
        return str(v)
    mant, exp = f"{v:.3e}".split("e")
    mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
    e = int(exp)
    return f"{mant}e{'+' if e > 0 else ''}{e}"


def eps_text(eps: float, norm: str, with_value: bool = False) -> str:
    """``f"{eps:g}"``; a linf eps that is a whole multiple of 1/255 reads ``k/255``."""
    k = eps * 255
    if norm == "linf" and round(k) >= 1 and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255 ({eps:.4g})" if with_value else f"{round(k)}/255"
    return f"{eps:g}"
