"""The one JSON writer of every ``--json`` output: always valid JSON (RFC 8259).

Python's ``json`` writes NaN and infinity as the bare tokens ``NaN`` and ``Infinity``,
which no strict JSON reader accepts. Here a non-finite float is written as ``null``
(e.g. the PSNR of an image identical to its reference, +inf dB, reads "no finite value"),
and ``allow_nan=False`` guarantees that no such token can slip through.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    return value


def to_json(document: Any, indent: int | None = 2) -> str:
    """``document`` as strict JSON text; non-finite floats become ``null``."""
    return json.dumps(finite_or_none(document), indent=indent, allow_nan=False)
