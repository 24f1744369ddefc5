"""Paper 003's handcrafted comparison (Brabec et al., cited by the thesis): two features of a histology patch —
cell density (the share of the patch covered by haematoxylin-stained nuclei) and image anisotropy (how strongly
the patch's texture is oriented, from the structure tensor) — and a polynomial regression from them to MD / FA.
A CNN has to beat this to show it reads more than density and orientation; the simulator's MD and FA are built
from exactly these two properties, so here the baseline is strong by construction."""
from __future__ import annotations

import numpy as np

from ...pixels import check_range


def _rgb_batch(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be N × H × W × 3 RGB patches, got shape {images.shape}.")
    images = check_range(images, "images")      # float 0–255 would give a haematoxylin density of 0
    return images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def haematoxylin(images) -> np.ndarray:
    """Haematoxylin optical density of N × H × W × 3 patches (scikit-image's colour deconvolution, rgb2hed)."""
    from skimage.color import rgb2hed

    return np.stack([rgb2hed(image)[..., 0] for image in _rgb_batch(images)])


def nuclei_threshold(images) -> float:
    """Otsu's threshold of the haematoxylin density over all pixels of ``images`` (fit it on training patches
    and apply it unchanged to the others)."""
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(haematoxylin(images).ravel()))


def cell_density(images, threshold: float) -> np.ndarray:
    """Share of each patch whose haematoxylin density exceeds ``threshold`` (from :func:`nuclei_threshold`)."""
    return (haematoxylin(images) > threshold).mean(axis=(1, 2))


def image_anisotropy(images, sigma: float = 1.5) -> np.ndarray:
    """Coherence of each patch's summed structure tensor: (λ1 − λ2) / (λ1 + λ2) of Σ ∇I∇Iᵀ over the patch (grey
    image, gradients smoothed at ``sigma`` px) — 0 for isotropic texture, towards 1 when edges share one direction."""
    from skimage.color import rgb2gray
    from skimage.feature import structure_tensor

    out = []
    for image in _rgb_batch(images):
        arr, arc, acc = (a.sum() for a in structure_tensor(rgb2gray(image), sigma=sigma, mode="reflect", order="rc"))
        trace = arr + acc
        gap = np.sqrt((arr - acc) ** 2 + 4 * arc ** 2)
        out.append(gap / trace if trace > 0 else 0.0)
    return np.asarray(out)


def features(images, threshold: float, sigma: float = 1.5) -> np.ndarray:
    """N × 2 array: cell density and image anisotropy."""
    return np.stack([cell_density(images, threshold), image_anisotropy(images, sigma)], 1)


def fit_regression(features_train, y_train, degree: int = 2):
    """scikit-learn pipeline: polynomial features of the given degree (Brabec et al. used a polynomial
    regression), standardised, ordinary least squares; fitted on the training patches."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    if int(degree) < 1:
        raise ValueError(f"degree={degree}: a polynomial regression needs degree ≥ 1 (1 is linear).")
    x, y = np.asarray(features_train, float), np.asarray(y_train, float)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} targets; give one target row per patch.")
    return make_pipeline(PolynomialFeatures(int(degree), include_bias=False), StandardScaler(),
                         LinearRegression()).fit(x, y)


def fit_on_validation(features_train, y_train, features_val, y_val, degrees=(1, 2)):
    """:func:`fit_regression` at each of ``degrees`` on the training patches; returns (the fit whose R² on the
    validation patches is highest, its degree). The test patches play no part in the choice."""
    from sklearn.metrics import r2_score

    degrees = [int(d) for d in degrees]
    if not degrees:
        raise ValueError("degrees is empty; give at least one polynomial degree, e.g. (1, 2).")
    fits = {d: fit_regression(features_train, y_train, d) for d in degrees}
    scores = {d: r2_score(np.asarray(y_val, float), f.predict(np.asarray(features_val, float))) for d, f in fits.items()}
    best = max(scores, key=scores.get)
    return fits[best], best


# ------------------------------------------------------------------------- a causal check of explanations
def erase(images, masks, grow: int = 1) -> np.ndarray:
    """Copies of uint8 patches with the masked pixels (grown by ``grow`` px, to take the dark rim too) painted
    with the mean colour of the patch's unmasked pixels: the patch without those objects. Nothing else changes."""
    from scipy.ndimage import binary_dilation

    images, masks = np.asarray(images), np.asarray(masks, bool)
    if images.ndim != 4 or images.shape[:3] != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape}: give N × H × W × 3 patches and one "
                         "N × H × W mask per patch.")
    out = images.copy()
    for image, mask, target in zip(images, masks, out):
        grown = binary_dilation(mask, iterations=int(grow)) if grow > 0 and mask.any() else mask
        if grown.all() or not grown.any():
            continue
        target[grown] = np.round(image[~grown].reshape(-1, 3).mean(0)).astype(images.dtype)
    return out


def shifted_masks(masks, avoid=None) -> np.ndarray:
    """The control for :func:`erase`: each mask rolled by half the patch in both directions (same shapes and
    area, another place), minus the pixels of ``avoid`` (by default the mask itself)."""
    masks = np.asarray(masks, bool)
    avoid = masks if avoid is None else np.asarray(avoid, bool)
    h, w = masks.shape[1:]
    return np.roll(masks, (h // 2, w // 2), axis=(1, 2)) & ~avoid
