import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF as SklearnNMF
from sklearn.decomposition import non_negative_factorization

from helpers import features, models
from helpers.methods import concepts


def _activation_like(n=4000, c=48, k=6, seed=0):
    """ReLU-sparse, low-rank-plus-noise matrix, like the activations of a conv layer after ReLU."""
    rng = np.random.default_rng(seed)
    w = rng.gamma(0.4, 1.0, (n, k))
    h = rng.gamma(0.4, 1.0, (k, c))
    return np.maximum(w @ h + rng.normal(0, 0.4, (n, c)), 0).astype(np.float32)


def test_fit_matches_sklearn_error():
    V = _activation_like()
    ours = concepts.NMF(6)
    W = ours.fit_transform(V)
    ref = SklearnNMF(6, max_iter=1000, tol=1e-6, random_state=0).fit(V)
    ref_error = concepts.relative_error(V, ref.transform(V), ref.components_)
    assert concepts.relative_error(V, W, ours.components_) == pytest.approx(ours.relative_error_, rel=1e-3)
    assert abs(ours.relative_error_ - ref_error) <= 0.01 * ref_error
    assert (W >= 0).all() and (ours.components_ >= 0).all()
    again = concepts.NMF(6).fit(V)
    assert np.array_equal(again.components_, ours.components_)            # deterministic


def test_randomized_svd_matches_exact_svd():
    V = torch.as_tensor(_activation_like(seed=3))
    left, sigma, right = concepts._randomized_svd(V, 6, seed=0)
    U, S, Vh = torch.linalg.svd(V.double(), full_matrices=False)
    assert torch.allclose(sigma.double(), S[:6], rtol=1e-3)
    # singular vectors agree up to sign
    assert torch.allclose((right.double() * Vh[:6]).sum(1).abs(), torch.ones(6, dtype=torch.float64), atol=1e-3)
    assert torch.allclose((left.double() * U[:, :6]).sum(0).abs(), torch.ones(6, dtype=torch.float64), atol=1e-3)
    assert torch.equal(concepts._randomized_svd(V, 6, seed=0)[1], sigma)      # same seed, same numbers


def test_transform_with_fixed_h_matches_sklearn():
    V = _activation_like(seed=1)
    H = concepts.NMF(6).fit(V).components_
    new = _activation_like(n=1500, seed=2)
    W = concepts.transform(new, H, batch_rows=400)                          # several batches
    W_ref, _, _ = non_negative_factorization(new.astype(np.float64), H=H.astype(np.float64), n_components=6, update_H=False,
                                             max_iter=2000, tol=1e-9)
    assert np.abs(W - W_ref).max() <= 1e-3 * np.abs(W_ref).max()


def test_bad_inputs_are_named():
    V = _activation_like(n=200, c=8)
    with pytest.raises(ValueError, match="after ReLU"):
        concepts.NMF(3).fit(V - 1)
    bad = V.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        concepts.NMF(3).fit(bad)
    with pytest.raises(ValueError, match="larger than the number of channels"):
        concepts.NMF(9).fit(V)
    H = concepts.NMF(3).fit(V).components_
    with pytest.raises(ValueError, match="K × 9"):
        concepts.transform(np.ones((5, 9), np.float32), H)
    with pytest.raises(RuntimeError, match="not fitted"):
        concepts.NMF(3).transform(V)


def test_streamed_fit_from_npy_and_zarr_matches_in_memory(tmp_path):
    import zarr

    V = _activation_like(n=6000, c=32, seed=3)
    path = tmp_path / "v.npy"
    np.save(path, V)
    chunks = list(concepts.RowChunks(path, chunk_rows=1000))
    assert len(chunks) == 6 and np.array_equal(np.concatenate(chunks), V)
    in_memory = concepts.NMF(6).fit(V).relative_error_
    streamed = concepts.fit_streamed(path, 6, chunk_rows=1000, progress=False)
    H = streamed["components"]
    assert concepts.relative_error(V, concepts.transform(V, H), H) <= 1.02 * in_memory
    store = zarr.open(str(tmp_path / "v.zarr"), mode="w", shape=V.shape, chunks=(1000, 32), dtype="f4")
    store[:] = V
    from_zarr = concepts.fit_streamed(str(tmp_path / "v.zarr"), 6, chunk_rows=1000, progress=False)
    np.testing.assert_allclose(from_zarr["components"], H, rtol=1e-4, atol=1e-5)
    np.save(tmp_path / "neg.npy", V - 5)
    with pytest.raises(ValueError, match="after ReLU"):
        concepts.fit_streamed(tmp_path / "neg.npy", 3, progress=False)


