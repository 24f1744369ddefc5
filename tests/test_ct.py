import numpy as np
import pytest

from helpers import ct


def test_nifti_roundtrip_keeps_affine_and_spacing(tmp_path):
    vol = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 1.5, 1.0])
    affine[:3, 3] = [10, -4, 2]
    path = ct.save_nifti(tmp_path / "v.nii.gz", vol, affine)
    data, aff, spacing = ct.load_nifti(path, ndim=3)
    np.testing.assert_allclose(data, vol)
    np.testing.assert_allclose(aff, affine)
    assert spacing == (2.0, 3.0, 1.5)
    with pytest.raises(FileExistsError, match="overwrite"):
        ct.save_nifti(path, vol, affine)


def test_nifti_bad_inputs(tmp_path):
    p4 = ct.save_nifti(tmp_path / "v4.nii.gz", np.zeros((3, 3, 3, 2), np.float32))
    with pytest.raises(ValueError, match="expected a 3-D volume"):
        ct.load_nifti(p4, ndim=3)
    vol = np.zeros((4, 4, 4), np.float32)
    vol[1, 1, 1] = np.nan
    pn = ct.save_nifti(tmp_path / "nan.nii.gz", vol)
    with pytest.raises(ValueError, match="non-finite"):
        ct.load_nifti(pn)
    (tmp_path / "junk.nii").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        ct.load_nifti(tmp_path / "junk.nii")


def test_dicom_slice_and_series(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    hu = ct.ct_small_slice()
    assert hu.shape == (128, 128) and hu.min() < -500 and hu.max() > 500   # air and bone in HU
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for i, z in enumerate([30.0, 10.0, 20.0]):      # written out of order on purpose
        ds = src.copy()
        ds.ImagePositionPatient = [0, 0, z]
        arr = ds.pixel_array.copy()
        arr[0, 0] = i
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"s{i}.dcm")
    vol, spacing = ct.load_dicom_series(folder)
    assert vol.shape == (3, 128, 128) and spacing[0] == 10.0
    slope, inter = float(src.RescaleSlope), float(src.RescaleIntercept)
    assert [vol[k, 0, 0] for k in range(3)] == [1 * slope + inter, 2 * slope + inter, 0 * slope + inter]
    with pytest.raises(FileNotFoundError, match="no DICOM"):
        ct.load_dicom_series(tmp_path / "empty")
