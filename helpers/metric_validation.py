"""Which attribution metric can be trusted? Models trained on images with a planted mechanism
(:mod:`helpers.simulate.planted`) have a known right answer: the share of each method's positive attribution that
falls on the planted evidence (relevance mass, Arras et al.) ranks the methods by construction. A metric computed
without that knowledge (deletion and insertion, a score against annotation masks, the randomisation check) is
trustworthy to the degree that it ranks the methods the same way: Kendall's τ between its ranking and the planted
one, with a bootstrap interval over patches (issue 31, item 9)."""
from __future__ import annotations

import warnings

import numpy as np
from torch import nn

from . import cache, models, training
from .data import tensors
from .simulate import planted


def ensure_planted_model(data_dir, images, nuclei, split, mechanism: str, seed: int = 0, epochs: int = 8,
                         lr: float = 1e-3, batch_size: int = 32, device="auto", data_key: dict | None = None):
    """The grading CNN's architecture with two classes, trained on :func:`planted.planted_dataset` of the patches
    (``split`` 0 train, 1 validation, 2 test, as the grading patches'). Cached like every model (``data_key``
    identifies the patches). Returns (model, info with the test accuracy, the planted data)."""
    data = planted.planted_dataset(images, nuclei, mechanism, seed=seed)
    split = np.asarray(split)
    size = int(np.asarray(images).shape[1])
    config = {"model": {"arch": "paper", "n_classes": 2, "input_size": size},
              "train": {"epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size)},
              "mechanism": mechanism, "seed": int(seed), "data": data_key or {"n": int(len(split))},
              # the planting code makes the training data: a change there (e.g. the marker's size) retrains
              "planting": cache.source_fingerprint(planted)}

    def train(model):
        sets = [tensors.ArrayDataset(data["images"], data["labels"], np.flatnonzero(split == s)) for s in (0, 1)]
        history = training.fit(model, *sets, nn.CrossEntropyLoss(), epochs=epochs, lr=lr, batch_size=batch_size,
                               patience=3, device=device, seed=seed, desc=f"planted {mechanism}")
        test = np.flatnonzero(split == 2)
        logits = training.predict(model, data["images"][test], device=device)
        accuracy = float(np.mean(np.asarray(logits).argmax(1) == data["labels"][test]))
        return {"history": history, "metrics": {"accuracy": accuracy}}

    model, info = training.ensure_model(f"planted_{mechanism}", data_dir, config,
                                        lambda: models.GradingCNN(n_classes=2, input_size=size), train)
    return model, info, data


def kendall_agreement(metric_scores: dict, truth_scores: dict, higher_is_better: bool = True,
                      n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Kendall's τ between the ranking of methods by a metric and by the planted truth. ``metric_scores`` and
    ``truth_scores``: method → per-patch scores on the same patches (NaN: no score for that patch; a method with no
    score at all drops out). The methods' means are ranked; the interval resamples the patches (the same draw for metric and truth). Returns {tau, low,
    high, n_methods, n_patches}."""
    from scipy import stats

    methods = [m for m in truth_scores if m in metric_scores]
    if len(methods) < 3:
        raise ValueError(f"{len(methods)} methods have both scores; a ranking agreement needs at least 3.")
    metric = np.array([np.asarray(metric_scores[m], float) for m in methods])
    truth = np.array([np.asarray(truth_scores[m], float) for m in methods])
    if metric.shape != truth.shape:
        raise ValueError(f"metric scores {metric.shape} and truth scores {truth.shape}: give every method's per-patch "
                         "scores on the same patches.")
    sign = 1.0 if higher_is_better else -1.0

    def tau(columns):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)      # a method with no score: its mean is NaN
            a, b = sign * np.nanmean(metric[:, columns], 1), np.nanmean(truth[:, columns], 1)
        # a method without any score (e.g. the empty map has no attribution to place) drops out of both rankings
        value = stats.kendalltau(a, b, nan_policy="omit").statistic
        return 0.0 if not np.isfinite(value) else float(value)   # a constant ranking agrees with nothing

    n = metric.shape[1]
    rng = np.random.default_rng(seed)
    draws = [tau(rng.integers(0, n, n)) for _ in range(int(n_resamples))]
    low, high = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"tau": tau(np.arange(n)), "low": float(low), "high": float(high), "n_methods": len(methods),
            "n_patches": int(n)}
