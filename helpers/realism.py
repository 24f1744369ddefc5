"""How far simulated tiles are from real ones, measured on features of a network (notebook 01).

Two measures, each with its floor computed the same way:

- :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two sets of feature vectors (the
  measure behind FID): ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½). With a few hundred tiles a 1 280-dimensional
  covariance is singular, so callers project first (:func:`shared_projection`); distances are comparable only
  within one projection, which is why the real-vs-real distance between two real sources is computed in it too.
- :func:`probe` — a linear probe (standardised logistic regression) asked to tell real tiles from simulated ones,
  cross-validated by folds the caller builds (a slide or an image never on both sides), scored by balanced accuracy:
  0.5 means it cannot tell them apart, 1.0 that it always can.

:func:`compare_with_real` puts both together as notebook 01 reports them (real sources, one probe fold each, the
distances beside their floors); :func:`real_tiles` cuts the real tiles at the simulated slides' pixel size.
"""
from __future__ import annotations

import numpy as np

from .arrays import numeric


def _features(values, name: str) -> np.ndarray:
    x = numeric(values, name, ndim=2, layout="N × D feature vectors, one row per tile")
    if len(x) < 2:
        raise ValueError(f"{name} has {len(x)} row(s); a mean and a covariance need at least two feature vectors.")
    return x.astype(np.float64)


def frechet_distance(a, b) -> float:
    """Fréchet distance between Gaussian fits of the rows of ``a`` and of ``b`` (same number of columns)."""
    from scipy import linalg

    a, b = _features(a, "a"), _features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has {a.shape[1]} features per row and b {b.shape[1]}; compare vectors of one space.")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):      # rounding leaves tiny imaginary parts on a product of two covariances
        root = root.real
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def shared_projection(*feature_sets, dims: int = 32, seed: int = 0):
    """Each feature set projected onto the first ``dims`` principal components of all of them together (one PCA, so
    that distances computed afterwards share one space)."""
    from sklearn.decomposition import PCA

    sets = [_features(f, f"feature_sets[{i}]") for i, f in enumerate(feature_sets)]
    if not sets:
        raise ValueError("give at least one feature set.")
    stacked = np.vstack(sets)
    dims = int(dims)
    if not 1 <= dims <= min(stacked.shape):
        raise ValueError(f"dims={dims}: choose 1 to {min(stacked.shape)} (the rows and columns of the features).")
    pca = PCA(dims, random_state=seed).fit(stacked)
    return [pca.transform(f) for f in sets]


def probe(features, is_real, fold, seed: int = 0) -> dict:
    """Balanced accuracy of a logistic-regression probe telling real rows (``is_real``) from simulated ones, each
    fold of ``fold`` (one label per row, e.g. 0 for one real image and half the simulated slides, 1 for the
    rest) held out in turn (scikit-learn's LeaveOneGroupOut): build the folds so that an image or a slide never
    sits on both sides. Returns the mean and each fold's accuracy, and how many real and simulated rows it held."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _features(features, "features")
    y = np.asarray(is_real, bool)
    fold = np.asarray(fold)
    if y.shape != (len(x),) or fold.shape != (len(x),):
        raise ValueError(f"is_real has shape {y.shape} and fold {fold.shape} for {len(x)} rows; give one of each "
                         "per row.")
    if len(np.unique(fold)) < 2:
        raise ValueError(f"fold holds {len(np.unique(fold))} distinct value(s); a probe is scored on held-out rows, "
                         "so give at least two folds.")
    folds = []
    for train, test in LeaveOneGroupOut().split(x, y, fold):
        if len(set(y[train])) < 2 or len(set(y[test])) < 2:
            raise ValueError(f"fold {fold[test][0]!r} or the rows outside it hold only real or only simulated rows; "
                             "put real and simulated rows in every fold.")
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        model.fit(x[train], y[train])
        folds.append({"fold": np.asarray(fold[test][0]).item(),
                      "balanced_accuracy": float(balanced_accuracy_score(y[test], model.predict(x[test]))),
                      "real": int(y[test].sum()), "simulated": int((~y[test]).sum())})
    return {"balanced_accuracy": float(np.mean([f["balanced_accuracy"] for f in folds])), "folds": folds}


def real_tiles(rgb, tissue_mask, tile_px: int, n: int, seed: int = 0, out_px: int = 128,
               min_tissue: float = 0.5) -> np.ndarray:
    """``n`` random tissue tiles of ``tile_px`` px from a real image, each resampled to ``out_px`` px (anti-aliased),
    so that real tiles cover the same field at the same pixel size as the simulated ones: ``tile_px`` = field in µm
    / the image's µm per px, ``out_px`` = field in µm at 1 µm/px. Returns n × out_px × out_px × 3 uint8."""
    from skimage.transform import resize

    from .data import tissue

    return np.stack([resize(t, (out_px, out_px), anti_aliasing=True, preserve_range=True).astype(np.uint8)
                     for t in tissue.random_tiles(rgb, tissue_mask, int(tile_px), n, seed, min_tissue)])


