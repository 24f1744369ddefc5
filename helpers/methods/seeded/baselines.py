"""What a user could do instead of seeded iterative clustering with the same clicks, and a corrective-click protocol.

Paper 002 compares SIC across embedding spaces but never against another way of turning a few clicks into a
region. The methods here get exactly the clicks SIC gets (:func:`helpers.methods.seeded.sic.click_draws`) and
the same embeddings, and answer "positive or not" for every patch:

- ``seeded_2means``: SIC's first step alone (seeded 2-means on all patches, no iteration) — is the iteration
  worth it?
- ``nearest_click``: each patch takes the class of its nearest clicked patch (1-nearest neighbour,
  ``sklearn.neighbors.KNeighborsClassifier``).
- ``label_spreading``: labels spread from the clicks over a k-nearest-neighbour graph of all patches
  (``sklearn.semi_supervised.LabelSpreading``) — the semi-supervised classic.
- ``logistic``: a logistic regression fitted on the clicked patches alone (standardised embeddings), applied to
  every patch.

:func:`corrective_curve` runs any of them, or SIC, the way a pathologist would work: one click per class, then
one click at a time on a patch the current region gets wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import sic

BASELINES = ("seeded_2means", "nearest_click", "label_spreading", "logistic")
SPREAD_NEIGHBOURS = 10      # the k-nearest-neighbour graph of label spreading (scikit-learn's default is 7)


def predict_from_clicks(embeddings, seeds, method: str, seed: int = 0) -> np.ndarray:
    """The positive patches (bool per patch) that ``method`` (one of :data:`BASELINES`, or ``"sic"``) predicts
    from ``seeds`` (-1 unlabelled, 0 benign click, 1 cancer click) on ``embeddings`` (patches × dims)."""
    x, y = sic.checked_inputs(embeddings, seeds)
    if not ((y == 0).any() and (y == 1).any()):
        raise sic.SeedError("predicting from clicks needs at least one cancer (1) and one benign (0) click.")
    if method == "sic":
        return sic.seeded_iterative_clustering(x, y, seed=seed).positive
    if method == "seeded_2means":
        return sic.SeededKMeans(2).fit(x, y).labels_ == 1
    clicked = y >= 0
    if method == "nearest_click":
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=1).fit(x[clicked], y[clicked]).predict(x) == 1
    if method == "label_spreading":
        from sklearn.semi_supervised import LabelSpreading

        k = min(SPREAD_NEIGHBOURS, len(x) - 1)
        return LabelSpreading(kernel="knn", n_neighbors=k).fit(x, y).transduction_ == 1
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
        return model.fit(x[clicked], y[clicked]).predict(x) == 1
    raise ValueError(f"method={method!r}: choose 'sic' or one of {', '.join(BASELINES)}.")


def compare_at_clicks(embeddings, cancer_fraction, methods, clicks=(3,), repeats: int = 5, seed: int = 0,
                      positive_at: float = 0.5, only=None) -> list[dict]:
    """Every method of ``methods`` on the clicks of :func:`helpers.methods.seeded.sic.click_protocol` with the same
    ``clicks``, ``repeats`` and ``seed`` (so SIC's own rows of the protocol are the same runs); one row per method,
    click count and repeat with the scores of :func:`helpers.methods.seeded.sic.patch_scores`. ``only``: the click
    counts to run (the others are still drawn, so that the clicks stay the protocol's); None runs them all."""
    frac = np.asarray(cancer_fraction, float)
    truth = frac >= positive_at
    rows = []
    for n_clicks, repeat, seeds in sic.click_draws(frac, clicks, repeats, seed, positive_at):
        if only is not None and n_clicks not in only:
            continue
        for method in methods:
            positive = predict_from_clicks(embeddings, seeds, method, seed=seed)
            rows.append({"method": method, "clicks": n_clicks, "repeat": repeat,
                         **sic.patch_scores(truth, positive, seeds)})
    return rows


def corrective_curve(embeddings, cancer_fraction, predict: Callable, rounds: int = 10, seed: int = 0,
                     positive_at: float = 0.5) -> list[dict]:
    """A pathologist correcting the region: round 1 clicks one random cancer and one random benign patch; every
    later round adds one click on a patch the current region gets wrong (drawn at random among the clickable
    mistakes — a missed cancer patch becomes a cancer click, a wrongly included benign patch a benign click) and
    the region is recomputed from all clicks so far. ``predict(embeddings, seeds)`` → bool per patch (e.g.
    ``lambda x, s: predict_from_clicks(x, s, "label_spreading")``). When no clickable patch is wrong, the
    pathologist stops: the remaining rounds repeat the last region. One row per round: round, clicks so far, the
    patch F1 (:func:`helpers.methods.seeded.sic.patch_scores`)."""
    if int(rounds) < 1:
        raise ValueError(f"rounds={rounds}: give at least 1 (the first round is one click per class).")
    frac = np.asarray(cancer_fraction, float)
    truth = frac >= positive_at
    cancer, benign = sic.clickable(frac, positive_at)
    rng = np.random.default_rng(seed)
    seeds = sic.random_clicks(rng, frac, 1, positive_at)
    positive = np.asarray(predict(embeddings, seeds), bool)
    rows = [{"round": 1, "clicks": int((seeds >= 0).sum()), **sic.patch_scores(truth, positive, seeds)}]
    for round_ in range(2, int(rounds) + 1):
        missed = cancer[~positive[cancer] & (seeds[cancer] < 0)]
        wrongly_in = benign[positive[benign] & (seeds[benign] < 0)]
        mistakes = np.concatenate([missed, wrongly_in])
        if len(mistakes):                # otherwise nothing clickable is wrong: the pathologist stops
            pick = int(rng.choice(mistakes))
            seeds = seeds.copy()
            seeds[pick] = int(truth[pick])
            positive = np.asarray(predict(embeddings, seeds), bool)
        rows.append({"round": round_, "clicks": int((seeds >= 0).sum()), **sic.patch_scores(truth, positive, seeds)})
    return rows
