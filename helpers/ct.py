"""CT and MRI volume I/O: NIfTI (nibabel) and DICOM (pydicom), with checks that name the problem."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_nifti(path, ndim: int | None = None, allow_nonfinite: bool = False):
    """Load a NIfTI volume: returns (data float32, affine 4×4, voxel spacing).

    ``ndim`` demands a dimensionality (e.g. 3 for a CT volume, 4 for DWI); non-finite voxels are refused unless
    ``allow_nonfinite``."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NIfTI file {path} not found.")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for a bad header
        raise ValueError(f"{path} is not a readable NIfTI file ({err}).") from err
    data = np.asarray(img.dataobj, dtype=np.float32)
    if ndim is not None and data.ndim != ndim:
        raise ValueError(f"{path} has {data.ndim} dimensions {data.shape}; expected a {ndim}-D volume.")
    if not allow_nonfinite and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{path} has {bad} non-finite voxels (NaN/inf); clean them (e.g. np.nan_to_num) first.")
    spacing = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


def save_nifti(path, data, affine=None, spacing=None, overwrite: bool = False):
    """Write a volume as NIfTI; ``affine`` defaults to a diagonal from ``spacing`` (mm)."""
    import nibabel as nib

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    data = np.asarray(data)
    if affine is None:
        sp = spacing or (1.0,) * 3
        affine = np.diag(list(sp[:3]) + [1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64)), str(path))
    return path


def load_dicom(path):
    """One DICOM slice in Hounsfield units (RescaleSlope/Intercept applied) and its pixel spacing."""
    import pydicom

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"DICOM file {path} not found.")
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as err:
        raise ValueError(f"{path} is not a readable DICOM file ({err}).") from err
    if "PixelData" not in ds:
        raise ValueError(f"{path} holds no image (no PixelData element).")
    hu = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1.0)) + float(
        getattr(ds, "RescaleIntercept", 0.0))
    spacing = tuple(float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0)))
    return hu, spacing, ds


def load_dicom_series(folder):
    """A DICOM series (one file per slice) as a volume in HU, slices sorted along the patient axis.

    Returns (volume Z×Y×X float32, spacing (z, y, x) mm)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder} holds no DICOM files.")
    slices = [load_dicom(f) for f in files]
    shapes = {s[0].shape for s in slices}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: slices of different sizes {sorted(shapes)}; one series per folder.")
    positions = [float(getattr(s[2], "ImagePositionPatient", [0, 0, i])[2]) for i, s in enumerate(slices)]
    order = np.argsort(positions)
    volume = np.stack([slices[i][0] for i in order])
    dz = float(np.median(np.diff(np.sort(positions)))) if len(slices) > 1 else 1.0
    return volume, (abs(dz) or 1.0,) + slices[0][1]


def ct_small_slice():
    """The real thoracic CT slice ``CT_small.dcm`` bundled with pydicom, in HU."""
    from pydicom.data import get_testdata_file

    return load_dicom(get_testdata_file("CT_small.dcm"))[0]
