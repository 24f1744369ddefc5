"""The papers' file formats: whole-slide images (SVS / pyramidal TIFF, optionally through OpenSlide) and image
files, PanNuke folds, DiagSet-like class folders, DigestPath image/mask pairs; NIfTI and DICOM volumes and cohort
folders (one NIfTI per subject + ``participants.csv``). Every reader checks what it reads and names the file and
the fix when something is wrong; writers never overwrite what they did not write."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# DiagSet's seven classes (paper 001): acquisition artefact, normal tissue and five cancer grades
GRADES = ("A", "N", "R1", "R2", "R3", "R4", "R5")

GRADE_NAMES = {
    "A": "acquisition artefact", "N": "normal tissue", "R1": "Gleason-like 1", "R2": "Gleason-like 2",
    "R3": "Gleason-like 3", "R4": "Gleason-like 4", "R5": "Gleason-like 5",
}


def grade_index(name: str) -> int:
    """Index of a grade name in :data:`GRADES` (A, N, R1–R5); unknown names raise a clear error."""
    if not isinstance(name, str) or name.strip().upper() not in GRADES:
        raise ValueError(f"unknown grade {name!r}; the grades are {', '.join(GRADES)} (DiagSet's classes).")
    return GRADES.index(name.strip().upper())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path) -> np.ndarray:
    """Read an image file as uint8 RGB (H×W×3) (TIFF through tifffile, others through imageio)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image {path} not found.")
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".svs"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            import imageio.v3 as iio

            arr = iio.imread(path)
    except Exception as err:  # noqa: BLE001 - each reader raises its own types for a broken file
        raise ValueError(f"{path} cannot be read as an image ({type(err).__name__}: {err}); the file is truncated "
                         "or not an image.") from None
    return np.asarray(arr)


def wsi_info(path, backend: str = "auto") -> dict:
    """Pyramid levels (height, width, 3) of a whole-slide image and its pixel size in µm (None when the file does not
    say), through :class:`helpers.data.slides.Slide`."""
    from .slides import Slide

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide {path} not found.")
    with Slide(path, backend=backend) as slide:
        return {"levels": [(h, w, 3) for w, h in slide.level_dimensions], "mpp": slide.file_mpp}


def read_wsi(path, level: int = 0, region=None, backend: str = "auto") -> np.ndarray:
    """Read a whole-slide image level, or a region ``(row, col, height, width)`` of it in that level's pixels, as
    RGB uint8. Lazy: :class:`helpers.data.slides.Slide` decodes only the tiles under the region (OpenSlide for the
    vendor formats when installed, tifffile's Zarr view for TIFF / OME-TIFF); a whole level is refused above 64 M
    pixels — read regions of large slides, or open them with ``Slide`` directly."""
    from .slides import Slide

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"slide {path} not found; point REAL_SLIDE_PATH (the notebooks' parameter) or the "
                                "path you pass at an existing .svs/.tif file.")
    with Slide(path, backend=backend) as slide:
        if region is None:
            return slide.read_level(level)
        r, c, hh, ww = (int(v) for v in region)
        ds = slide.level_downsamples[slide.check_level(level)]
        return slide.read_region((int(round(c * ds)), int(round(r * ds))), level, (ww, hh))


# ------------------------------------------------------------------------------- the papers' patch data sets
# ------------------------------------------------------------------------------- the papers' real formats
PANNUKE_CHANNELS = ("neoplastic", "inflammatory", "connective", "dead", "epithelial", "background")


def to_pannuke_masks(instances, types):
    """Our instance + type maps → PanNuke's N×H×W×6 masks (instance ids per type channel, channel 5 =
    background). Neoplastic nuclei go to channel 0, the simulator's non-neoplastic (stromal) nuclei to channel 2,
    connective / soft tissue — the channel paper 001 takes as its non-tumour mask."""
    instances, types = np.asarray(instances), np.asarray(types)
    if instances.shape != types.shape:
        raise ValueError(f"instances {instances.shape} and types {types.shape} differ; give both maps of the same "
                         "patches (N×H×W).")
    out = np.zeros(instances.shape + (6,), np.float32)
    out[..., 0] = np.where(types == 1, instances, 0)
    out[..., 2] = np.where(types == 2, instances, 0)
    out[..., 5] = (instances == 0).astype(np.float32)
    return out


