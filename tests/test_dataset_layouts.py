"""Each loader on small files written in its data set's real layout, and refusing a broken one with the file and the
problem named: PanNuke's release folders and its type channels as paper 001 used them, DiagSet-A's .npy blobs,
paper 003's patch table, NIfTI reoriented and resampled."""
import numpy as np
import pytest

from helpers.data import formats


def _pannuke_release(root, fold=1, n=3, size=16):
    """PanNuke as released: Fold N/images/foldN/{images,types}.npy and Fold N/masks/foldN/masks.npy."""
    rng = np.random.default_rng(fold)
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float64)     # the release stores float64 0–255
    masks = np.zeros((n, size, size, 6))
    masks[:, 2:5, 2:5, 0] = 1          # a neoplastic nucleus
    masks[:, 8:11, 8:11, 2] = 2        # a connective-tissue nucleus
    masks[:, 12:14, 2:4, 1] = 3        # an inflammatory one
    masks[..., 5] = (masks[..., :5].sum(-1) == 0)
    top = root / f"Fold {fold}"
    (top / "images" / f"fold{fold}").mkdir(parents=True)
    (top / "masks" / f"fold{fold}").mkdir(parents=True)
    np.save(top / "images" / f"fold{fold}" / "images.npy", images)
    np.save(top / "images" / f"fold{fold}" / "types.npy", np.array(["Prostate"] * n))
    np.save(top / "masks" / f"fold{fold}" / "masks.npy", masks)
    return top, images, masks


def test_pannuke_release_layout_and_paper_001_channels(tmp_path):
    top, images, masks = _pannuke_release(tmp_path)
    fold = formats.load_pannuke_fold(top)
    np.testing.assert_array_equal(fold["images"], images)
    neoplastic, connective = formats.pannuke_binary_masks(fold["masks"])
    assert neoplastic[:, 3, 3].all() and connective[:, 9, 9].all()
    assert not connective[:, 13, 3].any()                       # inflammatory is not paper 001's non-tumour mask
    _, every_other = formats.pannuke_binary_masks(fold["masks"], non_neoplastic="all")
    assert every_other[:, 13, 3].all()
    with pytest.raises(ValueError, match="non_neoplastic='stroma'"):
        formats.pannuke_binary_masks(fold["masks"], non_neoplastic="stroma")


def test_simulated_stromal_nuclei_go_to_the_connective_channel():
    instances = np.zeros((1, 8, 8), int); types = np.zeros((1, 8, 8), int)
    instances[0, 1:3, 1:3], types[0, 1:3, 1:3] = 1, 1           # neoplastic
    instances[0, 5:7, 5:7], types[0, 5:7, 5:7] = 2, 2           # stromal (non-neoplastic)
    masks = formats.to_pannuke_masks(instances, types)
    assert masks[0, 6, 6, 2] == 2 and masks[0, 6, 6, 4] == 0     # connective, not epithelial
    neoplastic, non = formats.pannuke_binary_masks(masks)
    np.testing.assert_array_equal(neoplastic[0], types[0] == 1)
    np.testing.assert_array_equal(non[0], types[0] == 2)


