"""``--arch timm:NAME``: architectures from timm (an optional extra: ``pip install timm``).

:func:`resolve_timm` is the one entry point, so a recipe allowlist can admit timm names
(they name registered architectures and run no user code). ``timm:resnet18`` builds the
architecture without weights (offline); its ``--arch-kwargs`` go to ``timm.create_model``
(``num_classes=10``, ``in_chans=1``, ``img_size=32``...). ``timm:hf-hub:ORG/REPO`` (or just
``hf-hub:ORG/REPO``) lets timm fetch the architecture config from the Hugging Face Hub,
which needs network; weights come from the checkpoint file as for every other --arch.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

from ..errors import ArchitectureError

PREFIX = "timm:"
HF_PREFIX = "hf-hub:"


def is_timm(arch: str) -> bool:
    """True for ``timm:NAME`` and ``hf-hub:ORG/REPO`` architecture names."""
    return arch.startswith((PREFIX, HF_PREFIX))


def _timm():
    try:
        import timm
    except ImportError:
        raise ArchitectureError("--arch timm:NAME needs the optional timm package: pip install timm "
                                "(or pip install 'lcnn-audit[timm]' from the repository)") from None
    return timm


def resolve_timm(arch: str) -> Callable[..., nn.Module]:
    """The factory ``(**arch_kwargs) -> nn.Module`` of a ``timm:NAME`` / ``hf-hub:ORG/REPO`` arch.

    An unknown name raises :class:`~lcnn_audit.errors.ArchitectureError` with the closest
    timm names. The model is built with ``pretrained=False`` unless the kwargs say otherwise.
    """
    name = arch[len(PREFIX):] if arch.startswith(PREFIX) else arch
    if not name:
        raise ArchitectureError("--arch timm: needs a model name, e.g. timm:resnet18")
    timm = _timm()
    if not name.startswith(HF_PREFIX) and not timm.is_model(name):
        hint = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ArchitectureError(f"unknown timm architecture {name!r}" + (f"; did you mean {', '.join(hint)}?" if hint
                                                                          else "") + " (timm.list_models() lists them)")

    def factory(**kwargs) -> nn.Module:
        kwargs.setdefault("pretrained", False)
        try:
            return timm.create_model(name, **kwargs)
        except (OSError, ValueError, RuntimeError) as err:
            where = " (hf-hub: ids need network access to the Hugging Face Hub)" if name.startswith(HF_PREFIX) else ""
            raise ArchitectureError(f"timm could not build {name!r}{where}: "
                                    f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                                    ) from None

    return factory
