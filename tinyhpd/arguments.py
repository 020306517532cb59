"""Argument checks shared across the package: one rule and one message for each kind of argument."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np


def positive_int(value: Any, name: str, *, or_none: bool = False) -> Optional[int]:
    """``value`` as an int >= 1 (NumPy integers included, bool not; with ``or_none``, None passes as None); anything
    else is a ValueError naming ``name`` and the value."""
    if or_none and value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be {'None or ' if or_none else ''}a positive integer; got {value!r}")
    return int(value)


def positive_seconds(value: Any, name: str) -> float:
    """``value`` as a finite number of seconds > 0 (a timeout: 0, a negative or NaN one would refuse or keep every
    request); anything else is a ValueError naming ``name`` and the value."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0; got {value!r}")
    return float(value)


def port_number(value: Any, name: str = "port") -> int:
    """``value`` as a TCP port, an int in 0..65535 (0: the system picks a free one); anything else is a ValueError
    naming ``name`` and the value (before a model is loaded, not as an OverflowError from the socket)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be an integer in 0..65535; got {value!r}")
    return int(value)
