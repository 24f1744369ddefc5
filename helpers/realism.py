"""How far simulated tiles are from real ones, measured on features of a network (notebook 01).

Two measures, each with its floor computed the same way:

- :func:`frechet_distance` — the Fréchet distance between Gaussians fitted to two sets of feature vectors (the
  measure behind FID): ‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½). With a few hundred tiles a 1 280-dimensional
  covariance is singular, so callers project first (:func:`shared_projection`); distances are comparable only
  within one projection, which is why the real-vs-real distance between two real sources is computed in it too.
- :func:`probe` — a linear probe (standardised logistic regression) asked to tell real tiles from simulated ones,
  cross-validated by folds the caller builds (a slide or an image never on both sides), scored by balanced accuracy:
  0.5 means it cannot tell them apart, 1.0 that it always can.
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
