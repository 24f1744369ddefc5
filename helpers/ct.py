"""CT and MRI volume I/O: NIfTI (nibabel) and DICOM (pydicom), with checks that name the problem."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# ANTs registration gives the same numbers twice only on one ITK thread (measured: a multi-threaded SyN differs
# from run to run even with a fixed seed). ITK reads this variable when it builds its first filter, so it is set
# here, before any; a value the user set beforehand is kept.
ITK_THREADS = os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


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
    """A DICOM series (one file per slice) as a volume in HU, slices sorted along the slice normal.

    The files must form one series (one SeriesInstanceUID), slices are ordered by ImagePositionPatient projected on
    the normal of ImageOrientationPatient, and two slices at one position or an uneven spacing (> 1 % apart) are
    refused with the files named. Returns (volume Z×Y×X float32, spacing (z, y, x) mm)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder} holds no DICOM files.")
    slices = [load_dicom(f) for f in files]
    series = {str(getattr(s[2], "SeriesInstanceUID", "")) for s in slices}
    if len(series) > 1:
        raise ValueError(f"{folder} mixes {len(series)} series (SeriesInstanceUID); put one series per folder.")
    shapes = {s[0].shape for s in slices}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: slices of different sizes {sorted(shapes)}; one series per folder.")
    if len(slices) == 1:
        return slices[0][0][None], (1.0,) + slices[0][1]
    missing = [f.name for f, s in zip(files, slices) if not hasattr(s[2], "ImagePositionPatient")]
    if missing:
        raise ValueError(f"{folder}: {missing[:3]} have no ImagePositionPatient, so the slice order is unknown.")
    orientation = np.asarray(getattr(slices[0][2], "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([float(np.dot(normal, np.asarray(s[2].ImagePositionPatient, np.float64))) for s in slices])
    order = np.argsort(positions, kind="stable")
    gaps = np.diff(positions[order])
    if np.any(np.isclose(gaps, 0.0, atol=1e-4)):
        i = int(np.flatnonzero(np.isclose(gaps, 0.0, atol=1e-4))[0])
        raise ValueError(f"{folder}: {files[order[i]].name} and {files[order[i + 1]].name} lie at the same position "
                         f"({positions[order[i]]:.3f} mm along the slice normal); remove the duplicate slice.")
    dz = float(np.median(gaps))
    if np.any(np.abs(gaps - dz) > 0.01 * dz):
        raise ValueError(f"{folder}: uneven slice spacing ({gaps.min():.3f}–{gaps.max():.3f} mm; missing slices?); "
                         "resample the series to a regular grid first.")
    volume = np.stack([slices[i][0] for i in order])
    return volume, (dz,) + slices[0][1]


def ct_small_slice():
    """The real thoracic CT slice ``CT_small.dcm`` bundled with pydicom, in HU."""
    from pydicom.data import get_testdata_file

    return load_dicom(get_testdata_file("CT_small.dcm"))[0]


# ------------------------------------------------------------------------------- cohorts, templates, registration
# Volumes are handled as (z, y, x) arrays (axial slice = vol[z]); NIfTI stores (x, y, z), so writing and
# loading transpose, and the affine carries the voxel spacing in millimetres.
def to_nifti_axes(volume):
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))


