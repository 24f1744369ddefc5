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
