"""Argument checks shared across the package: one rule and one message for each kind of argument."""
from __future__ import annotations

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
