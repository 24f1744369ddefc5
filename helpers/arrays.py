"""Checks of the numeric arrays the public helpers take (scores, maps, masks, labels, matrices): a wrong dtype,
layout, an empty array or NaN is refused at the entry point with the argument named, what was received and the fix,
instead of failing deep inside numpy, scipy or scikit-learn or turning into a plausible number (a NaN mask read as
all True, a NaN map never above its threshold). Image value ranges have their own home, :mod:`helpers.pixels`."""
from __future__ import annotations

import numpy as np


def numeric(values, name: str, *, ndim=None, layout: str | None = None, min_size: int = 1, finite: bool = True,
            dtype=np.float64, fix: str = "") -> np.ndarray:
    """``values`` as an array of ``dtype`` (None keeps it), after checking that it is numeric (bool, integer or
    float), has ``ndim`` dimensions (an int or a tuple of those allowed; ``layout`` describes them, e.g.
    "N × H × W"), holds at least ``min_size`` values and, if ``finite``, no NaN or inf. ``fix`` is appended to
    every message."""
    fix = f" {fix}" if fix else ""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as err:     # ragged lists
        raise ValueError(f"{name} cannot be read as one array ({err}); give equal-length rows.{fix}") from None
    if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} of dtype {arr.dtype} (received {type(values).__name__}): expected numbers.{fix}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            what = layout or " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} of shape {arr.shape}: expected {what} "
                             f"({' or '.join(map(str, allowed))} dimensions).{fix}")
    if arr.size < min_size:
        raise ValueError(f"{name} of shape {arr.shape} holds {arr.size} value(s); at least {min_size} needed.{fix}")
    if finite and arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} holds {bad} NaN or inf value(s) of {arr.size}; drop or fill them first.{fix}")
    return arr if dtype is None else arr.astype(dtype, copy=False)


def labels(values, name: str, *, fix: str = "") -> np.ndarray:
    """Integer class or cluster labels as a 1-D int64 array (floats allowed only when they are whole numbers)."""
    arr = numeric(values, name, ndim=1, layout="one label per item (1-D)", dtype=None, fix=fix)
    if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name} holds non-integer values (e.g. {arr[arr != np.round(arr)][0]!r}); labels are "
                             f"whole numbers.{' ' + fix if fix else ''}")
    return arr.astype(np.int64)
