"""Notices: what a user must know to read a result correctly, as warnings and log records.

Every audit records its notices in ``result.summary["notices"]`` (the CLI prints them as
``note: ...`` and the report beside the numbers they qualify). From Python they are also
raised with :func:`warnings.warn` as :class:`LcnnAuditNotice`, so a notebook shows them, and
logged on the ``lcnn_audit`` logger. Silence them with
``warnings.simplefilter("ignore", lcnn_audit.LcnnAuditNotice)``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable

logger = logging.getLogger("lcnn_audit")


class LcnnAuditNotice(UserWarning):
    """A caveat about an audit result (a ReLU model's Hessian, max-pooling, a gradient-masking flag...)."""


def emit_notices(command: str, notices: Iterable[str], stacklevel: int = 3) -> None:
    """Warn (category :class:`LcnnAuditNotice`) and log each notice of a ``command`` result."""
    for msg in dict.fromkeys(notices):
        logger.info("%s: %s", command, msg)
        warnings.warn(f"{command}: {msg}", LcnnAuditNotice, stacklevel=stacklevel)
