import numpy as np
import pytest

from helpers import metric_validation
from helpers.simulate import planted


def _patches(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(120, 230, (n, size, size, 3)).astype(np.uint8)
    nuclei = np.zeros((n, size, size), int)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(4):
            cy, cx = rng.integers(4, size - 4, 2)
            nuclei[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 1
    return images, nuclei


@pytest.mark.parametrize("mechanism", planted.PLANTED_MECHANISMS)
def test_planted_evidence_is_the_only_change_and_only_in_class_one(mechanism):
    images, nuclei = _patches()
    data = planted.planted_dataset(images, nuclei, mechanism, seed=0)
    labels, evidence, out = data["labels"], data["evidence"], data["images"]
    assert labels.sum() == len(labels) // 2
    # class 0 untouched, with no evidence; class 1 changed exactly where its evidence is
    np.testing.assert_array_equal(out[labels == 0], images[labels == 0])
    assert not evidence[labels == 0].any()
    changed = (out != images).any(-1)
    ones = labels == 1
    assert not changed[ones][~evidence[ones]].any()
    assert changed[ones][evidence[ones]].mean() > 0.95      # a clipped channel (0 or 255) may stay as it was
    if mechanism == "marker":
        assert (evidence[ones].sum((1, 2)) == planted.MARKER_PX ** 2).all()
        assert (out[ones][evidence[ones]] == planted.MARKER_RGB).all()
    elif mechanism == "nuclei":
        np.testing.assert_array_equal(evidence[ones], nuclei[ones] > 0)
        assert out[ones][evidence[ones]].mean() < 0.75 * images[ones][evidence[ones]].mean()
    else:
        np.testing.assert_array_equal(evidence[ones], nuclei[ones] == 0)
    # the same seed, the same data; another seed, other labels
    again = planted.planted_dataset(images, nuclei, mechanism, seed=0)
    np.testing.assert_array_equal(again["images"], out)
    assert (planted.planted_dataset(images, nuclei, mechanism, seed=1)["labels"] != labels).any()


def test_planted_dataset_names_bad_input():
    images, nuclei = _patches(4)
    with pytest.raises(ValueError, match="mechanism='texture'"):
        planted.planted_dataset(images, nuclei, "texture")
    with pytest.raises(ValueError, match="uint8"):
        planted.planted_dataset(images.astype(float), nuclei, "marker")
    with pytest.raises(ValueError, match="marker_px=40"):
        planted.planted_dataset(images, nuclei, "marker", marker_px=40)


def test_kendall_agreement_reads_rankings_and_their_direction():
    rng = np.random.default_rng(0)
    truth = {m: rng.normal(level, 0.05, 30) for m, level in zip("abcde", (0.1, 0.3, 0.5, 0.7, 0.9))}
    same = metric_validation.kendall_agreement(truth, truth, n_resamples=200)
    assert same["tau"] == pytest.approx(1.0) and same["low"] == pytest.approx(1.0) and same["n_methods"] == 5 and same["n_patches"] == 30
    reversed_scores = {m: -v for m, v in truth.items()}
    assert metric_validation.kendall_agreement(reversed_scores, truth, n_resamples=50)["tau"] == pytest.approx(-1.0)
    # a metric where lower is better (deletion AUC) agrees when told so
    assert metric_validation.kendall_agreement(reversed_scores, truth, higher_is_better=False,
                                               n_resamples=50)["tau"] == pytest.approx(1.0)
    # noise around one value: the interval spans 0
    noise = {m: rng.normal(0.5, 0.3, 30) for m in truth}
    result = metric_validation.kendall_agreement(noise, truth, n_resamples=300)
    assert result["low"] < 0 < result["high"]
    # a method without any score (the empty map's relevance mass) drops out instead of spoiling the ranking
    with_empty = {**truth, "empty": np.full(30, np.nan)}
    assert metric_validation.kendall_agreement(with_empty, with_empty, n_resamples=20)["tau"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3"):
        metric_validation.kendall_agreement({"a": truth["a"]}, truth)


def test_a_planted_marker_model_learns_the_marker(tmp_path):
    images, nuclei = _patches(n=240, size=32)
    split = np.repeat([0, 1, 2], [160, 40, 40])
    model, info, data = metric_validation.ensure_planted_model(tmp_path, images, nuclei, split, "marker", epochs=6,
                                                              device="cpu")
    assert info["metrics"]["accuracy"] > 0.9
    # cached: a second call loads the same network
    again, info_again, _ = metric_validation.ensure_planted_model(tmp_path, images, nuclei, split, "marker", epochs=6,
                                                                  device="cpu")
    assert info_again["metrics"] == info["metrics"]


def test_a_change_of_the_planting_code_retrains_the_planted_model(tmp_path, monkeypatch):
    """The planted data are made by helpers.simulate.planted: its source is part of the model's cache key, so a
    changed mechanism (say, another marker size) never reuses a network trained on the old one."""
    from helpers import cache

    images, nuclei = _patches(n=60, size=32)
    split = np.repeat([0, 1, 2], [40, 10, 10])
    models_dir = cache.models_root(tmp_path)
    metric_validation.ensure_planted_model(tmp_path, images, nuclei, split, "marker", epochs=1, device="cpu")
    assert len(list(models_dir.glob("planted_marker-*"))) == 1
    fingerprint = cache.source_fingerprint
    monkeypatch.setattr(cache, "source_fingerprint",
                        lambda *modules: fingerprint(*modules) + ("-edited" if planted in modules else ""))
    metric_validation.ensure_planted_model(tmp_path, images, nuclei, split, "marker", epochs=1, device="cpu")
    assert len(list(models_dir.glob("planted_marker-*"))) == 2
