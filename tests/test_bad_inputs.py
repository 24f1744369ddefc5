"""Bad input at the boundary of the public helpers: each case must raise the named exception with a message that
says what was received and what to do — never silent garbage, never a bare IndexError from a library."""
import os

import numpy as np
import pytest
import torch

from helpers import (cache, env, explain, features, models, presets, recipes, report, training, uncertainty, viz,
                     xai_metrics)
from helpers.data import formats, tensors, tissue
from helpers.simulate import ct, histology
from helpers.methods import concepts
from helpers.methods.sarcoidosis import clam, dec, registration
from helpers.methods.seeded import sic

MAP = np.random.default_rng(0).random((2, 8, 8))
MASK = MAP > 0.5


def _tiny_classifier():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()


CASES = {
    # images and value ranges: 0–255 versus 0–1 is read from the dtype, never guessed
    "float images 0-255 to to_tensor_images": (lambda: tensors.to_tensor_images(np.full((1, 4, 4, 3), 200.0)),
                                               ValueError, r"must lie in \[0, 1\].*uint8"),
    "int64 images to to_tensor_images": (lambda: tensors.to_tensor_images(np.zeros((1, 4, 4, 3), np.int64)),
                                         TypeError, "dtype int64"),
    "NaN images to to_tensor_images": (lambda: tensors.to_tensor_images(np.full((1, 4, 4, 3), np.nan)),
                                       ValueError, "NaN"),
    "grey images to to_tensor_images": (lambda: tensors.to_tensor_images(np.zeros((2, 4, 4))), ValueError, "N×H×W×3"),
    "uint8 tensor to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                                                        "saliency"), TypeError, "uint8.*to_tensor_images"),
    "0-255 floats to explain": (lambda: explain.explain(_tiny_classifier(), torch.full((1, 3, 8, 8), 200.0),
                                                        "saliency"), ValueError, r"\[0, 1\]"),
    "channels-last images to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 8, 8, 3),
                                                                "saliency"), ValueError, "channels-last"),
    "unknown keyword step= to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8), "ig",
                                                                 step=4), ValueError, r"does not take \['step'\]"),
    "unknown method to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8), "shap"),
                                  ValueError, "unknown method 'shap'"),
    "target out of range to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8),
                                                               "saliency", target=7), ValueError, "out of range"),
    "CAM without a layer": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8), "gradcam"),
                            ValueError, "layer="),
    # metrics: one score per map, shapes checked, not broadcast
    "2-D map to relevance_mass": (lambda: xai_metrics.relevance_mass(MAP[0], MASK[0]), ValueError,
                                  r"N × H × W.*maps\[None\]"),
    "2-D map to pointing_game": (lambda: xai_metrics.pointing_game(MAP[0], MASK[0]), ValueError, "N × H × W"),
    "2-D map to relevance_rank": (lambda: xai_metrics.relevance_rank(MAP[0], MASK[0]), ValueError, "N × H × W"),
    "maps and masks of other shapes": (lambda: xai_metrics.relevance_mass(MAP, MASK[:, :4]), ValueError,
                                       "differ in shape"),
    "NaN map to a metric": (lambda: xai_metrics.relevance_mass(np.where(MASK, np.nan, MAP), MASK), ValueError,
                            "NaN"),
    "Dice of masks of other shapes": (lambda: training.dice_score(np.ones((4, 4)), np.ones((4, 5))), ValueError,
                                      "differ in shape"),
    "activated area with a mask of another size": (lambda: clam.activated_area(MAP, 0.5, np.ones((4, 4))),
                                                   ValueError, "fits neither"),
    "activated area of one 2-D map": (lambda: clam.activated_area(MAP[0]), ValueError, "batch"),
    # NMF and stitching
    "NMF on huge values": (lambda: concepts.NMF(2, device="cpu").fit(np.full((20, 4), 1e20, np.float32)),
                           ValueError, "overflows float32.*Scale"),
    "NMF on negative features": (lambda: concepts.NMF(2, device="cpu").fit(-np.ones((20, 4))), ValueError,
                                 "after ReLU"),
    "NMF on NaN": (lambda: concepts.NMF(2, device="cpu").fit(np.full((20, 4), np.nan)), ValueError, "NaN"),
    "NMF on a 1-D vector": (lambda: concepts.NMF(2, device="cpu").fit(np.ones(20)), ValueError, "2-D"),
    "stitching negative coordinates": (lambda: concepts.stitch_feature_maps(np.ones((1, 2, 4, 4)), [[-16, 0]], 16,
                                                                           (8, 8), border=1),
                                       ValueError, "non-negative.*wrap"),
    "stitching off-stride coordinates": (lambda: concepts.stitch_feature_maps(np.ones((1, 2, 4, 4)), [[5, 0]], 16,
                                                                             (8, 8), border=1),
                                         ValueError, "multiples of the layer stride"),
    # the simulator
    "negative micrometres per pixel": (lambda: histology.render_grade_patch(0, "R2", size=32, um_per_px=-1.0),
                                       ValueError, "um_per_px=-1.0.*positive"),
    "zero micrometres per pixel (slide)": (lambda: histology.render_slide(0, size=64, um_per_px=0.0), ValueError,
                                           "positive"),
    "unknown grade": (lambda: histology.render_grade_patch(0, "R9", size=32), ValueError, "R9"),
    # caches, names, reports
    "array name with a path": (lambda: cache.save_arrays("/tmp/never-written", {"../x": np.zeros(1)}, {}),
                               ValueError, "cannot be used as a file name"),
    "unknown preset option": (lambda: presets.data("grading", smoke=True, sizes=3), ValueError, "unknown option"),
    "unknown data set": (lambda: presets.data("imagenet"), ValueError, "unknown data set"),
    "unknown training preset option": (lambda: presets.training("unet", epoch=3), ValueError,
                                       "unknown option.*unet"),
    "metric name with spaces": (lambda: report.record("two words", 1.0), ValueError, "without spaces"),
    "claim without a verdict": (lambda: report.claim("c", "s", "p", "h", 0.9), TypeError, "True or False"),
    "device that does not exist": (lambda: env.select_device("tpu"), ValueError, "DEVICE"),
    "negative seed": (lambda: env.seed_everything(-1), ValueError, "SEED"),
    "unknown layer": (lambda: models.get_layer(_tiny_classifier(), "conv9"), KeyError, "no layer"),
    "feature vectors to a .raw path": (lambda: features.feature_vectors(_tiny_classifier(), "0", np.zeros(
        (1, 8, 8, 3), np.uint8), out_path="/tmp/v.raw"), ValueError, "must end in .npy"),
    "confidence level above 1": (lambda: uncertainty.bootstrap_ci([0.5, 0.7, 0.9], level=2), ValueError,
                                 "between 0 and 1"),
    "rank correlation of unpaired values": (lambda: uncertainty.rank_correlation([1, 2, 3], [1, 2]), ValueError,
                                            "one pair per unit"),
    # attribution and its metrics
    "batch of 0 images to explain": (lambda: explain.explain(_tiny_classifier(), torch.zeros(1, 3, 8, 8), "saliency",
                                                             batch_size=0), ValueError, "batch_size=0"),
    "LIME with no samples": (lambda: explain.lime_maps(_tiny_classifier(), torch.zeros(1, 3, 8, 8), num_samples=0),
                             ValueError, "LIME_SAMPLES"),
    "run_methods options that are not a dict": (lambda: explain.run_methods(
        _tiny_classifier(), torch.zeros(1, 3, 8, 8), {"saliency": 3}, progress=False), TypeError, "dict of explain"),
    "deletion curve without steps": (lambda: xai_metrics.deletion_insertion(
        _tiny_classifier(), torch.zeros(2, 3, 8, 8), MAP, 0, steps=0, device="cpu"), ValueError, "DELETION_STEPS"),
    "deletion targets of another length": (lambda: xai_metrics.deletion_insertion(
        _tiny_classifier(), torch.zeros(2, 3, 8, 8), MAP, [0, 1, 2], device="cpu"), ValueError, "one per image"),
    "attribution threshold above 1": (lambda: xai_metrics.paper_metrics(MAP, MASK, attribution_threshold=2),
                                      ValueError, "attribution_threshold=2"),
    "randomised copy of a string": (lambda: xai_metrics.randomised_copy("model"), TypeError, "torch.nn.Module"),
    "maps of another count to mask_auc": (lambda: xai_metrics.mask_auc(MAP, MASK[:1]), ValueError, "differ in shape"),
    # features, NMF concepts
    "no position per tile": (lambda: features.feature_vectors(_tiny_classifier(), "0", np.zeros((1, 8, 8, 3), np.uint8),
                                                              per_tile=0), ValueError, "per_tile=0"),
    "grey images to layer_activations": (lambda: features.layer_activations(_tiny_classifier(), "0", np.zeros((1, 8, 8))),
                                         ValueError, "N×H×W×3"),
    "NMF with K larger than the channels": (lambda: concepts.NMF(9, device="cpu").fit(np.ones((10, 4))), ValueError,
                                            "K ≤ 4"),
    "streamed NMF of a missing file": (lambda: concepts.fit_streamed("/tmp/no-such-features.npy", 2),
                                       FileNotFoundError, "no-such-features.npy not found"),
    "unknown aggregation": (lambda: concepts.aggregate(np.ones((2, 3, 4, 4)), "median"), ValueError,
                            "unknown aggregation 'median'"),
    "region of another shape for region_iou": (lambda: concepts.region_iou(np.zeros((4, 4), int),
                                                                           {"a": np.ones((3, 3), bool)}, 2),
                                               ValueError, "region 'a'"),
    # data: tiles, stains, formats
    "no random tiles": (lambda: tissue.random_tiles(np.zeros((64, 64, 3), np.uint8), np.ones((64, 64), bool), 16, 0),
                        ValueError, "n=0"),
    "stain statistics of no image": (lambda: tissue.stain_statistics([]), ValueError, "empty"),
    "stain statistics of a grey image": (lambda: tissue.stain_statistics([np.zeros((8, 8))]), ValueError, "H×W×3"),
    "PanNuke fold of mismatched arrays": (lambda: formats.write_pannuke_fold(
        "/tmp/never-written-pannuke", np.zeros((2, 4, 4, 3)), np.zeros((3, 4, 4, 6)), ["a", "b"]), ValueError,
        "one mask and one tissue type per image"),
    "PanNuke masks from mismatched maps": (lambda: formats.to_pannuke_masks(np.zeros((2, 4, 4)), np.zeros((2, 4, 5))),
                                           ValueError, "differ"),
    # training recipes
    "U-Net threshold above 1": (lambda: recipes.segment_nuclei(models.UNet(2, 4, 2), np.zeros((1, 16, 16, 3), np.uint8),
                                                               threshold=3), ValueError, "threshold=3"),
    "validation share above 1": (lambda: recipes.tile_split({"is_test": np.zeros(5, bool)}, 0, val_fraction=1.5),
                                 ValueError, "val_fraction=1.5"),
    "regression scale without mean and std": (lambda: recipes.predict_regression(_tiny_classifier(),
                                                                                 np.zeros((1, 8, 8, 3), np.uint8), {}),
                                              ValueError, r"info\['scale'\]"),
    "R² of predictions of another shape": (lambda: recipes.r2_scores(np.ones((3, 2)), np.ones((3, 1))), ValueError,
                                           "one prediction per target"),
    "gallery with a title too many": (lambda: viz.gallery([np.zeros((4, 4, 3))], ["a", "b"]), ValueError,
                                      "one title per image"),
    "nucleus outlines on a 0–255 float image": (lambda: viz.outline_nuclei(np.full((4, 4, 3), 200.0),
                                                                           np.zeros((4, 4), int), np.zeros((4, 4), int)),
                                                ValueError, r"must lie in \[0, 1\].*uint8"),
    # the papers' methods
    "seed F1 of unpaired arrays": (lambda: sic.seed_f1([1, 0], [1, 0, 1]), sic.SeedError, "one of each per patch"),
    "silhouette K not below the image count": (lambda: dec.choose_k(np.random.default_rng(0).random((3, 2)),
                                                                    ks=[2, 3]), dec.ClusteringError, "2 ≤ K ≤ 2"),
    "alignment of volumes off the template grid": (lambda: registration.alignment_correlation(
        np.ones((2, 4, 4, 4)), np.ones((3, 3, 3))), ValueError, "template's grid"),
    "NaN Hounsfield units": (lambda: ct.hu_to_unit(np.array([np.nan])), ValueError, "NaN"),
    "interval from one value": (lambda: uncertainty.bootstrap_ci([0.5]), ValueError, "at least 2"),
    "paired scores of other lengths": (lambda: uncertainty.paired_difference([1, 2, 3], [1, 2]), ValueError,
                                       "paired"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_named(name):
    call, error, message = CASES[name]
    with pytest.raises(error, match=message):
        call()


def test_read_wsi_reads_grey_slides_as_rgb_and_refuses_regions_outside(tmp_path):
    import tifffile

    grey = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    tifffile.imwrite(tmp_path / "grey.tif", grey)
    rgb = formats.read_wsi(tmp_path / "grey.tif")
    assert rgb.shape == (64, 48, 3) and np.array_equal(rgb[..., 1], grey)
    assert formats.read_wsi(tmp_path / "grey.tif", region=(10, 5, 20, 30)).shape == (20, 30, 3)
    for region in ((60, 0, 10, 10), (0, 0, 0, 5), (-1, 0, 5, 5), (0, 40, 5, 10)):
        with pytest.raises(ValueError, match="not inside grey.tif"):
            formats.read_wsi(tmp_path / "grey.tif", region=region)
    with pytest.raises(FileNotFoundError, match="REAL_SLIDE_PATH"):
        formats.read_wsi(tmp_path / "missing.svs")


def test_broken_files_are_named(tmp_path, capsys):
    from pathlib import Path

    from helpers import runner

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="broken.png cannot be read as an image"):
        formats.read_image(tmp_path / "broken.png")
    fold = tmp_path / "Fold 1"
    fold.mkdir()
    np.save(fold / "images.npy", np.zeros((2, 8, 8, 3), np.uint8))
    (fold / "images.npy").write_bytes((fold / "images.npy").read_bytes()[:100])          # truncated download
    np.save(fold / "masks.npy", np.zeros((2, 8, 8, 6), np.float32))
    np.save(fold / "types.npy", np.array(["Breast", "Colon"]))
    with pytest.raises(ValueError, match="images.npy cannot be read as a NumPy array"):
        formats.load_pannuke_fold(fold)
    # a cache manifest without its file list, and a truncated checkpoint record: rebuilt / retrained, not a KeyError
    folder = cache.save_arrays(tmp_path / "c", {"x": np.zeros(2)}, {"k": 1})
    (folder / cache.MANIFEST).write_text('{"format": 1, "config": {"k": 1}}')
    with pytest.raises(cache.CacheError, match="lists no files"):
        cache.verify(folder)
    ckpt = cache.save_checkpoint(tmp_path / "m", torch.nn.Linear(2, 2), {"k": 1}, {})
    (ckpt / cache.INFO).write_text('{"config": {"k"')
    with pytest.raises(cache.CacheError, match="not valid JSON"):
        cache.load_checkpoint(ckpt, torch.nn.Linear(2, 2))
    # one corrupt metrics.json does not stop the run summary of the others
    good, bad = tmp_path / "out" / "01_a", tmp_path / "out" / "02_b"
    good.mkdir(parents=True)
    bad.mkdir(parents=True)
    (good / "metrics.json").write_text('{"auc": 0.9}')
    (bad / "metrics.json").write_text('{"auc": ')
    text = runner.summary([(Path("01_a.ipynb"), good, 1.0, None), (Path("02_b.ipynb"), bad, 1.0, None)])
    assert "auc" in text and "is not valid JSON" in text


