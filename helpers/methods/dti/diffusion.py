"""Diffusion tensor imaging: the tensor fit (dipy) of DWI data (such as :func:`helpers.data.bundled.load_dwi`), and
mean diffusivity and fractional anisotropy from the eigenvalues, written out as in the thesis of paper 003 (eqs. 2.1–2.2)."""
from __future__ import annotations

import numpy as np


def check_dwi(data, bvals, bvecs):
    """The last axis of a DWI volume must have one b-value and one b-vector per volume."""
    data, bvals, bvecs = np.asarray(data), np.asarray(bvals, float).ravel(), np.asarray(bvecs, float)
    if bvecs.ndim == 2 and bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T                                  # FSL writes 3 × N
    if data.ndim < 2:
        raise ValueError(f"DWI data must have a last axis of diffusion volumes, got shape {data.shape}.")
    n = data.shape[-1]
    if len(bvals) != n or bvecs.shape != (n, 3):
        raise ValueError(f"the DWI data has {n} volumes on its last axis but there are {len(bvals)} b-values and "
                         f"b-vectors of shape {bvecs.shape}; they must match one to one (wrong .bval/.bvec file?).")
    if not np.isfinite(data).all():
        raise ValueError("the DWI data holds NaN or inf values.")
    return data, bvals, bvecs


def fit_tensor(data, bvals, bvecs, mask=None):
    """dipy's weighted least-squares tensor fit; returns the dipy TensorFit (eigenvalues in ``.evals``, dipy's
    own MD/FA in ``.md`` / ``.fa``)."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    data, bvals, bvecs = check_dwi(data, bvals, bvecs)
    gtab = gradient_table(bvals, bvecs=bvecs)
    return TensorModel(gtab).fit(data, mask=mask)


def md_fa(evals):
    """Mean diffusivity (eq. 2.1) and fractional anisotropy (eq. 2.2) from tensor eigenvalues (… × 3).

    MD = (λ1 + λ2 + λ3) / 3;  FA = √(3/2) · √Σ(λi − MD)² / √Σλi². Both are physically meaningful only for a
    positive-definite tensor, so non-positive eigenvalues are refused (mask such voxels out first)."""
    evals = np.asarray(evals, np.float64)
    if evals.shape[-1] != 3:
        raise ValueError(f"eigenvalues must have a last axis of 3, got shape {evals.shape}.")
    if not np.isfinite(evals).all():
        raise ValueError("eigenvalues hold NaN or inf values.")
    bad = int((evals <= 0).any(-1).sum())
    if bad:
        raise ValueError(f"{bad} tensor(s) have non-positive eigenvalues, where MD and FA are undefined; restrict "
                         f"to voxels with all eigenvalues > 0 (e.g. a brain/tissue mask).")
    md = evals.mean(-1)
    fa = np.sqrt(1.5) * np.sqrt(((evals - md[..., None]) ** 2).sum(-1)) / np.sqrt((evals**2).sum(-1))
    return md, fa


def colour_fa(fa, evecs):
    """Direction-encoded colour FA: |principal eigenvector| (x red, y green, z blue) × FA."""
    fa, evecs = np.asarray(fa), np.asarray(evecs)
    if evecs.shape != fa.shape + (3, 3):
        raise ValueError(f"fa {fa.shape} and evecs {evecs.shape}: evecs must be fa's shape × 3 × 3 (eigenvectors in "
                         "columns, as fit_tensor returns them).")
    return np.clip(np.abs(evecs[..., :, 0]) * fa[..., None], 0, 1)
