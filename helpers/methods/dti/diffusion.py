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


def shell_volumes(bvals, shell: float, tolerance: float = 20.0) -> np.ndarray:
    """Which volumes belong to one b-value shell, the b ≈ 0 volumes included (what a single-shell tensor fit uses):
    a boolean index over the last axis. ``tolerance`` in s/mm² (dipy's ``unique_bvals_tolerance`` uses 20)."""
    bvals = np.asarray(bvals, float).ravel()
    b0 = bvals < tolerance
    chosen = np.abs(bvals - shell) < tolerance
    if shell < tolerance or not chosen.any():
        shells = sorted({float(round(b)) for b in bvals[~b0]})
        raise ValueError(f"shell={shell}: no diffusion-weighted volume within {tolerance} s/mm² of it; this "
                         f"acquisition has shells {shells}.")
    if not b0.any():
        raise ValueError("the acquisition has no b ≈ 0 volume, which a tensor fit of one shell needs as reference.")
    return b0 | chosen


def fit_tensor_shell(data, bvals, bvecs, shell: float, mask=None, tolerance: float = 20.0):
    """The tensor fit (:func:`fit_tensor`) of one shell and the b ≈ 0 volumes: MD and FA as a single-shell
    protocol at b = ``shell`` would measure them."""
    data, bvals, bvecs = check_dwi(data, bvals, bvecs)
    chosen = shell_volumes(bvals, shell, tolerance)
    if np.unique(np.round(bvecs[chosen & (bvals >= tolerance)], 6), axis=0).shape[0] < 6:
        raise ValueError(f"shell={shell} has fewer than 6 distinct gradient directions; a tensor (6 unknowns) cannot "
                         "be fitted from it.")
    return fit_tensor(data[..., chosen], bvals[chosen], bvecs[chosen], mask=mask)


def direction_averaged_diffusivity(data, bvals, bvecs, mask):
    """The apparent diffusivity of each shell from the signal averaged over its directions (dipy's
    ``mean_signal_bvalue``): D(b) = −ln(S̄(b) / S̄(0)) / b. For Gaussian diffusion D(b) is the same at every b (and equals
    MD for directions spread evenly over the sphere); restriction by cells makes it fall as b grows. Returns (shells
    in s/mm², D per masked voxel × shell in mm²/s — NaN where a mean signal is not positive —, directions per shell)."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.msdki import mean_signal_bvalue

    data, bvals, bvecs = check_dwi(data, bvals, bvecs)
    mask = np.asarray(mask, bool)
    if mask.shape != data.shape[:-1] or not mask.any():
        raise ValueError(f"mask has shape {mask.shape} with {int(mask.sum())} voxels; it must cover part of the "
                         f"data's grid {data.shape[:-1]}.")
    gtab = gradient_table(bvals, bvecs=bvecs)
    signal, n_directions = mean_signal_bvalue(data[mask].astype(np.float64), gtab)
    shells = _unique_shells(bvals)
    if len(shells) != signal.shape[-1] or shells[0] != 0:
        raise ValueError(f"dipy grouped the b-values into {signal.shape[-1]} shells, {shells} were expected.")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = signal[:, 1:] / signal[:, :1]
        diffusivity = np.where((signal[:, 1:] > 0) & (signal[:, :1] > 0), -np.log(ratio) / shells[1:], np.nan)
    return shells[1:], diffusivity, np.asarray(n_directions[1:], int)


def mean_signal_kurtosis(data, bvals, bvecs, mask, max_b: float = 3000.0):
    """dipy's mean-signal diffusion kurtosis model (MSDKI) fitted to the shells up to ``max_b`` (the range in which
    the kurtosis expansion holds): returns (mean signal diffusivity, mean signal kurtosis) per masked voxel. Kurtosis
    0 is Gaussian diffusion, where a tensor's MD does not depend on b."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.msdki import MeanDiffusionKurtosisModel

    data, bvals, bvecs = check_dwi(data, bvals, bvecs)
    chosen = bvals <= max_b + 20.0
    if len(_unique_shells(bvals[chosen])) < 3:
        raise ValueError(f"max_b={max_b}: kurtosis needs b ≈ 0 and at least two shells up to it; this acquisition has "
                         f"{_unique_shells(bvals).tolist()}.")
    fit = MeanDiffusionKurtosisModel(gradient_table(bvals[chosen], bvecs=bvecs[chosen])).fit(
        data[np.asarray(mask, bool)][:, chosen].astype(np.float64))
    return np.asarray(fit.msd, float), np.asarray(fit.msk, float)


def _unique_shells(bvals) -> np.ndarray:
    from dipy.core.gradients import unique_bvals_tolerance

    return np.asarray(unique_bvals_tolerance(np.asarray(bvals, float)), float)


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