def write_cohort(folder, volumes, table, spacing=(6.0, 6.0, 6.0), overwrite: bool = False):
    """Write every subject as ``<subject>.nii.gz`` and the table as ``participants.csv`` (BIDS-like).
    ``spacing`` is (z, y, x) in mm. The folder is written whole under a temporary name and renamed when complete;
    an existing cohort written by helpers is replaced only with ``overwrite``, and a folder helpers did not write
    (your own files) never."""
    from .cache import OWNED, NotOwnedError, building, is_owned, safe_name

    folder = Path(folder)
    volumes = np.asarray(volumes)
    if volumes.ndim != 4:
        raise ValueError(f"volumes of shape {volumes.shape}: expected subjects × z × y × x.")
    if "subject" not in getattr(table, "columns", ()):
        raise ValueError("table needs a 'subject' column (one id per volume, used as the file name).")
    if len(table) != len(volumes):
        raise ValueError(f"{len(volumes)} volumes but {len(table)} table rows; give one row per volume, in order.")
    subjects = [safe_name(str(s), "subject id") for s in table["subject"]]
    if len(set(subjects)) != len(subjects):
        raise ValueError("subject ids repeat; each volume needs its own id (it becomes the file name).")
    if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(f"spacing={tuple(spacing)}: give three positive voxel sizes (z, y, x) in mm.")
    if folder.exists():
        if not (is_owned(folder) or _legacy_cohort(folder)):
            raise NotOwnedError(f"{folder} exists and was not written by helpers; it is left as it is. Write the "
                                "cohort to a new folder.")
        if not overwrite:
            raise FileExistsError(f"{folder} already holds a cohort; pass overwrite=True or choose another folder.")
        if not is_owned(folder):      # recognised as ours: mark it, so that building() may replace it
            (folder / OWNED).write_text("built by helpers; a rebuild may replace this folder\n")
    sz, sy, sx = spacing
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-sx * volumes.shape[3] / 2, -sy * volumes.shape[2] / 2, -sz * volumes.shape[1] / 2]
    with building(folder) as tmp:
        for subject, volume in zip(subjects, volumes):
            save_nifti(tmp / f"{subject}.nii.gz", to_nifti_axes(volume.astype(np.float32)), affine)
        table.to_csv(tmp / "participants.csv", index=False)
    return folder


def _legacy_cohort(folder: Path) -> bool:
    """A cohort folder written by an older helpers (before the ownership marker): participants.csv and exactly
    one ``<subject>.nii.gz`` per row, nothing else."""
    import pandas as pd

    try:
        subjects = pd.read_csv(folder / "participants.csv")["subject"].astype(str)
    except Exception:  # noqa: BLE001 - anything unreadable is not a cohort we wrote
        return False
    expected = {"participants.csv"} | {f"{s}.nii.gz" for s in subjects}
    return {p.name for p in folder.iterdir()} == expected


def load_cohort(folder):
    """Read a cohort written by :func:`write_cohort` (or your own: one 3-D NIfTI per row of participants.csv,
    column ``subject``). Returns (volumes N×z×y×x float32, table, spacing (z, y, x))."""
    import pandas as pd

    folder = Path(folder)
    table_path = folder / "participants.csv"
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path} not found; a cohort folder needs participants.csv with a 'subject' "
                                "column and one <subject>.nii.gz per row.")
    table = pd.read_csv(table_path)
    if "subject" not in table:
        raise ValueError(f"{table_path} has no 'subject' column.")
    volumes, spacing = [], None
    for subject in table["subject"]:
        data, _, sp = load_nifti(folder / f"{subject}.nii.gz", ndim=3)
        volumes.append(np.transpose(data, (2, 1, 0)))
        spacing = spacing or sp[::-1]
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: volumes of different shapes {sorted(shapes)}; resample them to one grid first.")
    return np.stack(volumes), table, tuple(spacing)


class _Quiet:
    """Silence C-level stdout (ANTs prints 'wrote file to …' while building a template)."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)
        return self

    def __exit__(self, *exc):
        import os

        os.dup2(self._saved, 1)
        os.close(self._saved)
        os.close(self._null)
        return False


class _AntsSeed:
    """Make one ANTs call reproducible: seed its random metric sampling and run ITK on one thread.

    Measured (antspyx 0.6): a multi-threaded SyN gives other numbers on every run even with a fixed seed, and
    ANTs reads a seed of 0 as "seed from the clock", so the collection's seed s is passed as s + 1. The single
    ITK thread is set when this module is imported (see ITK_THREADS below)."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        import ants

        self._saved = ants.config._random_seed
        ants.config._random_seed = None if self.seed is None else int(self.seed) + 1

    def __exit__(self, *exc):
        import ants

        ants.config._random_seed = self._saved
        return False


