"""Plain JSON types for the report: numpy scalars and arrays, NaN, tuples, sets and settings
converted (what :func:`to_jsonable` returns, ``json.dumps`` writes as is)."""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..approx import QuerySettings


def to_jsonable(obj):
    """Plain JSON types: numpy scalars and arrays to Python, NaN and infinities to None, tuples
    and sets to lists, dict keys to strings."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        items = sorted(obj) if isinstance(obj, set) else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, QuerySettings):
        return to_jsonable(asdict(obj))
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