def test_pannuke_release_broken_files_are_named(tmp_path):
    top, _, _ = _pannuke_release(tmp_path)
    (top / "masks" / "fold1" / "masks.npy").unlink()
    with pytest.raises(FileNotFoundError, match="masks.npy"):
        formats.load_pannuke_fold(top)
    top2, _, _ = _pannuke_release(tmp_path, fold=2)
    (top2 / "images" / "fold2" / "images.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(ValueError, match="images.npy cannot be read"):
        formats.load_pannuke_fold(top2)


def test_diagset_a_blobs(tmp_path):
    root = tmp_path / "blobs" / "S" / "20x"
    rng = np.random.default_rng(0)
    written = {}
    for slide, grade, n in (("slide_01", "R3", 4), ("slide_01", "N", 2), ("slide_02", "A", 3)):
        (root / slide / grade).mkdir(parents=True)
        blob = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        np.save(root / slide / grade / "000.npy", blob)
        written[(slide, grade)] = blob
    (root / "slide_02" / "notes").mkdir()                       # not a class: skipped, as in the thesis's code
    index = formats.load_diagset_blobs(root)
    assert sorted(zip(index["slide"], index["class"], index["n_patches"])) == [
        ("slide_01", "N", 2), ("slide_01", "R3", 4), ("slide_02", "A", 3)]
    r3 = index[index["class"] == "R3"].iloc[0]
    assert r3["label"] == formats.GRADES.index("R3")
    np.testing.assert_array_equal(formats.read_diagset_patches(r3["path"], [1, 3]), written[("slide_01", "R3")][[1, 3]])
    np.save(root / "slide_02" / "A" / "001.npy", np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"001.npy: expected N × H × W × 3 uint8"):
        formats.load_diagset_blobs(root)
    with pytest.raises(FileNotFoundError, match="no <slide>/<class>"):
        formats.load_diagset_blobs(tmp_path / "blobs")


def test_paper_003_patch_table(tmp_path):
    import imageio.v3 as iio
    import pandas as pd

    rng = np.random.default_rng(0)
    (tmp_path / "patches").mkdir()
    rows = []
    for i in range(3):
        iio.imwrite(tmp_path / "patches" / f"p{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
        rows.append({"image": f"patches/p{i}.png", "md": 0.9 + i / 10, "fa": 0.3, "cc": 10 + i, "sample": i % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    images, table = formats.load_patch_table(tmp_path / "table.csv")
    assert images.shape == (3, 24, 24, 3) and images.dtype == np.uint8
    assert table["md"].tolist() == pytest.approx([0.9, 1.0, 1.1]) and table["sample"].tolist() == [0, 1, 0]
    pd.DataFrame(rows).drop(columns="fa").to_csv(tmp_path / "no_fa.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['fa'\]"):
        formats.load_patch_table(tmp_path / "no_fa.csv")
    broken = [dict(r) for r in rows]; broken[1]["md"] = "n/a"
    pd.DataFrame(broken).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match="row 3 .*p1.png"):
        formats.load_patch_table(tmp_path / "nan.csv")
    gone = [dict(r) for r in rows]; gone[2]["image"] = "patches/missing.png"
    pd.DataFrame(gone).to_csv(tmp_path / "gone.csv", index=False)
    with pytest.raises(FileNotFoundError, match="row 4: image .*missing.png not found"):
        formats.load_patch_table(tmp_path / "gone.csv")


def test_nifti_reoriented_and_resampled(tmp_path):
    import nibabel as nib

    data = np.zeros((6, 8, 10), np.float32)
    data[1, 2, 3] = 1.0
    ras = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, ras), str(tmp_path / "ras.nii.gz"))
    # the same volume stored with its first axis flipped (an LAS file): the affine says so
    las = ras.copy(); las[0, 0] = -2.0; las[0, 3] = 2.0 * (data.shape[0] - 1)
    nib.save(nib.Nifti1Image(data[::-1].copy(), las), str(tmp_path / "las.nii.gz"))
    a, affine_a, _ = formats.load_nifti(tmp_path / "ras.nii.gz", ndim=3, orientation="RAS")
    b, affine_b, _ = formats.load_nifti(tmp_path / "las.nii.gz", ndim=3, orientation="RAS")
    np.testing.assert_array_equal(a, b)                         # one anatomy, one array
    np.testing.assert_allclose(affine_a, affine_b)
    raw, _, _ = formats.load_nifti(tmp_path / "las.nii.gz", ndim=3)
    assert not np.array_equal(raw, a)                           # without reorientation they differ
    fine, affine_fine, spacing = formats.load_nifti(tmp_path / "ras.nii.gz", ndim=3, spacing=1.0, order=0)
    assert spacing == (1.0, 1.0, 1.0) and fine.shape[0] >= 2 * data.shape[0] - 1
    peak = np.unravel_index(np.argmax(fine), fine.shape)
    world = affine_fine @ np.array([*peak, 1.0])
    assert world[:3] == pytest.approx([2.0, 4.0, 6.0], abs=1.0)   # the bright voxel stays at (2, 4, 6) mm
    with pytest.raises(ValueError, match="orientation='LPS'"):
        formats.load_nifti(tmp_path / "ras.nii.gz", orientation="LPS")
    with pytest.raises(ValueError, match="positive millimetres"):
        formats.load_nifti(tmp_path / "ras.nii.gz", spacing=0)


def test_cohort_of_mixed_voxel_sizes_is_refused_until_resampled(tmp_path):
    import nibabel as nib
    import pandas as pd

    folder = tmp_path / "cohort"
    folder.mkdir()
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(folder / "a.nii.gz"))
    # 15 voxels of 1 mm span the same 14 mm between voxel centres as 8 voxels of 2 mm
    nib.save(nib.Nifti1Image(np.ones((15, 15, 15), np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), str(folder / "b.nii.gz"))
    pd.DataFrame({"subject": ["a", "b"], "fev1": [2.5, 3.0]}).to_csv(folder / "participants.csv", index=False)
    with pytest.raises(ValueError, match="b has voxels of .*pass spacing"):
        formats.load_cohort(folder)
    volumes, table, spacing = formats.load_cohort(folder, orientation="RAS", spacing=2.0)
    assert spacing == (2.0, 2.0, 2.0) and volumes.shape[0] == 2 and len(table) == 2