def test_stitching_averages_overlaps_and_drops_borders():
    # two tiles (4×4 cells, stride 16 px) overlapping by 2 cells; values = tile index + 1
    maps = np.stack([np.full((2, 4, 4), 1.0), np.full((2, 4, 4), 3.0)])
    coords = np.array([[0, 0], [0, 32]])
    mean, count = concepts.stitch_feature_maps(maps, coords, cell_px=16, grid_shape=(4, 6), border=0)
    assert count[0].tolist() == [1, 1, 2, 2, 1, 1]
    assert mean[0, :, 0].tolist() == [1, 1, 2, 2, 3, 3]
    mean, count = concepts.stitch_feature_maps(maps, coords, cell_px=16, grid_shape=(4, 6), border=1)
    assert count[0].tolist() == [0] * 6 and count[1].tolist() == [0, 1, 1, 1, 1, 0]
    assert mean[1, 1:5, 0].tolist() == [1, 1, 3, 3]
    with pytest.raises(ValueError, match="no tile"):
        concepts.stitch_feature_maps(np.zeros((0, 2, 4, 4)), np.zeros((0, 2)), 16, (4, 4))
    with pytest.raises(ValueError, match="multiples"):
        concepts.stitch_feature_maps(maps, coords + 3, 16, (4, 6), border=0)
    H = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    W, clusters = concepts.concept_maps(mean, count, H)
    assert clusters[0].tolist() == [-1] * 6 and np.isnan(W[0]).all() and (clusters[1, 1:5] == 0).all()


def test_feature_vectors_stream_and_hook_the_named_layer(tmp_path):
    torch.manual_seed(0)
    model = models.VGG16TileClassifier(width=0.125).eval()
    images = (np.random.default_rng(0).random((5, 64, 64, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        direct = model.features(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).numpy()
    acts = features.layer_activations(model, "features.relu5_3", images, batch_size=2)
    np.testing.assert_allclose(acts, direct, rtol=1e-5, atol=1e-6)
    full = features.feature_vectors(model, "features.relu5_3", images, batch_size=2)
    assert full["vectors"].shape == (5 * 16, 64) and full["grid"] == (4, 4)
    k = 7
    assert np.allclose(full["vectors"][k], direct[full["tile"][k], :, full["row"][k], full["col"][k]])
    some = features.feature_vectors(model, "features.relu5_3", images, per_tile=3, border=1, batch_size=2)
    assert len(some["vectors"]) == 15 and set(some["row"]) <= {1, 2}
    on_disk = features.feature_vectors(model, "features.relu5_3", images, batch_size=2, out_path=tmp_path / "v.npy")
    assert np.array_equal(np.load(on_disk["path"]), full["vectors"])
    with pytest.raises(KeyError, match="no layer"):
        features.layer_activations(model, "features.relu9", images)


# --------------------------------------------------------------------------------- paper 000's analyses
def test_aggregations_on_a_known_tile():
    Wt = np.zeros((1, 2, 2, 2))
    Wt[0, 0] = [[1.0, 0.0], [3.0, 0.0]]
    Wt[0, 1] = [[0.5, 2.0], [0.0, 0.0]]
    assert concepts.aggregate(Wt, "sum").tolist() == [[4.0, 2.5]]
    assert concepts.aggregate(Wt, "max").tolist() == [[3.0, 2.0]]
    assert concepts.aggregate(Wt, "mean_positive").tolist() == [[2.0, 1.25]]
    assert concepts.aggregate(Wt, "coverage").tolist() == [[0.75, 0.25]]   # ties go to the first concept
    with pytest.raises(ValueError, match="unknown aggregation"):
        concepts.aggregate(Wt, "median")


def test_weight_correlations_and_cosine_match_numpy():
    rng = np.random.default_rng(0)
    Wt = rng.random((5, 3, 4, 4))
    mean, std = concepts.weight_correlations(Wt)
    per_tile = np.stack([np.corrcoef(w.reshape(3, -1)) for w in Wt])
    np.testing.assert_allclose(mean, per_tile.mean(0), atol=1e-12)
    np.testing.assert_allclose(std, per_tile.std(0), atol=1e-12)
    H = rng.random((3, 7))
    cos = concepts.cosine_similarity(H)
    assert cos[0, 1] == pytest.approx(H[0] @ H[1] / np.linalg.norm(H[0]) / np.linalg.norm(H[1]))


def test_cam_agreement_iou_and_correlation():
    Wt = np.zeros((2, 2, 2, 2))
    Wt[:, 0] = [[1, 1], [0, 0]]          # concept 1 on the top row
    Wt[:, 1] = [[0, 0], [0, 2]]          # concept 2 in one corner
    cams = np.array([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]])
    res = concepts.cam_agreement(Wt, cams, predicted_positive=[True, False])
    # tile 1: concept 1 region = CAM region → IoU 1; tile 2: disjoint → 0
    assert res["iou_mean"][0] == pytest.approx(0.5) and res["iou_mean"][1] == pytest.approx(0.5)
    assert res["corr_cancer_mean"][0] == pytest.approx(np.corrcoef([1, 1, 0, 0], [1, 0.5, 0, 0])[0, 1])
    assert res["corr_benign_mean"][1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="concept grid"):
        concepts.cam_agreement(Wt, cams[:, :1], [True, False])


def test_logistic_surrogate_recovers_the_pro_cancer_concept():
    rng = np.random.default_rng(0)
    X = rng.random((400, 3))
    y = X[:, 1] - X[:, 2] + 0.05 * rng.normal(size=400) > 0
    res = concepts.logistic_surrogate(X, y, seed=0)
    assert res["coefficients"][1] > 0 > res["coefficients"][2] and res["auc"] > 0.95
    with pytest.raises(ValueError, match="at least 5 of each"):
        concepts.logistic_surrogate(X, np.r_[np.ones(3), np.zeros(397)], seed=0)


def test_region_iou():
    clusters = np.array([[0, 0, 1], [2, 2, 1]])
    iou = concepts.region_iou(clusters, {"a": clusters == 1, "b": np.ones_like(clusters, bool)}, n_concepts=4)
    assert iou["a"] == [0.0, 1.0, 0.0, 0.0] and iou["b"] == pytest.approx([2 / 6, 2 / 6, 2 / 6, 0.0])


def test_cam_maps_equal_pytorch_grad_cam_called_directly():
    from pytorch_grad_cam import GradCAM, HiResCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from helpers import explain

    torch.manual_seed(0)
    model = models.GradingCNN(7, input_size=64).eval()
    x = torch.rand(3, 3, 64, 64)
    for name, cls in (("gradcam", GradCAM), ("hirescam", HiResCAM)):
        ours = explain.cam_maps(model, x, "relu3", name, target=4, batch_size=2)
        with cls(model=model, target_layers=[model.relu3]) as cam:
            ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(4)] * 3)
        np.testing.assert_allclose(ours, ref, atol=1e-5)   # batches of 2 vs 3: float rounding only
    with pytest.raises(ValueError, match="out of range"):
        explain.cam_maps(model, x, "relu3", "gradcam", target=7)
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain.cam_maps(model, x, "relu3", "gradcam_plus")
    with pytest.raises(ValueError, match="channels-last"):
        explain.cam_maps(model, x.permute(0, 2, 3, 1), "relu3")


