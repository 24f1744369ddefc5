import json

import numpy as np
import pytest

from helpers import cache, presets
from helpers.data import formats, tissue
from helpers.simulate import datasets, histology


# ------------------------------------------------------------------------------------------------- tiling
def _brute_force_tiles(mask, tile, stride, min_tissue, label, centre):
    out = []
    h, w = mask.shape
    off = (tile - centre) // 2
    for y in range(0, h - tile + 1, stride):
        for x in range(0, w - tile + 1, stride):
            frac = mask[y:y + tile, x:x + tile].mean()
            if frac >= min_tissue:
                lab = label[y + off:y + off + centre, x + off:x + off + centre].any()
                out.append((y, x, frac, int(lab)))
    return out


def test_tiling_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    mask = np.zeros((300, 260), bool)
    mask[40:280, 20:230] = True
    mask &= rng.random(mask.shape) > 0.1
    label = np.zeros_like(mask)
    label[100:150, 60:140] = True
    got = tissue.tile_slide(mask, 64, 32, 0.6, label, centre=32)
    ref = _brute_force_tiles(mask, 64, 32, 0.6, label, 32)
    assert len(got["coords"]) == len(ref) > 10
    assert [tuple(c) for c in got["coords"]] == [(r[0], r[1]) for r in ref]
    np.testing.assert_allclose(got["tissue_fraction"], [r[2] for r in ref])
    assert got["label"].tolist() == [r[3] for r in ref]
    assert 0 < got["label"].sum() < len(ref)


def test_tiling_errors_name_the_parameter():
    mask = np.ones((100, 100), bool)
    with pytest.raises(ValueError, match="larger than the slide"):
        tissue.tile_slide(mask, 128, 64)
    with pytest.raises(ValueError, match="MIN_TISSUE"):
        tissue.tile_slide(np.zeros((100, 100), bool), 32, 32, 0.5)
    with pytest.raises(ValueError, match="label mask shape"):
        tissue.tile_slide(mask, 32, 32, 0.5, np.ones((50, 50), bool))


def test_tissue_detection_finds_simulated_tissue():
    slide = histology.render_slide(3, size=768)
    detected = tissue.tissue_mask_from_rgb(slide.scene.rgb)
    truth = slide.scene.masks["tissue"]
    iou = (detected & truth).sum() / (detected | truth).sum()
    assert iou > 0.9


def test_mask_packing_roundtrip():
    rng = np.random.default_rng(1)
    masks = {n: rng.random((20, 30)) > 0.5 for n in histology.MASK_NAMES}
    packed = datasets.pack_masks(masks)
    for n in histology.MASK_NAMES:
        assert np.array_equal(datasets.unpack_mask(packed, n), masks[n])
    with pytest.raises(ValueError, match="unknown mask"):
        datasets.unpack_mask(packed, "bone")


# -------------------------------------------------------------------------------------------------- caches
def test_cache_reuses_rebuilds_and_detects_corruption(tmp_path, capsys):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(10), "y": np.ones((2, 2))}, {"note": "hi"}

    folder = tmp_path / "c"
    arrays, meta = cache.ensure_arrays(folder, {"n": 10}, build)
    assert meta == {"note": "hi"} and arrays["x"].tolist() == list(range(10))
    cache.ensure_arrays(folder, {"n": 10}, build)
    assert len(calls) == 1                                   # valid cache reused
    cache.ensure_arrays(folder, {"n": 11}, build)
    assert len(calls) == 2 and "stale" in capsys.readouterr().out
    # corrupt one file: verification fails with a clear message, ensure rebuilds and says why
    raw = bytearray((folder / "x.npy").read_bytes())
    raw[-1] ^= 0xFF
    (folder / "x.npy").write_bytes(bytes(raw))
    with pytest.raises(cache.CacheError, match="checksum mismatch in x.npy"):
        cache.verify(folder, {"n": 11})
    arrays, _ = cache.ensure_arrays(folder, {"n": 11}, build)
    assert len(calls) == 3 and "checksum mismatch" in capsys.readouterr().out
    assert arrays["x"].tolist() == list(range(10))