def _ants_image(volume, spacing):
    import ants

    return ants.from_numpy(np.asarray(volume, np.float32), spacing=tuple(float(s) for s in spacing))


def build_template(volumes, spacing, sample_fraction: float = 0.1, iterations: int = 2,
                   type_of_transform: str = "SyN", seed: int = 0, min_subjects: int = 4):
    """A study-specific template (antspyx ``build_template``: average, register everyone to it, update, repeat)
    from a random ``sample_fraction`` of the subjects (at least ``min_subjects``). Returns (template, indices)."""
    import ants

    volumes = np.asarray(volumes)
    if volumes.ndim != 4:
        raise ValueError(f"volumes of shape {volumes.shape}: expected N×z×y×x.")
    n = len(volumes)
    size = min(n, max(min_subjects, int(round(sample_fraction * n))))
    idx = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    images = [_ants_image(volumes[i], spacing) for i in idx]
    with _Quiet(), _AntsSeed(seed):
        template = ants.build_template(image_list=images, iterations=iterations, type_of_transform=type_of_transform)
    return template.numpy().astype(np.float32), idx


def register_to_template(volumes, template, spacing, type_of_transform: str = "SyN", extra=None, drive=None,
                         progress: bool = True, seed: int | None = 0):
    """Register every volume to the template (antspyx ``registration``, SyN by default) and resample it there.

    ``drive``: optional N×z×y×x images that drive the registration instead of the volumes (e.g. lung masks,
    with a template built from them): disease changes lung density, and an intensity-driven registration
    then pulls dense diseased lung onto soft tissue. ``extra``: arrays carried along with the same
    transforms (nearest neighbour, e.g. lung masks). Returns (warped volumes, warped extra or None)."""
    import ants
    from tqdm.auto import tqdm

    volumes, template = np.asarray(volumes), np.asarray(template)
    if volumes.ndim != 4 or volumes.shape[1:] != template.shape:
        raise ValueError(f"the template is {template.shape} but the volumes are {volumes.shape[1:]}: build the "
                         "template from these volumes or resample them onto the template's grid first.")
    if drive is not None and np.shape(drive) != volumes.shape:
        raise ValueError(f"drive images {np.shape(drive)} do not match the volumes {volumes.shape}.")
    fixed = _ants_image(template, spacing)
    warped = np.empty_like(volumes, dtype=np.float32)
    warped_extra = None if extra is None else np.empty(np.shape(extra), np.float32)
    for i in tqdm(range(len(volumes)), desc=f"{type_of_transform} registration", disable=not progress,
                  leave=False):
        moving = _ants_image(volumes[i] if drive is None else drive[i], spacing)
        with _AntsSeed(seed):
            reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=type_of_transform)
        warped[i] = ants.apply_transforms(fixed=fixed, moving=_ants_image(volumes[i], spacing),
                                          transformlist=reg["fwdtransforms"], interpolator="linear",
                                          defaultvalue=float(volumes[i].min())).numpy()
        if extra is not None:
            warped_extra[i] = ants.apply_transforms(fixed=fixed, moving=_ants_image(extra[i], spacing),
                                                    transformlist=reg["fwdtransforms"],
                                                    interpolator="nearestNeighbor").numpy()
    return warped, warped_extra


def alignment_correlation(volumes, template, mask=None) -> np.ndarray:
    """Pearson correlation of each volume with the template (inside ``mask`` if given)."""
    volumes, template = np.asarray(volumes, np.float64), np.asarray(template, np.float64)
    sel = np.ones(template.shape, bool) if mask is None else np.asarray(mask, bool)
    t = template[sel]
    return np.array([np.corrcoef(v[sel], t)[0, 1] for v in volumes])
