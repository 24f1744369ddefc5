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


def test_cam_agreement_counts_the_tiles_a_constant_cam_leaves_out():
    Wt = np.zeros((3, 2, 2, 2))
    Wt[:, 0] = [[1, 0], [0, 0]]
    Wt[:2, 1] = [[0, 2], [1, 0]]                 # concept 2 is absent (constant 0) on tile 3
    cams = np.array([[[1.0, 0.0], [0.0, 0.0]], np.zeros((2, 2)), [[0.0, 1.0], [0.0, 0.0]]])
    res = concepts.cam_agreement(Wt, cams, predicted_positive=[True, False, False])
    # tile 2's CAM is 0 everywhere: no correlation for either concept; tile 3: concept 2 constant
    assert res["constant_cam_benign"] == 1 and res["constant_cam_cancer"] == 0
    assert res["corr_benign_undefined"] == [1, 2] and res["corr_cancer_undefined"] == [0, 0]
    assert res["corr"].shape == (3, 2) and np.isnan(res["corr"][1]).all()
    assert res["corr_benign_mean"][0] == pytest.approx(np.corrcoef([1, 0, 0, 0], [0, 1, 0, 0])[0, 1])


def test_logistic_surrogate_recovers_the_pro_cancer_concept():
    rng = np.random.default_rng(0)
    X = rng.random((400, 3))
    y = X[:, 1] - X[:, 2] + 0.05 * rng.normal(size=400) > 0
    res = concepts.logistic_surrogate(X, y, seed=0)
    assert res["coefficients"][1] > 0 > res["coefficients"][2] and res["auc"] > 0.95
    with pytest.raises(ValueError, match="at least 5 of each"):
        concepts.logistic_surrogate(X, np.r_[np.ones(3), np.zeros(397)], seed=0)


def test_surrogate_split_by_slide_sees_through_what_a_tile_split_memorises():
    # the decision is one per slide and the scores carry a slide fingerprint unrelated to it: a tile split learns
    # the fingerprints (tiles of every slide on both sides), a split by slide cannot
    rng = np.random.default_rng(1)
    slide = np.repeat(np.arange(12), 40)
    fingerprint = rng.normal(0, 1, (12, 8))
    X = fingerprint[slide] + 0.05 * rng.normal(size=(len(slide), 8))
    y = (np.arange(12) % 2)[slide]
    by_tile = concepts.logistic_surrogate(X, y, seed=0)
    by_slide = concepts.logistic_surrogate(X, y, seed=0, groups=slide, n_folds=4)
    assert by_tile["auc"] > 0.95 and by_slide["auc"] < 0.8
    assert by_slide["n_test"] == len(y) and by_slide["n_folds"] == 4 and by_slide["split"].startswith("slides")
    assert np.array_equal(by_slide["test_label"], y)
    # each held-out probability comes from a fit without that slide: refit one fold by hand
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train, test = next(GroupKFold(n_splits=4).split(X, y, slide))
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[train], y[train])
    assert by_slide["test_probability"][test] == pytest.approx(by_hand.predict_proba(X[test])[:, 1])
    with pytest.raises(ValueError, match="at least two slides"):
        concepts.logistic_surrogate(X, y, groups=np.zeros(len(y)))


def test_random_components_are_seeded_non_negative_unit_vectors():
    H = concepts.random_components(5, 16, seed=3)
    assert H.shape == (5, 16) and (H >= 0).all() and np.linalg.norm(H, axis=1) == pytest.approx(np.ones(5))
    assert np.array_equal(H, concepts.random_components(5, 16, seed=3))
    assert not np.array_equal(H, concepts.random_components(5, 16, seed=4))


def test_shuffled_region_iou_keeps_each_slides_cell_count_and_stays_on_covered_cells():
    clusters = np.full((2, 4, 4), -1)
    clusters[0, :2] = [[0, 0, 1, 1], [1, 1, 1, 1]]         # slide 1: concept 0 on 2 of 8 covered cells
    clusters[1, 2:] = [[0, 1, 1, 1], [1, 1, 1, 1]]         # slide 2: 1 of 8
    region = clusters == 0                                  # the concept sits exactly on the region: IoU 1
    assert concepts.region_iou(clusters, {"r": region}, 2)["r"][0] == 1.0
    shuffled = concepts.shuffled_region_iou(clusters, region, concept=0, n_shuffles=2000, seed=0)
    # shuffled, concept 0 keeps 2 + 1 cells; the cells it shares with the region follow hypergeometric laws
    # (a of 2 on slide 1, b of 1 on slide 2), and the union is 3 + 3 − (a + b)
    from scipy import stats
    expected = sum(stats.hypergeom(8, 2, 2).pmf(a) * stats.hypergeom(8, 1, 1).pmf(b) * (a + b) / (6 - a - b)
                   for a in range(3) for b in range(2))
    assert shuffled.mean() == pytest.approx(expected, abs=0.01)
    assert set(np.round(shuffled * 5) / 5).issubset({0.0, 0.2, 0.4, 0.6, 1.0})   # (a + b) / (6 − a − b) only
    with pytest.raises(ValueError, match="one grid"):
        concepts.shuffled_region_iou(clusters, region[0], concept=0)


def test_match_concepts_recovers_a_permutation_and_leaves_the_extra_ones_unmatched():
    H = concepts.random_components(5, 32, seed=0)
    order = [3, 0, 4, 1, 2]
    res = concepts.match_concepts(H, H[order])
    assert [order[j] for j in res["match"]] == list(range(5)) and res["cosine"] == pytest.approx(np.ones(5))
    fewer = concepts.match_concepts(H, H[[4, 1]])
    assert fewer["match"].count(-1) == 3 and fewer["match"][4] == 0 and fewer["match"][1] == 1
    assert np.isnan(fewer["cosine"]).sum() == 3
    with pytest.raises(ValueError, match="channels"):
        concepts.match_concepts(H, H[:, :8])


def test_remove_concepts_equals_the_removal_done_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(3, 6, 3, padding=1))
    model.add_module("relu", torch.nn.ReLU())
    model.add_module("pool", torch.nn.AdaptiveMaxPool2d(1))
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("head", torch.nn.Linear(6, 1))
    x = torch.rand(5, 3, 8, 8)
    H = concepts.random_components(3, 6, seed=2)
    res = concepts.remove_concepts(model, "relu", H, x, control_seed=1, batch_size=2)
    with torch.no_grad():
        acts = model.relu(model.conv(x))
        W = concepts.transform(acts.permute(0, 2, 3, 1).reshape(-1, 6).numpy(), H)
        W = torch.as_tensor(W).reshape(5, 8, 8, 3).permute(0, 3, 1, 2)
        head = lambda a: torch.sigmoid(model.head(model.flat(model.pool(a)))[:, 0]).numpy()
        assert res["original"] == pytest.approx(head(acts), abs=1e-6)
        for j in range(3):
            for key, direction in (("removed", H[j]), ("control", res["control_directions"][j])):
                part = W[:, j: j + 1] * torch.as_tensor(direction)[None, :, None, None]
                assert res[key][:, j] == pytest.approx(head(torch.clamp_min(acts - part, 0)), abs=1e-5)
    # the control removes as much as the concept: same weights, a direction of the same norm
    assert np.linalg.norm(res["control_directions"], axis=1) == pytest.approx(np.linalg.norm(H, axis=1))
    assert (res["control_directions"] >= 0).all()


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