def test_a_manifest_that_lists_no_files_is_rebuilt_not_returned_empty(tmp_path, capsys):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(3)}, {}

    folder = tmp_path / "c"
    cache.ensure_arrays(folder, {"n": 1}, build)
    for files in ("{}", "[]", "null"):        # an empty list, another type, nothing
        manifest = json.loads((folder / cache.MANIFEST).read_text())
        (folder / cache.MANIFEST).write_text(json.dumps({**manifest, "files": json.loads(files)}))
        with pytest.raises(cache.CacheError, match="lists no files"):
            cache.verify(folder, {"n": 1})
        arrays, _ = cache.ensure_arrays(folder, {"n": 1}, build)
        assert arrays["x"].tolist() == [0, 1, 2] and "lists no files" in capsys.readouterr().out
    assert len(calls) == 4


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="DATA_DIR"):
        datasets.ensure_grading_patches(tmp_path / "missing", smoke=True)


def test_presets_refuse_unknown_options():
    with pytest.raises(ValueError, match="unknown option"):
        presets.data("grading", smoke=True, epochs=3)
    with pytest.raises(ValueError, match="unknown data set"):
        presets.data("mri")


def test_simulated_datasets_are_deterministic(tmp_path):
    """Same seed → byte-identical arrays (compared through the manifests' sha256), built in two folders."""
    digests = []
    for run in ("a", "b"):
        d = tmp_path / run
        d.mkdir()
        datasets.ensure_grading_patches(d, smoke=True, seed=0, train=3, val=1, test=1)
        datasets.ensure_regression_patches(d, smoke=True, seed=0, per_sample=2)
        datasets.ensure_tile_slides(d, smoke=True, seed=0, size=256)
        manifests = sorted((d / "cache").glob("*/manifest.json"))
        digests.append({m.parent.name: json.loads(m.read_text())["files"] for m in manifests})
    assert digests[0] == digests[1] and len(digests[0]) == 3
    other = tmp_path / "c"
    other.mkdir()
    datasets.ensure_grading_patches(other, smoke=True, seed=1, train=3, val=1, test=1)
    m = json.loads(next((other / "cache").glob("grading-*/manifest.json")).read_text())["files"]
    assert m["images.npy"] != next(v for k, v in digests[0].items() if k.startswith("grading"))["images.npy"]


def test_grading_splits_are_balanced(data_dir):
    arrays, meta = datasets.ensure_grading_patches(data_dir, smoke=True, train=4, val=2, test=3)
    counts = np.zeros((3, 7), int)
    np.add.at(counts, (arrays["split"], arrays["label"]), 1)
    assert (counts == np.array([[4], [2], [3]])).all()
    assert meta["classes"] == list(formats.GRADES)


# ------------------------------------------------------------------------------------------ real formats
def test_pannuke_roundtrip_and_bad_files(tmp_path):
    inst = np.zeros((3, 16, 16), np.int32)
    inst[:, 2:6, 2:6] = 1
    inst[:, 9:12, 9:12] = 2
    types = np.zeros_like(inst, np.uint8)
    types[inst == 1] = 1
    types[inst == 2] = 2
    masks = formats.to_pannuke_masks(inst, types)
    images = np.full((3, 16, 16, 3), 200.0)
    formats.write_pannuke_fold(tmp_path / "fold", images, masks, np.array(["Prostate"] * 3))
    fold = formats.load_pannuke_fold(tmp_path / "fold")
    neo, non = formats.pannuke_binary_masks(fold["masks"])
    assert np.array_equal(neo, types == 1) and np.array_equal(non, types == 2)
    with pytest.raises(FileExistsError, match="overwritten"):
        formats.write_pannuke_fold(tmp_path / "fold", images, masks, np.array(["P"] * 3))
    # files in PanNuke's layout that are wrong (as a broken download or another tool would leave them): the writer
    # refuses to write them, the loader names what is wrong
    with pytest.raises(ValueError, match="N×H×W×6 masks"):
        formats.write_pannuke_fold(tmp_path / "refused", images, masks[..., :5], np.array(["P"] * 3))
    assert not (tmp_path / "refused").exists()

    def raw_fold(name, fold_images, fold_masks):
        folder = tmp_path / name
        folder.mkdir()
        np.save(folder / "images.npy", fold_images)
        np.save(folder / "masks.npy", fold_masks)
        np.save(folder / "types.npy", np.array(["P"] * 3))
        return folder

    with pytest.raises(ValueError, match="N×H×W×6"):
        formats.load_pannuke_fold(raw_fold("bad", images, masks[..., :5]))
    with pytest.raises(ValueError, match="N×H×W×3"):
        formats.load_pannuke_fold(raw_fold("bad2", images[..., 0], masks))
    with pytest.raises(TypeError, match="not numeric"):
        formats.load_pannuke_fold(raw_fold("bad3", np.full((3, 16, 16, 3), "x"), masks))
    with pytest.raises(FileNotFoundError, match="types.npy"):
        formats.load_pannuke_fold(tmp_path)