PANNUKE_NON_NEOPLASTIC = {"connective": (2,), "all": (1, 2, 3, 4)}


def pannuke_binary_masks(masks, non_neoplastic: str = "connective"):
    """Paper 001's two targets from PanNuke masks: (neoplastic, non-neoplastic), each N×H×W bool. Paper 001's
    non-tumour mask is the connective / soft-tissue channel only (``non_neoplastic="connective"``); "all" takes
    every other nucleus type (inflammatory, connective, dead, epithelial)."""
    if non_neoplastic not in PANNUKE_NON_NEOPLASTIC:
        raise ValueError(f"non_neoplastic={non_neoplastic!r}; choose {' or '.join(map(repr, PANNUKE_NON_NEOPLASTIC))}.")
    masks = np.asarray(masks)
    if masks.ndim != 4 or masks.shape[-1] != 6:
        raise ValueError(f"masks of shape {masks.shape}: PanNuke masks are N×H×W×6 (5 nucleus types + background).")
    channels = list(PANNUKE_NON_NEOPLASTIC[non_neoplastic])
    return masks[..., 0] > 0, (masks[..., channels] > 0).any(axis=-1)


def write_pannuke_fold(folder, images, masks, types):
    """Write a fold in PanNuke's layout (images.npy, masks.npy, types.npy); refuses to overwrite."""
    images, masks, types = np.asarray(images), np.asarray(masks), np.asarray(types)
    if images.ndim != 4 or images.shape[-1] != 3 or masks.ndim != 4 or masks.shape[-1] != 6:
        raise ValueError(f"images {images.shape} and masks {masks.shape}: PanNuke stores N×H×W×3 images and N×H×W×6 "
                         "masks (to_pannuke_masks builds them).")
    if images.shape[:3] != masks.shape[:3] or len(types) != len(images):
        raise ValueError(f"images {images.shape[:3]}, masks {masks.shape[:3]} and {len(types)} types: one mask and one "
                         "tissue type per image, on the same grid.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("images.npy", "masks.npy", "types.npy"):
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name} exists; choose an empty folder (nothing is overwritten).")
    np.save(folder / "images.npy", np.asarray(images))
    np.save(folder / "masks.npy", np.asarray(masks))
    np.save(folder / "types.npy", np.asarray(types))


def _pannuke_paths(folder: Path) -> dict:
    """The three arrays of a fold: flat (images.npy, masks.npy, types.npy in one folder) or PanNuke's release
    layout (``Fold 1/images/fold1/{images,types}.npy`` and ``Fold 1/masks/fold1/masks.npy``)."""
    flat = {n: folder / f"{n}.npy" for n in ("images", "masks", "types")}
    if any(p.exists() for p in flat.values()):
        return flat
    found = {}
    for name, sub in (("images", "images"), ("types", "images"), ("masks", "masks")):
        hits = sorted((folder / sub).glob(f"fold*/{name}.npy")) or sorted(folder.glob(f"*/fold*/{name}.npy"))
        if len(hits) > 1:
            raise ValueError(f"{folder} holds {len(hits)} {name}.npy files ({', '.join(str(h) for h in hits)}); "
                             "give one fold's folder.")
        found[name] = hits[0] if hits else flat[name]
    return found


