"""The collection's one value convention for images: the range is read from the dtype, never guessed from the
values — ``uint8`` is 0–255, floating point must lie in [0, 1]. Every entry point that takes images checks it here,
so that float images divided by 255 twice, or 0–255 floats taken as [0, 1], stop with the fix instead of giving a
black picture or a zero stain."""
from __future__ import annotations

import numpy as np


def check_range(images, name: str = "images") -> np.ndarray:
    """``images`` as an array, unchanged, after checking the convention: uint8, or finite floats in [0, 1]
    (anything else is refused with the argument, what was received and the fix)."""
    arr = np.asarray(images)
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.isfinite(arr).all():
            raise ValueError(f"{name} contain NaN or inf; clean them first (e.g. np.nan_to_num).")
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(f"{name}: float values from {arr.min():.3g} to {arr.max():.3g}, but float images must lie "
                             "in [0, 1]; for 0–255 values pass uint8 (e.g. images.astype(np.uint8)) or divide by 255.")
        return arr
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} of dtype {arr.dtype}: pass uint8 (0–255) or float (0–1) images; other integer types "
                        "carry no agreed range (convert with .astype(np.uint8) if the values are 0–255).")
    raise TypeError(f"{name} of dtype {arr.dtype}: pass uint8 (0–255) or float (0–1) images.")


def unit_float(images, name: str = "images", dtype=np.float32) -> np.ndarray:
    """``images`` as floats in [0, 1] by the convention (uint8 divided by 255; floats checked and kept)."""
    arr = check_range(images, name)
    if arr.dtype == np.uint8:
        return arr.astype(dtype) / dtype(255.0)
    return arr.astype(dtype, copy=False)