def compare_with_real(real_features: dict, simulated_features, simulated_slide, dims: int = 32,
                      seed: int = 0) -> dict:
    """Notebook 01's realism report: simulated tiles against two or more real sources, on one network's features.

    ``real_features``: the sources, name → N × D features; ``simulated_features`` with ``simulated_slide`` (the
    slide of each simulated row). The probe holds out one fold at a time, and every image and slide stays on one
    side: fold *i* is the *i*-th real source with the slides whose number is *i* modulo the number of sources (with
    two sources, the first with the even slides and the second with the odd ones). The Fréchet distances share one
    projection onto ``dims`` principal components of all tiles, with two kinds of floor in it: the real sources
    against each other, and the even against the odd simulated slides.

    Returns ``probe`` (:func:`probe`'s result), ``projected`` (name → projected rows, the real sources first, then
    ``"simulated"``) and ``fd`` (name → distance: ``"simulated ↔ <source>"`` for each source,
    ``"floor: <a> ↔ <b> (real ↔ real)"`` for each pair of sources and ``"floor: simulated, even ↔ odd slides"``)."""
    from itertools import combinations

    if len(real_features) < 2 or "simulated" in real_features:
        raise ValueError(f"real_features has {len(real_features)} source(s) ({', '.join(map(str, real_features))}); "
                         "give two or more, name → features, none named 'simulated', so that each probe fold holds "
                         "out one real image.")
    real = {name: _features(f, f"real_features[{name!r}]") for name, f in real_features.items()}
    simulated = _features(simulated_features, "simulated_features")
    slide = np.asarray(simulated_slide)
    if slide.shape != (len(simulated),):
        raise ValueError(f"simulated_slide has shape {slide.shape} for {len(simulated)} simulated rows; give the "
                         "slide of each row.")
    even = slide % 2 == 0
    per_fold = np.bincount(slide % len(real), minlength=len(real))
    if even.sum() < 2 or (~even).sum() < 2 or per_fold.min() < 1:
        raise ValueError(f"the simulated rows come from {int(even.sum())} row(s) of even and {int((~even).sum())} of "
                         f"odd slides, {per_fold.tolist()} per probe fold; the folds and the simulated floor need at "
                         "least two of each and one per fold.")
    sizes = [len(f) for f in real.values()]
    result = probe(np.vstack([*real.values(), simulated]),
                   np.r_[np.ones(sum(sizes), bool), np.zeros(len(simulated), bool)],
                   np.r_[np.repeat(np.arange(len(real)), sizes), slide % len(real)], seed=seed)
    projected = dict(zip([*real, "simulated"], shared_projection(*real.values(), simulated, dims=dims, seed=seed)))
    fd = {f"simulated ↔ {name}": frechet_distance(projected["simulated"], projected[name]) for name in real}
    fd |= {f"floor: {a} ↔ {b} (real ↔ real)": frechet_distance(projected[a], projected[b])
           for a, b in combinations(real, 2)}
    fd["floor: simulated, even ↔ odd slides"] = frechet_distance(projected["simulated"][even],
                                                                 projected["simulated"][~even])
    return {"probe": result, "projected": projected, "fd": fd}