def load_pannuke_fold(folder, mmap: bool = True):
    """Load a PanNuke fold: images.npy (N×256×256×3), masks.npy (N×256×256×6), types.npy (N tissue names), from
    one folder or in the release layout (``Fold 1/images/fold1/images.npy``, ``…/types.npy``,
    ``Fold 1/masks/fold1/masks.npy``; pass the ``Fold 1`` folder).

    Shapes and dtypes are checked, so a swapped or truncated file is reported by name instead of failing
    later inside training."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"PanNuke fold folder {folder} not found.")
    paths = _pannuke_paths(folder)
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"PanNuke fold incomplete, missing: {', '.join(missing)}. A fold folder holds "
                                f"images.npy, masks.npy and types.npy, flat or as in the PanNuke release "
                                f"(Fold 1/images/fold1/images.npy, Fold 1/images/fold1/types.npy, "
                                f"Fold 1/masks/fold1/masks.npy).")
    mode = "r" if mmap else None

    def load(name, mmap_mode):
        try:
            return np.load(paths[name], mmap_mode=mmap_mode, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{paths[name]} cannot be read as a NumPy array ({err}); the file is truncated or not "
                             "a .npy file (PanNuke's release stores images.npy, masks.npy and types.npy).") from None

    images, masks, types = load("images", mode), load("masks", mode), load("types", None)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{paths['images']}: expected N×H×W×3 RGB images, got shape {images.shape}.")
    if masks.ndim != 4 or masks.shape[-1] != 6:
        raise ValueError(f"{paths['masks']}: expected N×H×W×6 masks (5 nucleus types + background), "
                         f"got shape {masks.shape}.")
    if images.shape[:3] != masks.shape[:3]:
        raise ValueError(f"images {images.shape[:3]} and masks {masks.shape[:3]} differ in N×H×W.")
    if len(types) != len(images):
        raise ValueError(f"types.npy has {len(types)} entries for {len(images)} images.")
    for name, arr in (("images", images), ("masks", masks)):
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{paths[name]}: dtype {arr.dtype} is not numeric; PanNuke stores numbers.")
    if np.issubdtype(images.dtype, np.floating) and float(np.max(images[: min(8, len(images))])) <= 1.0:
        raise ValueError(f"{paths['images']}: values look like 0–1 floats; PanNuke images are 0–255.")
    return {"images": images, "masks": masks, "types": types}


def load_diagset_folder(root):
    """Index a DiagSet-like folder: one sub-folder per class named A, N, R1 … R5, image files inside.

    Returns (paths, labels) with labels indexing :data:`GRADES`. Unknown class folders are an error."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; point it at a folder with sub-folders A, N, R1 … R5.")
    paths, labels = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        gi = grade_index(sub.name)
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [gi] * len(files)
    if not paths:
        raise FileNotFoundError(f"no images under {root}; expected {root}/<class>/<image>.png with classes "
                                f"{', '.join(GRADES)}.")
    return paths, np.array(labels, np.int64)


def load_diagset_blobs(root):
    """Index DiagSet-A's release layout without loading it: ``root`` is ``blobs/S/20x`` (or any folder laid out the
    same way), holding ``<slide>/<class>/<blob>.npy`` where each blob is an N × 256 × 256 × 3 uint8 array of patches
    (paper 001 reads it so). Class folders are A, N, R1 … R5; other folders are skipped, as the thesis's code does.

    Returns a DataFrame (path, slide, class, label, n_patches); read patches with :func:`read_diagset_patches`.
    A blob that is not a 4-D RGB uint8 array is refused with its name."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DiagSet-A folder {root} not found; give the blobs/S/20x folder of the release.")
    rows = []
    for blob in sorted(root.glob("*/*/*.npy")):
        slide, grade = blob.parent.parent.name, blob.parent.name
        if grade not in GRADES:
            continue
        try:
            patches = np.load(blob, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{blob} cannot be read as a NumPy array ({err}); the blob is truncated or not a "
                             ".npy file.") from None
        if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
            raise ValueError(f"{blob}: expected N × H × W × 3 uint8 patches (a DiagSet-A blob), got shape "
                             f"{patches.shape} {patches.dtype}.")
        rows.append({"path": str(blob), "slide": slide, "class": grade, "label": grade_index(grade),
                     "n_patches": int(patches.shape[0])})
    if not rows:
        raise FileNotFoundError(f"{root} holds no <slide>/<class>/*.npy blobs with a class of {', '.join(GRADES)}; "
                                "give DiagSet-A's blobs/S/20x folder.")
    return pd.DataFrame(rows)


def read_diagset_patches(path, indices=None) -> np.ndarray:
    """Patches of one DiagSet-A blob (all, or the given indices), read through a memory map."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DiagSet blob {path} not found (or not a file); give one <slide>/<class>/*.npy file "
                                "as listed by load_diagset_blobs.")
    try:
        patches = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise ValueError(f"{path} is not a readable .npy blob of patches ({type(err).__name__}: {err}); the file "
                         "is truncated or in another format.") from None
    if patches.ndim != 4 or patches.shape[-1] != 3:
        raise ValueError(f"{path} holds an array of shape {patches.shape}; a DiagSet blob is N × H × W × 3.")
    return np.asarray(patches if indices is None else patches[np.asarray(indices, int)])


