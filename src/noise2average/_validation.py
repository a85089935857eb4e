"""Input checks shared by the package's public functions (ValueError naming the problem)."""

import numpy as np


def check_shapes(reference, *, reference_name="reference", **arrays):
    """Raise unless every array in ``arrays`` has the shape of ``reference``."""
    for name, array in arrays.items():
        if np.shape(array) != np.shape(reference):
            raise ValueError(
                f"{name} shape {np.shape(array)} does not match {reference_name} shape "
                f"{np.shape(reference)}"
            )


def as_mask(mask, shape):
    """``mask`` as a bool array of ``shape`` with at least one True voxel (None stays None)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match data shape {tuple(shape)}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("mask is empty (no True voxel)")
    return mask