def test_one_value_convention_at_every_entry_point_that_takes_images():
    """uint8 is 0–255, floats must lie in [0, 1] (helpers.pixels): 0–255 floats are refused with the fix, [0, 1]
    floats are read as they are — never divided by 255 again, never taken for a black image."""
    from helpers import xai_metrics
    from helpers.data import tensors, tissue
    from helpers.methods.dti import histology_features

    rng = np.random.default_rng(0)
    as_uint8 = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    as_unit = as_uint8.astype(np.float32) / 255
    as_0_255 = as_uint8.astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    maps = rng.random((2, 8, 8))
    takes_images = {
        "ArrayDataset": lambda im: tensors.ArrayDataset(im, np.zeros(2))[0][0].numpy().transpose(1, 2, 0),
        "TileDataset": lambda im: tensors.TileDataset(im, [0], [(0, 0)], [0], tile=8)[0][0].numpy().transpose(1, 2, 0),
        "to_tensor_images": lambda im: tensors.to_tensor_images(im)[0].numpy().transpose(1, 2, 0),
        "overlay_regions": lambda im: viz.overlay_regions(im[0], {"tumour": np.zeros((8, 8), bool)}, ("tumour",)),
        "paper_colours": lambda im: viz.paper_colours(im[0], *(np.zeros((8, 8), bool),) * 3),
        "outline_nuclei": lambda im: viz.outline_nuclei(im[0], np.zeros((8, 8), int), np.zeros((8, 8), int)),
    }
    for name, call in takes_images.items():
        np.testing.assert_allclose(call(as_unit), as_unit[0], atol=1e-6, err_msg=name)      # [0, 1] kept
        np.testing.assert_allclose(call(as_uint8), as_unit[0], atol=1e-6, err_msg=name)     # 0–255 divided once
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*uint8"):
            call(as_0_255)
    # the same stain from uint8 and from [0, 1] floats; 0–255 floats refused instead of a zero haematoxylin
    np.testing.assert_allclose(histology_features.haematoxylin(as_unit), histology_features.haematoxylin(as_uint8),
                               atol=1e-6)
    assert tissue.stain_statistics(as_unit) == pytest.approx(tissue.stain_statistics(as_uint8), abs=1e-6)
    for call in (lambda: histology_features.haematoxylin(as_0_255), lambda: tissue.stain_statistics(as_0_255),
                 lambda: xai_metrics.deletion_insertion(model, as_0_255.transpose(0, 3, 1, 2), maps, 0, steps=2,
                                                        blur_sigma=1.0, device="cpu")):
        with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
            call()
    # deletion / insertion read uint8 as 0–255: the same curves as the [0, 1] floats
    options = dict(steps=2, blur_sigma=1.0, device="cpu")
    a = xai_metrics.deletion_insertion(model, as_uint8.transpose(0, 3, 1, 2), maps, 0, **options)
    b = xai_metrics.deletion_insertion(model, as_unit.transpose(0, 3, 1, 2), maps, 0, **options)
    np.testing.assert_allclose(a["deletion_auc"], b["deletion_auc"], atol=1e-6)
    with pytest.raises(TypeError, match="int64"):
        tensors.to_tensor_images(as_uint8.astype(np.int64))