PATCH_TABLE_TARGETS = ("md", "fa", "cc")


def load_patch_table(csv_path, image_dir=None, targets=PATCH_TABLE_TARGETS):
    """Paper 003's data as a table: a CSV with one row per histology patch, an ``image`` column (file name,
    relative to ``image_dir``, by default the CSV's folder), the targets (``md``, ``fa``, ``cc``) and optional
    ``sample`` (the tumour it comes from, for splits by sample). Returns (images N×H×W×3 uint8, table). Missing
    columns, missing or unreadable images, patches of different sizes and non-finite targets are refused with
    the row named."""
    import pandas as pd

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"patch table {csv_path} not found.")
    try:
        table = pd.read_csv(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as err:
        raise ValueError(f"csv_path {csv_path} cannot be read as a CSV table ({type(err).__name__}: {err}); give the "
                         "patch table, one row per patch with an 'image' column and the targets.") from None
    needed = ["image", *targets]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{csv_path.name} lacks column(s) {missing}; it needs {needed} (plus 'sample' if the "
                         f"patches come from several tumours). Columns found: {list(table.columns)}.")
    values = table[list(targets)].apply(pd.to_numeric, errors="coerce")
    bad = values.index[~np.isfinite(values.to_numpy(float)).all(1)]
    if len(bad):
        raise ValueError(f"{csv_path.name}: row {int(bad[0]) + 2} (image {table['image'].iloc[bad[0]]!r}) has a "
                         f"missing or non-numeric target in {list(targets)}.")
    folder = Path(image_dir) if image_dir is not None else csv_path.parent
    images = []
    for i, name in enumerate(table["image"]):
        path = folder / str(name)
        if not path.is_file():
            raise FileNotFoundError(f"{csv_path.name} row {i + 2}: image {path} not found.")
        rgb = read_image(path)
        if rgb.ndim != 3 or rgb.shape[-1] < 3:
            raise ValueError(f"{path}: expected an RGB patch, got shape {rgb.shape}.")
        if images and rgb.shape[:2] != images[0].shape[:2]:
            raise ValueError(f"{path} is {rgb.shape[:2]} px but the first patch is {images[0].shape[:2]}; resize the "
                             "patches to one size.")
        images.append(np.asarray(rgb[..., :3], np.uint8))
    table = table.copy()
    table[list(targets)] = values
    return np.stack(images), table

def load_digestpath_pairs(folder, mask_suffix: str = "_mask"):
    """Pair DigestPath images with their masks (``x.jpg`` with ``x_mask.jpg``); returns a list of pairs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of DigestPath image/mask pairs.")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and
                    not p.stem.endswith(mask_suffix))
    pairs, unpaired = [], []
    for img in images:
        cands = [img.with_name(img.stem + mask_suffix + s) for s in (img.suffix, ".png", ".jpg")]
        mask = next((c for c in cands if c.exists()), None)
        (pairs.append((img, mask)) if mask else unpaired.append(img.name))
    if unpaired:
        raise FileNotFoundError(f"{len(unpaired)} image(s) without a '{mask_suffix}' mask, e.g. {unpaired[0]}.")
    if not pairs:
        raise FileNotFoundError(f"no image/mask pairs in {folder}.")
    return pairs


def load_digestpath_pair(image_path, mask_path):
    img = read_image(image_path)[..., :3]
    mask = read_image(mask_path)
    mask = mask[..., 0] if mask.ndim == 3 else mask
    if mask.shape != img.shape[:2]:
        raise ValueError(f"{mask_path}: mask {mask.shape} does not match image {img.shape[:2]}.")
    return img, mask > 127


# ---------------------------------------------------------------------------------------- CT / MRI volumes
def load_nifti(path, ndim: int | None = None, allow_nonfinite: bool = False, orientation: str | None = None,
               spacing=None, order: int = 1):
    """Load a NIfTI volume: returns (data float32, affine 4×4, voxel spacing).

    ``ndim`` demands a dimensionality (e.g. 3 for a CT volume, 4 for DWI); non-finite voxels are refused unless
    ``allow_nonfinite``. ``orientation="RAS"`` reorients the voxel axes to the closest canonical orientation
    (nibabel's ``as_closest_canonical``: first axis towards the patient's Right→left… as RAS+), so volumes stored
    in different orientations line up; ``spacing`` (mm, one value or one per axis) resamples to that voxel size
    (nibabel.processing, spline ``order``). The returned affine describes the returned array."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NIfTI file {path} not found.")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises several types for a bad header
        raise ValueError(f"{path} is not a readable NIfTI file ({err}).") from err
    if orientation not in (None, "RAS"):
        raise ValueError(f"orientation={orientation!r}; use 'RAS' (reorient to the closest canonical axes) or None.")
    if orientation == "RAS":
        img = nib.as_closest_canonical(img)
    if spacing is not None:
        import nibabel.processing

        voxel = np.broadcast_to(np.asarray(spacing, float), (3,))
        if not (voxel > 0).all():
            raise ValueError(f"spacing={spacing}: voxel sizes are positive millimetres.")
        if len(img.shape) != 3:
            raise ValueError(f"{path} is {len(img.shape)}-D; resampling to a spacing takes a 3-D volume.")
        img = nibabel.processing.resample_to_output(img, voxel_sizes=tuple(voxel), order=int(order))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if ndim is not None and data.ndim != ndim:
        raise ValueError(f"{path} has {data.ndim} dimensions {data.shape}; expected a {ndim}-D volume.")
    if not allow_nonfinite and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ValueError(f"{path} has {bad} non-finite voxels (NaN/inf); clean them (e.g. np.nan_to_num) first.")
    spacing = tuple(float(z) for z in img.header.get_zooms()[: data.ndim])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