def test_diagset_folder(tmp_path):
    import imageio.v3 as iio

    for cls in ("A", "R3"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            iio.imwrite(tmp_path / cls / f"p{i}.png", np.zeros((8, 8, 3), np.uint8))
    paths, labels = formats.load_diagset_folder(tmp_path)
    assert len(paths) == 4 and sorted(labels.tolist()) == [0, 0, 4, 4]
    (tmp_path / "R7").mkdir()
    with pytest.raises(ValueError, match="unknown grade 'R7'"):
        formats.load_diagset_folder(tmp_path)


def test_digestpath_pairs(tmp_path):
    import imageio.v3 as iio

    img = np.full((10, 12, 3), 180, np.uint8)
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:7] = 255
    iio.imwrite(tmp_path / "a.png", img)
    iio.imwrite(tmp_path / "a_mask.png", mask)
    pairs = formats.load_digestpath_pairs(tmp_path)
    im, m = formats.load_digestpath_pair(*pairs[0])
    assert im.shape == (10, 12, 3) and m.sum() == 12
    iio.imwrite(tmp_path / "b.png", img)
    with pytest.raises(FileNotFoundError, match="without a '_mask' mask"):
        formats.load_digestpath_pairs(tmp_path)


def test_pyramidal_tiff_levels(tmp_path):
    import tifffile

    base = (np.random.default_rng(0).random((64, 80, 3)) * 255).astype(np.uint8)
    path = tmp_path / "slide.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(base, subifds=1, tile=(16, 16), photometric="rgb")
        tw.write(base[::2, ::2], subfiletype=1, tile=(16, 16), photometric="rgb")
    assert np.array_equal(formats.read_wsi(path), base)
    assert formats.read_wsi(path, level=1).shape == (32, 40, 3)
    assert np.array_equal(formats.read_wsi(path, region=(4, 8, 10, 12)), base[4:14, 8:20])
    assert formats.wsi_info(path)["levels"] == [(64, 80, 3), (32, 40, 3)]
    with pytest.raises(ValueError, match="level 5 does not exist"):
        formats.read_wsi(path, level=5)
    with pytest.raises(FileNotFoundError, match="SLIDE_PATH"):
        formats.read_wsi(tmp_path / "none.svs")


def test_sic_slides_are_positive_and_none_is_a_tile_slide(tmp_path):
    sic_arrays, sic_meta = datasets.ensure_sic_slides(tmp_path, smoke=True, seed=0, n=3, size=256)
    tile_arrays, _ = datasets.ensure_tile_slides(tmp_path, smoke=True, seed=0, size=256)
    assert sic_arrays["rgb"].shape == (3, 256, 256, 3) and sic_meta["slide_ids"] == ["sic_000", "sic_001", "sic_002"]
    assert (np.asarray(sic_arrays["label"]) == 1).all()
    assert all(datasets.unpack_mask(m, "tumour").any() for m in sic_arrays["masks"])
    # a seed stream of their own: no slide equals a slide of the tile classifier's set
    for rgb in sic_arrays["rgb"]:
        assert not any(np.array_equal(rgb, other) for other in tile_arrays["rgb"])
    with pytest.raises(ValueError, match="n=0"):
        datasets.ensure_sic_slides(tmp_path, smoke=True, n=0)