def test_nan_is_refused_with_the_argument_named_not_turned_into_a_number():
    from helpers import xai_metrics

    rng = np.random.default_rng(1)
    maps, masks = rng.random((2, 6, 6)), rng.random((2, 6, 6)) > 0.5
    with_nan = maps.copy()
    with_nan[0, 1, 1] = np.nan
    soft_mask = masks.astype(float)
    soft_mask[1, 2, 2] = np.nan
    cases = [
        (lambda: uncertainty.rank_correlation([1.0, np.nan, 3.0], [1, 2, 3]), "x holds 1 NaN"),
        (lambda: uncertainty.rank_correlation([1, 2, 3], [np.inf, 2, 3]), "y holds 1 NaN"),
        (lambda: xai_metrics.relevance_mass(with_nan, masks), "maps"),
        (lambda: xai_metrics.mask_auc(maps, soft_mask), "NaN or inf"),
        (lambda: xai_metrics.map_correlation(maps, soft_mask), "NaN or inf"),
        (lambda: xai_metrics.ranking(with_nan), "maps"),
        (lambda: xai_metrics.rank_similarity(maps, with_nan), "NaN or inf"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_numeric_arguments_are_checked_at_the_entry_point_not_deep_inside_a_library():
    """helpers.arrays at the entry points that take scores, maps, masks and labels: an empty array, a wrong
    layout, NaN or a non-number stops there with the argument named — never an IndexError / AxisError from numpy or
    scikit-learn, and never a plausible number (a NaN mask counted as foreground, a NaN map never active)."""
    from helpers import arrays, recipes, xai_metrics
    from helpers.data import annotations, tissue
    from helpers.methods.dti import diffusion
    from helpers.methods.seeded import embeddings

    nan_map = np.full((2, 4, 4), 0.5)
    nan_map[0, 0, 0] = np.nan
    cases = [
        # (call, error, message naming the argument)
        (lambda: training.dice_score(np.array([[np.nan, 0.0]]), np.ones((1, 2), bool)), ValueError, "pred holds 1 NaN"),
        (lambda: training.dice_score(np.ones(2, bool), ["a", "b"]), TypeError, "truth of dtype <U1"),
        (lambda: training.soft_iou(np.full((1, 1, 2, 2), np.nan), np.ones((1, 1, 2, 2))), ValueError, "logits holds"),
        (lambda: uncertainty.groups_differ_p([[1.0, np.nan], [2.0, 3.0]]), ValueError, r"samples\[0\] holds 1 NaN"),
        (lambda: uncertainty.groups_differ_p([[1.0, 2.0], []]), ValueError, r"samples\[1\] of shape \(0,\)"),
        (lambda: uncertainty.rank_correlation([], []), ValueError, "x of shape"),
        (lambda: uncertainty.ranked({"a": [1, 2, 3], "b": [1, 2]}), ValueError, "same units"),
        (lambda: uncertainty.ranked([[1, 2], [3, 4]]), TypeError, "scores is a list"),
        (lambda: concepts.relative_error(np.ones((4, 3)), np.ones((4, 2)), np.ones((3, 3))), ValueError,
         "do not fit V ≈ W H"),
        (lambda: concepts.relative_error(np.ones(3), np.ones((3, 1)), np.ones((1, 3))), ValueError,
         "V of shape .3,.: expected vectors × channels"),
        (lambda: concepts.relative_error(np.zeros((2, 2)), np.zeros((2, 1)), np.zeros((1, 2))), ValueError, "all zeros"),
        (lambda: concepts.aggregate(np.full((2, 3, 4, 4), np.nan)), ValueError, "concept_weights holds 96 NaN"),
        (lambda: concepts.aggregate(np.ones((2, 3))), ValueError, "concept_weights of shape"),
        (lambda: concepts.weight_correlations(np.ones(5)), ValueError, "concept_weights of shape"),
        (lambda: concepts.cosine_similarity(np.ones(5)), ValueError, "H of shape .5,.: expected K × channels"),
        (lambda: clam.activated_area(nan_map, 0.5), ValueError, "maps holds 1 NaN"),
        (lambda: clam.activated_area(np.ones((4, 4)), 0.5), ValueError, "maps of shape .4, 4.: expected a batch"),
        (lambda: clam.cluster_average(np.ones((0, 4, 4)), []), ValueError, "maps of shape .0, 4, 4. holds 0"),
        (lambda: clam.cluster_average(np.ones((2, 4, 4)), [0.5, 1]), ValueError, "labels holds non-integer"),
        (lambda: clam.cluster_average(np.ones((2, 4, 4)), [-1, 0]), ValueError, "clusters are numbered"),
        (lambda: clam.population_average(nan_map, [0, 1]), ValueError, "maps holds 1 NaN"),
        (lambda: clam.peak_inside(np.full((1, 2, 2), np.nan), np.ones((1, 2, 2), bool)), ValueError,
         "maps holds 4 NaN.*no peak"),
        (lambda: dec.cluster_accuracy([0, 1, np.nan], [0, 1, 1]), ValueError, "y_true holds 1 NaN"),
        (lambda: dec.cluster_accuracy([], []), ValueError, "y_true of shape .0,. holds 0"),
        (lambda: dec.silhouette(np.full((3, 2), np.nan), [0, 1, 1]), ValueError, "embedding holds 6 NaN"),
        (lambda: dec.silhouette(np.ones((3, 2)), [0, 1]), dec.ClusteringError, "one label per image"),
        (lambda: sic.seed_f1([-1, -1], [True, False]), sic.SeedError, "no clicked patch"),
        (lambda: sic.seed_f1([0, 2], [True, False]), sic.SeedError, r"seeds hold \[2\]"),
        (lambda: sic.seed_f1([0, np.nan], [True, False]), ValueError, "seeds holds 1 NaN"),
        (lambda: recipes.r2_scores([1.0, np.nan, 2.0], [1.0, 2.0, 3.0]), ValueError, "y_true holds 1 NaN"),
        (lambda: recipes.r2_scores([], []), ValueError, "y_true of shape .0,. holds 0"),
        (lambda: recipes.nuclei_targets(np.zeros((4, 4))), ValueError, "types of shape .4, 4.: expected N × H × W"),
        (lambda: xai_metrics.top_k_masks(nan_map, 2), ValueError, "maps holds 1 NaN"),
        (lambda: formats.to_nifti_axes(np.zeros((2, 3, 4, 5))), ValueError, "volume of shape .2, 3, 4, 5."),
        (lambda: embeddings.mask_fraction(np.ones((2, 4, 4)), [[2, 2]], 2), ValueError, "mask of shape .2, 4, 4."),
        (lambda: tissue.integral_image(np.ones(5)), ValueError, "mask of shape .5,.: expected one H × W mask"),
        (lambda: tissue.box_sums(tissue.integral_image(np.ones((4, 4))), np.array([0.5]), np.array([0]), 2),
         TypeError, "ys of dtype float64"),
        (lambda: tissue.box_sums(tissue.integral_image(np.ones((4, 4))), np.array([3]), np.array([0]), 2),
         ValueError, "leave the 4 × 4 mask"),
        (lambda: annotations.rasterise(None, (4, 4)), ValueError, "give a shapely geometry"),
        (lambda: diffusion.colour_fa(np.ones((2, 2)), np.ones((2, 2, 3))), ValueError, "evecs must be fa's shape"),
        (lambda: arrays.numeric([[1, 2], [3]], "rows"), ValueError, "rows cannot be read as one array"),
        (lambda: arrays.numeric(np.array([1 + 1j]), "z"), TypeError, "z of dtype complex128"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    # and the valid inputs still give the numbers they gave before
    assert training.dice_score(np.array([[1, 0], [1, 1]]), np.array([[1, 1], [0, 1]])) == pytest.approx(2 * 2 / 6)
    assert uncertainty.rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert uncertainty.rank_correlation([1], [2]) == 0.0                     # one unit: constant, as documented
    assert sic.seed_f1([1, 0, -1], [True, False, True]) == 1.0
    np.testing.assert_array_equal(tissue.box_sums(tissue.integral_image(np.ones((4, 4))), np.array([2]),
                                                  np.array([2]), 2), [4])
    assert recipes.r2_scores([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == [1.0]


def test_unreadable_patch_files_are_named_with_the_fix(tmp_path):
    """A DiagSet blob or a patch table that is missing, a folder, empty, truncated or in another format: one error
    from the reader, naming the file, instead of numpy's "No data left in file" or pandas' EmptyDataError."""
    from helpers.methods.seeded import embeddings

    np.save(tmp_path / "good.npy", np.zeros((2, 4, 4, 3), np.uint8))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:90])
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "pickled.npy").write_bytes(os.urandom(200))
    np.save(tmp_path / "flat.npy", np.zeros(5))
    for name, message in (("missing.npy", "not found"), (".", "not found"), ("empty.npy", "not a readable .npy"),
                          ("truncated.npy", "not a readable .npy"), ("pickled.npy", "not a readable .npy"),
                          ("flat.npy", r"shape \(5,\); a DiagSet blob is N × H × W × 3")):
        with pytest.raises((FileNotFoundError, ValueError), match=message):
            formats.read_diagset_patches(tmp_path / name)
    assert formats.read_diagset_patches(tmp_path / "good.npy", [1]).shape == (1, 4, 4, 3)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "binary.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    for name in ("empty.csv", "binary.csv"):
        with pytest.raises(ValueError, match=f"csv_path .*{name} cannot be read as a CSV table"):
            formats.load_patch_table(tmp_path / name)
    with pytest.raises(embeddings.StoreError, match="slide file .*missing.svs not found"):
        embeddings.slide_file_digest(tmp_path / "missing.svs")