def test_region_concepts_equal_the_steps_done_by_hand():
    from skimage.color import rgb2hed

    from helpers import explain
    from helpers.data import tissue
    from helpers.simulate import histology

    rgb = histology.render_slide(5, size=256).scene.rgb
    model = models.VGG16TileClassifier(width=0.125, batch_norm=False).eval()
    region = concepts.region_concepts(rgb, model, "features.relu5_3", 3, tile=64, stride=32, seed=0, device="cpu")
    # the same pipeline written out
    tiles = tissue.tile_slide(tissue.tissue_mask_from_rgb(rgb), 64, 32, 0.5)
    images = np.stack([rgb[y: y + 64, x: x + 64] for y, x in tiles["coords"]])
    maps = features.layer_activations(model, "features.relu5_3", images, batch_size=16, device="cpu")
    cell = 64 // maps.shape[-1]
    mean, count = concepts.stitch_feature_maps(maps, tiles["coords"], cell, (256 // cell, 256 // cell), border=1)
    nmf = concepts.NMF(3, device="cpu", seed=0).fit(mean[count > 0])
    weights, clusters = concepts.concept_maps(mean, count, nmf.components_)
    np.testing.assert_array_equal(region.tiles["coords"], tiles["coords"])
    np.testing.assert_array_equal(region.count, count)
    np.testing.assert_allclose(region.weights, weights, equal_nan=True)
    np.testing.assert_array_equal(region.clusters, clusters)
    assert region.cell == cell and region.n_channels == maps.shape[1]
    # stain correlations: Pearson of each concept with the hematoxylin density per cell
    hema = explain.block_mean(rgb2hed(rgb[: mean.shape[0] * cell, : mean.shape[1] * cell])[..., 0][None], cell)[0]
    covered = count > 0
    want = [np.corrcoef(weights[..., j][covered], hema[covered])[0, 1] for j in range(3)]
    np.testing.assert_allclose(concepts.stain_correlations(rgb, region), want, rtol=1e-6)
    with pytest.raises(ValueError, match="H×W×3"):
        concepts.region_concepts(rgb[..., 0], model, "features.relu5_3", 3, tile=64, stride=32)


def test_seam_index_sees_a_tiling_lattice_and_not_smooth_structure():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:48, 0:48]
    smooth = np.sin(rows / 7.0) + np.cos(cols / 5.0) + rng.normal(0, 0.1, rows.shape)
    lattice = smooth + 2.0 * ((rows % 4 == 0) | (cols % 4 == 0))          # bright seams every 4 cells
    count = np.ones((48, 48), int)
    assert concepts.seam_index(smooth[..., None], count, 4) < 0.02
    assert concepts.seam_index(lattice[..., None], count, 4) > 0.2
    # uncovered cells do not count; a constant concept is skipped
    both = np.stack([lattice, np.ones_like(lattice)], -1)
    count[:, :8] = 0
    assert concepts.seam_index(both, count, 4) > 0.2
    with pytest.raises(ValueError, match="period=1"):
        concepts.seam_index(both, count, 1)
