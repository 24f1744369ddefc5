"""Seeded k-means and seeded iterative clustering (paper 002), against scikit-learn and on data whose answer
is known."""
import numpy as np
import pytest

from helpers.methods.seeded import sic


def blobs(seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=600, centers=[[0, 0], [4, 0], [0, 4]], cluster_std=1.2, random_state=seed)
    return x, y


def test_seeded_kmeans_equals_sklearn_kmeans_started_at_the_seed_means():
    from sklearn.cluster import KMeans

    x, y = blobs()
    rng = np.random.default_rng(0)
    seeds = np.full(len(x), -1)
    for c in range(3):
        seeds[rng.choice(np.flatnonzero(y == c), 3, replace=False)] = c
    ours = sic.SeededKMeans(3).fit(x, seeds)
    means = np.stack([x[seeds == c].mean(0) for c in range(3)])
    ref = KMeans(3, init=means, n_init=1).fit(x)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-10, atol=1e-10)
    assert ours.inertia_ == pytest.approx(ref.inertia_)
    assert (ours.labels_ == y).mean() > 0.9          # cluster c follows seed class c, no relabelling needed


def test_sic_separates_a_lesion_from_unclicked_benign_tissue_with_one_fallback_step():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    benign_a = rng.normal(0, 0.7, (600, 8))                          # clicked as negative
    benign_c = rng.normal(0, 0.7, (300, 8)) + np.r_[8, 0, np.zeros(6)]  # never clicked
    lesion = rng.normal(0, 0.7, (100, 8)) + np.r_[8, 4, np.zeros(6)]    # clicked as positive
    x = np.vstack([benign_a, benign_c, lesion])
    truth = np.r_[np.zeros(900, int), np.ones(100, int)]
    seeds = np.full(len(x), -1)
    seeds[[5, 17]] = 0
    seeds[[950, 990]] = 1
    first_only = sic.SeededKMeans(2).fit(x, seeds).labels_ == 1
    assert f1_score(truth, first_only) < 0.6                 # the seeded split keeps the unclicked tissue
    result = sic.seeded_iterative_clustering(x, seeds)
    assert f1_score(truth, result.positive) > 0.95           # the conventional 2-means step removes it
    assert [h["rule"] for h in result.history].count("2-means (only positive seeds inside)") == 1
    kept = [h["score"] for h in result.history if h["kept"]]
    assert all(b >= a for a, b in zip(kept, kept[1:]))


def test_sic_stops_when_a_split_loses_the_positive_seeds():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.1]])
    seeds = np.array([0, -1, 1, -1, 1, -1])
    result = sic.seeded_iterative_clustering(x, seeds)
    assert result.positive.tolist() == [False, False, True, True, True, True]
    assert result.score == 1.0
    # the fall-back split would drop one of the two positive seeds: F1 falls, the split is refused
    assert [h["kept"] for h in result.history] == [True, False]
    assert result.history[-1]["score"] < 1.0


def test_bad_seeds_are_named():
    x = np.zeros((4, 2))
    with pytest.raises(sic.SeedError, match="one entry per patch"):
        sic.seeded_iterative_clustering(x, [0, 1])
    with pytest.raises(sic.SeedError, match="not -1, 0 or 1"):
        sic.seeded_iterative_clustering(x, [0, 1, 2, -1])
    with pytest.raises(sic.SeedError, match="at least one positive"):
        sic.seeded_iterative_clustering(x, [0, 0, -1, -1])
    with pytest.raises(sic.SeedError, match="NaN"):
        sic.seeded_iterative_clustering(np.full((4, 2), np.nan), [0, 1, -1, -1])
    with pytest.raises(sic.SeedError, match="same mean embedding"):
        sic.SeededKMeans(2).fit(np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]]), [0, 1, -1])
    with pytest.raises(sic.SeedError, match="no seed of class"):
        sic.SeededKMeans(2).fit(np.random.default_rng(0).normal(size=(5, 2)), [0, 0, -1, -1, -1])
