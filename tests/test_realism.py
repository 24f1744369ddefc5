import numpy as np
import pytest

from helpers import realism


def test_frechet_distance_equals_pytorch_fid_and_the_closed_form():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(1.0, 2.0, size=(300, 6)) @ rng.normal(size=(6, 6))
    reference = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert realism.frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)
    # independent diagonal Gaussians: Σ (μa − μb)² + (σa − σb)² per dimension
    x = np.stack([np.linspace(-1, 1, 101), np.linspace(0, 4, 101)], 1)
    y = x * [3.0, 0.5] + [2.0, -1.0]
    sd_x, sd_y = x.std(0, ddof=1), y.std(0, ddof=1)
    expected = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.sum((sd_x - sd_y) ** 2)
    assert realism.frechet_distance(x, y) == pytest.approx(expected, rel=1e-6)
    assert realism.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_probe_tells_shifted_features_apart_and_not_identical_ones():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(8), 40)
    is_real = groups % 2 == 0
    fold = groups // 4                     # two real and two simulated groups in each fold
    same = rng.normal(size=(320, 5))
    assert abs(realism.probe(same, is_real, fold)["balanced_accuracy"] - 0.5) < 0.1
    shifted = same + is_real[:, None] * 3.0
    result = realism.probe(shifted, is_real, fold)
    assert result["balanced_accuracy"] > 0.95 and len(result["folds"]) == 2
    assert all(f["real"] > 0 and f["simulated"] > 0 for f in result["folds"])
    with pytest.raises(ValueError, match="only real or only simulated"):
        realism.probe(shifted, is_real, is_real.astype(int))
    with pytest.raises(ValueError, match="one of each per row"):
        realism.probe(shifted, is_real[:10], fold)
    with pytest.raises(ValueError, match="at least two folds"):
        realism.probe(shifted, is_real, np.zeros(320))


def test_shared_projection_keeps_one_space_and_refuses_bad_sizes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(50, 20)), rng.normal(size=(30, 20))
    pa, pb = realism.shared_projection(a, b, dims=4)
    assert pa.shape == (50, 4) and pb.shape == (30, 4)
    both = realism.shared_projection(np.vstack([a, b]), dims=4)[0]
    np.testing.assert_allclose(np.vstack([pa, pb]), both, atol=1e-9)
    with pytest.raises(ValueError, match="dims=99"):
        realism.shared_projection(a, b, dims=99)
    with pytest.raises(ValueError, match="at least two"):
        realism.frechet_distance(a[:1], b[:1])


def test_comparison_with_real_sources_is_the_probe_and_distances_of_notebook_01():
    """compare_with_real is the composition notebook 01 reports: the probe with one real source per fold and the
    distances, floors included, in one projection."""
    rng = np.random.default_rng(3)
    real = {"slide": rng.normal(0.0, 1.0, (40, 12)), "skin": rng.normal(0.5, 1.0, (30, 12))}
    simulated, slide = rng.normal(2.0, 1.5, (60, 12)), np.repeat(np.arange(6), 10)
    result = realism.compare_with_real(real, simulated, slide, dims=5, seed=4)
    expected_probe = realism.probe(np.vstack([real["slide"], real["skin"], simulated]),
                                   np.r_[np.ones(70, bool), np.zeros(60, bool)],
                                   np.r_[np.zeros(40, int), np.ones(30, int), slide % 2], seed=4)
    assert result["probe"] == expected_probe and expected_probe["balanced_accuracy"] > 0.9
    pa, pb, ps = realism.shared_projection(real["slide"], real["skin"], simulated, dims=5, seed=4)
    even = slide % 2 == 0
    assert result["fd"] == {"simulated ↔ slide": realism.frechet_distance(ps, pa),
                            "simulated ↔ skin": realism.frechet_distance(ps, pb),
                            "floor: slide ↔ skin (real ↔ real)": realism.frechet_distance(pa, pb),
                            "floor: simulated, even ↔ odd slides": realism.frechet_distance(ps[even], ps[~even])}
    assert list(result["projected"]) == ["slide", "skin", "simulated"]
    # the simulated tiles lie farther from each real source than the sources from each other
    assert min(result["fd"]["simulated ↔ slide"], result["fd"]["simulated ↔ skin"]) > \
        result["fd"]["floor: slide ↔ skin (real ↔ real)"]
    # three sources: one fold each, the slides dealt round them, a floor for every pair
    real3 = {**real, "tumour": rng.normal(-0.5, 1.0, (20, 12))}
    three = realism.compare_with_real(real3, simulated, slide, dims=5, seed=4)
    assert three["probe"] == realism.probe(np.vstack([real["slide"], real["skin"], real3["tumour"], simulated]),
                                           np.r_[np.ones(90, bool), np.zeros(60, bool)],
                                           np.r_[np.zeros(40, int), np.ones(30, int), np.full(20, 2), slide % 3],
                                           seed=4)
    assert len(three["probe"]["folds"]) == 3 and list(three["projected"]) == ["slide", "skin", "tumour", "simulated"]
    assert sorted(k for k in three["fd"] if k.startswith("floor: ") and "real ↔ real" in k) == [
        "floor: skin ↔ tumour (real ↔ real)", "floor: slide ↔ skin (real ↔ real)",
        "floor: slide ↔ tumour (real ↔ real)"]
    with pytest.raises(ValueError, match="one per fold"):
        realism.compare_with_real(real3, simulated[:20], slide[:20])      # slides 0 and 1: fold 2 empty
    with pytest.raises(ValueError, match="give two or more"):
        realism.compare_with_real({"slide": real["slide"]}, simulated, slide)
    with pytest.raises(ValueError, match="the slide of each row"):
        realism.compare_with_real(real, simulated, slide[:10])
    with pytest.raises(ValueError, match="at least two of each"):
        realism.compare_with_real(real, simulated, np.zeros(60, int))


def test_real_tiles_are_tissue_tiles_resampled_to_the_simulated_pixel_size():
    from skimage.transform import resize

    from helpers.data import tissue

    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (400, 500, 3), dtype=np.uint8)
    mask = np.zeros((400, 500), bool)
    mask[50:350, 100:450] = True
    tiles = realism.real_tiles(image, mask, 64, 7, seed=2, out_px=32, min_tissue=0.9)
    assert tiles.shape == (7, 32, 32, 3) and tiles.dtype == np.uint8
    crops = tissue.random_tiles(image, mask, 64, 7, 2, 0.9)
    np.testing.assert_array_equal(tiles, np.stack([resize(c, (32, 32), anti_aliasing=True, preserve_range=True)
                                                   .astype(np.uint8) for c in crops]))