def load_nrrd(path):
    """Load an NRRD volume (pynrrd): returns (data float32 in the file's axis order, affine 4×4, voxel spacing),
    like :func:`load_nifti`. The affine maps voxel indices to RAS millimetres as nibabel's do: NRRD files written
    in LPS space (most CT exports, e.g. 3D Slicer's) have their first two world axes negated."""
    import nrrd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"NRRD file {path} not found.")
    try:
        data, header = nrrd.read(str(path))
    except Exception as err:  # pynrrd raises its own error type and numpy's for a bad header or payload
        raise ValueError(f"{path} is not a readable NRRD file ({err}).") from err
    directions = header.get("space directions")
    if directions is None or data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume with 'space directions' in its header, got {data.ndim}-D "
                         f"data and header keys {sorted(header)}.")
    directions = np.asarray(directions, float)
    affine = np.eye(4)
    affine[:3, :3] = directions.T               # column j: the world step of one voxel along axis j
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), float)
    space = str(header.get("space", "right-anterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    elif space not in ("right-anterior-superior", "ras"):
        raise ValueError(f"{path}: space {space!r} is neither RAS nor LPS; reorient it in 3D Slicer or ITK first.")
    spacing = np.linalg.norm(directions, axis=1)
    return data.astype(np.float32), affine, spacing


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


DICOM_IDENTITY_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def load_dicom_series(folder, return_affine: bool = False):
    """A DICOM series (one file per slice) as a volume in HU, slices sorted along the slice normal.

    The files must form one series of one patient (one value of each of DICOM_IDENTITY_TAGS, carried by every
    slice or by none; one ImageOrientationPatient; positions on one line along its normal), slices are ordered by
    ImagePositionPatient projected on the normal of ImageOrientationPatient, and two slices at one position or an uneven spacing (> 1 % apart) are
    refused with the files named. Returns (volume Z×Y×X float32, spacing (z, y, x) mm); with ``return_affine``
    also the 4×4 affine from voxel indices (z, y, x) to RAS millimetres, as nibabel's (DICOM's LPS with its first
    two axes negated), so that the patient's orientation survives: ``helpers.methods.sarcoidosis.registration``
    puts such a volume on a cohort's grid with it."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder} holds no DICOM files.")
    slices = [load_dicom(f) for f in files]
    # one patient, one study, one series, one frame of reference: every identity tag that any slice carries must be
    # carried by all, with one value (without SeriesInstanceUID, slices of two patients would otherwise be stacked)
    for tag in DICOM_IDENTITY_TAGS:
        values = [str(getattr(s[2], tag, "") or "") for s in slices]
        distinct = sorted({v for v in values if v})
        if len(distinct) > 1:
            raise ValueError(f"{folder} mixes {len(distinct)} values of {tag} ({', '.join(distinct[:3])}); put one "
                             "series of one patient per folder.")
        if distinct and not all(values):
            missing = [f.name for f, v in zip(files, values) if not v]
            raise ValueError(f"{folder}: {len(missing)} of {len(files)} files have no {tag} ({', '.join(missing[:3])})"
                             f" while the others do, so they may belong to another scan; remove them or complete the tag.")
    shapes = {s[0].shape for s in slices}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: slices of different sizes {sorted(shapes)}; one series per folder.")
    if len(slices) == 1:
        if return_affine:
            raise ValueError(f"{folder} holds a single slice: its orientation along the slice normal is unknown, so "
                             "there is no 3-D affine (load it with return_affine=False).")
        return slices[0][0][None], (1.0,) + slices[0][1]
    missing = [f.name for f, s in zip(files, slices) if not hasattr(s[2], "ImagePositionPatient")]
    if missing:
        raise ValueError(f"{folder}: {missing[:3]} have no ImagePositionPatient, so the slice order is unknown.")
    orientations = np.array([np.asarray(getattr(s[2], "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), np.float64)
                             for s in slices])
    odd = np.flatnonzero(~np.all(np.isclose(orientations, orientations[0], atol=1e-4), axis=1))
    if odd.size:
        raise ValueError(f"{folder}: {files[odd[0]].name} has another ImageOrientationPatient than {files[0].name}; "
                         "slices of one series share one orientation (another scan in the folder?).")
    orientation = orientations[0]
    normal = np.cross(orientation[:3], orientation[3:])
    corners = np.array([np.asarray(s[2].ImagePositionPatient, np.float64) for s in slices])
    offsets = corners - corners[0]
    in_plane = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    pixel = float(min(slices[0][1]))
    if np.any(in_plane > 0.5 * pixel):
        k = int(np.argmax(in_plane))
        raise ValueError(f"{folder}: {files[k].name} is shifted {in_plane[k]:.1f} mm within the slice plane from "
                         f"{files[0].name}; the slices do not stack along one axis (another scan in the folder?).")
    positions = corners @ normal
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
    if not return_affine:
        return volume, (dz,) + slices[0][1]
    # columns: one step along z (the sorted normal), y (down the rows) and x (along a row), in LPS; PixelSpacing is
    # (between rows, between columns)
    row_step, column_step = slices[0][1]
    affine = np.eye(4)
    affine[:3, 0] = normal * dz
    affine[:3, 1] = orientation[3:] * row_step
    affine[:3, 2] = orientation[:3] * column_step
    affine[:3, 3] = corners[order[0]]
    return volume, (dz,) + slices[0][1], np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


# ------------------------------------------------------------------------------- cohorts, templates, registration
# Volumes are handled as (z, y, x) arrays (axial slice = vol[z]); NIfTI stores (x, y, z), so writing and
# loading transpose, and the affine carries the voxel spacing in millimetres.
def to_nifti_axes(volume):
    """A Z × Y × X volume (the collection's axis order) as X × Y × Z (NIfTI's), and back: the axes reversed."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume of shape {volume.shape}: expected one 3-D volume (Z × Y × X); for a cohort pass "
                         "one subject's volume at a time.")
    return np.ascontiguousarray(np.transpose(volume, (2, 1, 0)))


def write_cohort(folder, volumes, table, spacing=(6.0, 6.0, 6.0), overwrite: bool = False):
    """Write every subject as ``<subject>.nii.gz`` and the table as ``participants.csv`` (BIDS-like).
    ``spacing`` is (z, y, x) in mm. The folder is written whole under a temporary name and renamed when complete;
    an existing cohort written by helpers is replaced only with ``overwrite``, and a folder helpers did not write
    (your own files) never."""
    from ..cache import OWNED, NotOwnedError, building, is_owned, safe_name

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
    if not np.issubdtype(volumes.dtype, np.number):
        raise ValueError(f"volumes of dtype {volumes.dtype}: give numbers (HU or intensities).")
    broken = [s for s, v in zip(subjects, volumes) if not np.isfinite(v).all()]
    if broken:      # load_cohort refuses such volumes: refuse them here, before anything is written
        raise ValueError(f"volumes of subject(s) {', '.join(broken[:5])} contain NaN or inf; replace them (e.g. "
                         "np.nan_to_num with the background value) before writing the cohort.")
    if folder.exists():
        # only a folder with helpers' marker is ours: a folder of scans that merely looks like a cohort (a
        # participants.csv and one NIfTI per row) may be the user's own data
        if not is_owned(folder):
            raise NotOwnedError(f"{folder} exists and was not written by helpers (no {OWNED} marker); it is left as "
                                "it is. Write the cohort to a new folder.")
        if not overwrite:
            raise FileExistsError(f"{folder} already holds a cohort; pass overwrite=True or choose another folder.")
    sz, sy, sx = spacing
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-sx * volumes.shape[3] / 2, -sy * volumes.shape[2] / 2, -sz * volumes.shape[1] / 2]
    with building(folder) as tmp:
        for subject, volume in zip(subjects, volumes):
            save_nifti(tmp / f"{subject}.nii.gz", to_nifti_axes(volume.astype(np.float32)), affine)
        table.to_csv(tmp / "participants.csv", index=False)
    return folder


