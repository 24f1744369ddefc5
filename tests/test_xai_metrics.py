"""Scores of attribution maps: paper 001's six metrics against scikit-learn / scipy, the localisation metrics
against Quantus' own implementations, faithfulness curves and the randomisation check on known cases."""
import numpy as np
import pytest
import torch

from helpers import models, xai_metrics


def _maps_and_masks(n=6, size=24, seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.gamma(0.7, 1.0, (n, size, size))
    maps[0] = 0.0                                           # a constant map: nothing attributed
    masks = rng.random((n, size, size)) * (np.arange(size)[None, :, None] > size // 3)
    masks[1] = 0.0                                          # an empty mask
    return maps, masks


def test_paper_metrics_equal_sklearn_and_scipy():
    from scipy.stats import spearmanr
    from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

    maps, masks = _maps_and_masks()
    ours = xai_metrics.paper_metrics(maps, masks)
    norm = xai_metrics.normalise_map(maps)
    for i in range(len(maps)):
        pred = (norm[i] > 0.3).ravel()
        truth = (masks[i] > 0.5).ravel()
        assert ours["iou"][i] == pytest.approx(jaccard_score(truth, pred, zero_division=0))
        assert ours["precision"][i] == pytest.approx(precision_score(truth, pred, zero_division=0))
        assert ours["recall"][i] == pytest.approx(recall_score(truth, pred, zero_division=0))
        assert ours["f1"][i] == pytest.approx(f1_score(truth, pred, zero_division=0))
        assert ours["pixel_accuracy"][i] == pytest.approx(np.mean(pred == truth))
        if pred.std() > 0 and truth.std() > 0:
            assert ours["spearman"][i] == pytest.approx(spearmanr(pred, truth)[0])
        else:
            assert np.isnan(ours["spearman"][i])
    # normalisation: |map| min-max per map; a constant map is all zero
    assert norm[0].max() == 0 and norm[2].min() == 0 and norm[2].max() == pytest.approx(1.0)


def test_paper_code_iou_hides_the_difference_between_maps():
    masks = np.zeros((2, 10, 10)); masks[:, :5] = 1
    perfect = masks.copy()
    wrong = 1 - masks
    ours = xai_metrics.paper_metrics(np.stack([perfect[0], wrong[0]]), masks)["iou"]
    code = xai_metrics.paper_code_iou(np.stack([perfect[0], wrong[0]]), masks)
    assert ours.tolist() == [1.0, 0.0]
    assert code[0] - code[1] < 0.25 < ours[0] - ours[1]      # the sigmoid compresses 1 vs 0 into 0.73 vs 0.5



def test_paper_code_binarise_scales_the_mask_and_keeps_values_at_the_threshold():
    masks = np.zeros((3, 4, 4)); masks[0, :2] = 0.4; masks[0, 0] = 0.1     # a faint U-Net output: max 0.4
    masks[1, :, :2] = 1.0                                                     # a crisp one
    maps = np.zeros((3, 4, 4)); maps[:, 0, 0] = 1.0; maps[:, 1, 1] = 0.3     # 0.3 after scaling: on the threshold
    pred, truth = xai_metrics.paper_code_binarise(maps, masks)
    assert truth[0].sum() == 4 and truth[0, 1].all()        # the brightest half of the faint mask (0.4 ≥ 0.5 × 0.4)
    assert not xai_metrics.binarise(maps, masks)[1][0].any()  # the text's cut at 0.5 finds no mask there
    assert truth[1].sum() == 8 and not truth[2].any()        # crisp mask unchanged; a constant mask gives none
    assert pred[:, 1, 1].all() and not xai_metrics.binarise(maps, masks)[0][:, 1, 1].any()   # ≥ 0.3 vs > 0.3
    # the code's IoU and F1 are computed on these binarisations
    iou = xai_metrics.paper_code_iou(maps, masks)
    soft = 1 / (1 + np.exp(-pred[0].astype(float)))
    assert iou[0] == pytest.approx(((soft * truth[0]).sum() + 1) / ((soft + truth[0]).sum() - (soft * truth[0]).sum() + 1))


def test_pointing_game_ties_are_counted_or_shared_not_won():
    masks = np.zeros((3, 4, 4), bool); masks[:, 0] = True                   # the mask: the top row, 1/4 of the patch
    maps = np.zeros((3, 4, 4)); maps[1, 0, 2] = 1.0                          # 0: constant; 1: one maximum inside
    maps[2, 0, 0] = maps[2, 3, 3] = 1.0                                      # 2: two tied maxima, one inside
    assert xai_metrics.pointing_game(maps, masks).tolist() == [1.0, 1.0, 1.0]               # Quantus: any tied pixel
    assert xai_metrics.pointing_game(maps, masks, ties="share").tolist() == [0.25, 1.0, 0.5]
    assert xai_metrics.pointing_game(maps, masks, ties="miss").tolist() == [0.0, 1.0, 0.0]
    assert xai_metrics.pointing_ties(maps).tolist() == [16, 1, 2]
    with pytest.raises(ValueError, match="ties='first'"):
        xai_metrics.pointing_game(maps, masks, ties="first")


def test_paper_code_prf_equals_sklearn_macro_on_the_transposed_images():
    """The thesis's code: precision_score(mask, binary_map, average='macro') on 2-D arrays after
    rot90(flip(., 1), 1) — scikit-learn's multilabel reading, column by column, undefined columns scored 0."""
    import warnings

    from sklearn.metrics import f1_score, precision_score, recall_score

    maps, masks = _maps_and_masks()
    ours = xai_metrics.paper_code_prf(maps, masks)
    norm = xai_metrics.normalise_map(maps)
    mask_span = masks.max(axis=(1, 2), keepdims=True) - masks.min(axis=(1, 2), keepdims=True)
    scaled_masks = np.where(mask_span > 0, (masks - masks.min(axis=(1, 2), keepdims=True)) / np.maximum(mask_span, 1e-12), 0)
    for i in range(len(maps)):
        # the code's return_tensor: min-max scaled map and mask, kept where ≥ the threshold
        pred = np.rot90(np.flip(((norm[i] >= 0.3) & (np.ptp(maps[i]) > 0)).astype(int), 1), 1)
        truth = np.rot90(np.flip(((scaled_masks[i] >= 0.5) & (mask_span[i, 0, 0] > 0)).astype(int), 1), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert ours["precision"][i] == pytest.approx(precision_score(truth, pred, average="macro"))
            assert ours["recall"][i] == pytest.approx(recall_score(truth, pred, average="macro"))
            assert ours["f1"][i] == pytest.approx(f1_score(truth, pred, average="macro"))
    per_pixel = xai_metrics.paper_metrics(maps, masks)
    assert not np.allclose(ours["f1"][2:], per_pixel["f1"][2:])       # a different quantity, not a rescaling


def test_overlap_scores_of_a_full_map_and_refusal_of_floats():
    masks = np.zeros((1, 10, 10), bool); masks[0, :4] = True
    full = xai_metrics.overlap_scores(np.ones_like(masks), masks)
    assert full["recall"][0] == 1 and full["precision"][0] == pytest.approx(0.4)
    assert full["iou"][0] == pytest.approx(0.4) and full["pixel_accuracy"][0] == pytest.approx(0.4)
    with pytest.raises(TypeError, match="boolean"):
        xai_metrics.overlap_scores(np.ones((1, 10, 10)), masks)


def test_ties_are_ordered_at_random_not_in_raster_order():
    """A constant map scores chance under random tie-breaking; raster order would make it look perfect when the
    mask happens to be the first rows."""
    masks = np.zeros((200, 20, 20), bool); masks[:, :5] = True                     # the first quarter of rows
    flat = np.zeros((200, 20, 20))
    raster = xai_metrics.relevance_rank(flat, masks, tie_break="raster")
    randomised = xai_metrics.relevance_rank(flat, masks)
    assert raster.mean() == 1.0
    assert abs(randomised.mean() - 0.25) < 0.02
    np.testing.assert_array_equal(randomised, xai_metrics.relevance_rank(flat, masks, seed=0))    # seeded
    top = xai_metrics.top_k_masks(flat, 100)
    assert top.sum(axis=(1, 2)).tolist() == [100] * 200
    # values decide before the tie rule does
    ordered = np.broadcast_to(np.arange(400.0).reshape(20, 20), (2, 20, 20))
    assert xai_metrics.ranking(ordered)[0, 0] == 399
    iou = xai_metrics.top_k_iou(masks[:2].astype(float), masks[:2])
    assert iou.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="tie_break"):
        xai_metrics.ranking(flat, tie_break="first")


def test_baseline_maps():
    shape = (3, 16, 16)
    assert xai_metrics.baseline_maps("empty map", shape).max() == 0
    full = xai_metrics.baseline_maps("full map", shape)
    assert full.dtype == bool and full.all()
    masks = np.zeros(shape, bool); masks[:, :4] = True
    scores = xai_metrics.benchmark_scores(full, masks)
    assert scores["F1 (per pixel)"] == pytest.approx([0.4] * 3)           # all pixels on: recall 1, precision 1/4
    assert scores["ROC-AUC"] == pytest.approx([0.5] * 3) and scores["relevance mass"] == pytest.approx([0.25] * 3)
    assert set(scores) >= {"F1 (thesis's code)", "top-k F1", "top-k IoU", "pointing game"}
    blob = xai_metrics.baseline_maps("centre blob", shape)
    assert blob[0, 8, 8] > blob[0, 0, 0] and np.allclose(blob[0], blob[2])
    noise = xai_metrics.baseline_maps("random map", shape, seed=1)
    assert np.array_equal(noise, xai_metrics.baseline_maps("random map", shape, seed=1)) and noise.std() > 0.2
    with pytest.raises(ValueError, match="unknown baseline"):
        xai_metrics.baseline_maps("gray", shape)

@pytest.mark.parametrize("ours, theirs", [("pointing_game", "PointingGame"), ("relevance_rank", "RelevanceRankAccuracy"),
                                          ("mask_auc", "AUC"), ("relevance_mass", "RelevanceMassAccuracy")])
def test_localisation_metrics_equal_quantus(ours, theirs):
    quantus = pytest.importorskip("quantus")
    maps, masks = _maps_and_masks(seed=2)
    maps[0] = np.random.default_rng(5).random(maps[0].shape)   # Quantus divides by zero on a zero map
    binary = masks > 0.5
    metric = getattr(quantus, theirs)(disable_warnings=True)
    ref = np.asarray(metric.evaluate_batch(a_batch=maps[:, None], s_batch=binary[:, None]), float)
    got = getattr(xai_metrics, ours)(maps, binary)
    filled = binary.any(axis=(1, 2))
    np.testing.assert_allclose(got[filled], ref[filled], rtol=1e-9)
    # an empty mask leaves the score undefined: NaN (Quantus means the same, but its PointingGame writes NaN
    # into a boolean array, where it becomes True)
    assert np.isnan(got[1])


def test_metrics_refuse_bad_inputs():
    maps, masks = _maps_and_masks()
    with pytest.raises(ValueError, match="differ in shape"):
        xai_metrics.paper_metrics(maps, masks[:, :10])
    bad = maps.copy(); bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        xai_metrics.paper_metrics(bad, masks)
    with pytest.raises(ValueError, match="NaN"):
        xai_metrics.pointing_game(bad, masks > 0.5)


class _RedDetector(torch.nn.Module):
    """Two classes; the class-1 logit grows with the red channel in the top-left quadrant only."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        red = x[:, 0, :8, :8].mean((1, 2)) * 10 + self.bias
        return torch.stack([-red, red], 1)


def test_deletion_and_insertion_reward_the_right_map():
    x = torch.zeros(2, 3, 16, 16); x[:, 0, :8, :8] = 1.0
    right = np.zeros((2, 16, 16)); right[:, :8, :8] = 1.0
    right += np.random.default_rng(0).random((2, 16, 16)) * 1e-3     # ties broken at random
    wrong = 1.0 - right
    for baseline in ("blur", "zero"):
        good = xai_metrics.deletion_insertion(_RedDetector(), x, right, target=1, steps=16, device="cpu",
                                              deletion_baseline=baseline)
        bad = xai_metrics.deletion_insertion(_RedDetector(), x, wrong, target=1, steps=16, device="cpu",
                                             deletion_baseline=baseline)
        assert (good["deletion_auc"] < bad["deletion_auc"]).all()
        assert (good["insertion_auc"] > bad["insertion_auc"]).all()
    assert good["deletion_curve"][0, 0] == pytest.approx(1 / (1 + np.exp(-20)))   # f = 0: the original image
    with pytest.raises(ValueError, match="do not match"):
        xai_metrics.deletion_insertion(_RedDetector(), x, right[:, :8], target=1)


def test_randomised_copy_and_rank_similarity():
    torch.manual_seed(0)
    model = models.GradingCNN(7, input_size=64)
    clone = xai_metrics.randomised_copy(model, seed=1)
    assert not torch.equal(clone.conv1.weight, model.conv1.weight)
    again = xai_metrics.randomised_copy(model, seed=1)
    assert torch.equal(clone.conv1.weight, again.conv1.weight)                   # seeded
    a = np.random.default_rng(0).random((3, 8, 8))
    assert xai_metrics.rank_similarity(a, a) == pytest.approx([1, 1, 1])
    assert xai_metrics.rank_similarity(a, 5 * a + 1) == pytest.approx([1, 1, 1])
    assert xai_metrics.rank_similarity(a, np.zeros_like(a)).tolist() == [0, 0, 0]   # constant map: no shared ranking
    with pytest.raises(ValueError, match="no layer with reset_parameters"):
        xai_metrics.randomised_copy(torch.nn.ReLU())


def test_ssim_similarity_is_scikit_images_ssim_per_pair():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    a = rng.random((3, 12, 12))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    ours = xai_metrics.ssim_similarity(a, b)
    np.testing.assert_allclose(ours, [structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b)])
    np.testing.assert_allclose(xai_metrics.ssim_similarity(a, a), 1.0)
    assert (ours < 1).all() and xai_metrics.ssim_similarity(a, 1 - a).mean() < ours.mean()
    with pytest.raises(ValueError, match="7 × 7"):
        xai_metrics.ssim_similarity(a[:, :5, :5], b[:, :5, :5])
    with pytest.raises(ValueError, match="data_range"):
        xai_metrics.ssim_similarity(a, b, data_range=0)


def test_deletion_curve_equals_quantus_pixel_flipping():
    """Our deletion curve with black pixels (RISE's deletion) against Quantus' PixelFlipping on the same model, images
    and maps: every step removes the same pixels (continuous maps, no ties), so the curves agree point by point."""
    quantus = pytest.importorskip("quantus")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    rng = np.random.default_rng(0)
    x = rng.random((3, 3, 6, 8)).astype(np.float32)
    x[:, :, 0, 0] = 0.0                   # Quantus' "black" is the image's minimum: make it 0, our "zero" baseline
    maps = rng.random((3, 6, 8))
    targets = np.array([0, 1, 2])
    steps = 12                            # 4 pixels a step; Quantus counts features over the 3 channels: 12 a step
    ours = xai_metrics.deletion_insertion(model, x, maps, targets, steps=steps, device="cpu", deletion_baseline="zero",
                                          tie_break="raster", blur_sigma=1.0)   # the blur (insertion only) fits 6 px
    metric = quantus.PixelFlipping(features_in_step=3 * 48 // steps, perturb_baseline="black", disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x, y_batch=targets, a_batch=maps[:, None].astype(np.float32),
                               device="cpu", softmax=True), float)
    assert theirs.shape == (3, steps)
    np.testing.assert_allclose(ours["deletion_curve"][:, 1:], theirs, rtol=1e-5, atol=1e-6)


def test_placement_test_finds_a_map_on_its_region_and_none_in_a_flat_one():
    within = np.zeros((20, 20, 20), bool)
    within[2:18, 2:18, 2:18] = True
    region = np.zeros_like(within)
    region[8:11, 8:11, 8:11] = True
    rng = np.random.default_rng(0)
    on_region = rng.random(within.shape) * 0.1 + region
    result = xai_metrics.placement_test(on_region, region, within, n_placements=500)
    assert result["p"] == pytest.approx(1 / 501) and result["observed"] > 1.0 > result["null_high"]
    # a flat map ties everywhere: no placement is below the region, p = 1
    assert xai_metrics.placement_test(np.ones(within.shape), region, within, n_placements=200)["p"] == 1.0
    # a map that avoids the region: p near 1
    assert xai_metrics.placement_test(1.0 - on_region, region, within, n_placements=200)["p"] > 0.9
    # the same seed, the same placements
    again = xai_metrics.placement_test(on_region, region, within, n_placements=500)
    assert again == result
    with pytest.raises(ValueError, match="too large"):
        xai_metrics.placement_test(on_region, within, within, n_placements=50, min_inside=1.0)
    with pytest.raises(ValueError, match="share one grid"):
        xai_metrics.placement_test(on_region[:-1], region, within)