def load_cohort(folder, orientation: str | None = None, spacing=None):
    """Read a cohort written by :func:`write_cohort` (or your own: one 3-D NIfTI per row of participants.csv,
    column ``subject``). Returns (volumes N×z×y×x float32, table, spacing (z, y, x)). Scans from different
    scanners: ``orientation="RAS"`` and ``spacing`` (mm) reorient and resample each on reading
    (:func:`load_nifti`); without them the volumes must already share one grid and one voxel size."""
    import pandas as pd

    folder = Path(folder)
    table_path = folder / "participants.csv"
    if not table_path.exists():
        raise FileNotFoundError(f"{table_path} not found; a cohort folder needs participants.csv with a 'subject' "
                                "column and one <subject>.nii.gz per row.")
    table = pd.read_csv(table_path)
    if "subject" not in table:
        raise ValueError(f"{table_path} has no 'subject' column.")
    volumes, spacings = [], []
    from ..cache import safe_name

    if table["subject"].isna().any():
        row = int(np.flatnonzero(table["subject"].isna().to_numpy())[0])
        raise ValueError(f"subject id in {table_path.name} is empty in row {row + 1}; give every row the id of its "
                         "<subject>.nii.gz.")
    for subject in table["subject"]:
        # an id such as ../other/scan would read a file outside the cohort folder
        subject = safe_name(str(subject), f"subject id in {table_path.name}")
        data, _, sp = load_nifti(folder / f"{subject}.nii.gz", ndim=3, orientation=orientation, spacing=spacing)
        volumes.append(np.transpose(data, (2, 1, 0)))
        spacings.append(tuple(sp[::-1]))
    differ = [(s, sp) for s, sp in zip(table["subject"], spacings) if not np.allclose(sp, spacings[0], rtol=1e-3)]
    if differ:
        raise ValueError(f"{folder}: {differ[0][0]} has voxels of {differ[0][1]} mm but {table['subject'].iloc[0]} of "
                         f"{spacings[0]} mm; pass spacing=… (mm) to resample every scan on reading.")
    shapes = {v.shape for v in volumes}
    if len(shapes) != 1:
        raise ValueError(f"{folder}: volumes of different shapes {sorted(shapes)}; resample them to one grid first.")
    return np.stack(volumes), table, spacings[0]
