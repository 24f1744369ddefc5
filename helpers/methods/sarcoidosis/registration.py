"""Image registration of paper 004 §5 with ANTs (antspyx): a study template built from a share of the subjects,
every subject registered to it (SyN by default), and the voxel-wise correlation that says how well they align.

ANTs registration gives the same numbers twice only on one ITK thread (measured: a multi-threaded SyN differs from
run to run even with a fixed seed). ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` when it builds its first
filter, so it is set when this module is imported, before any; a value the user set beforehand is kept."""
from __future__ import annotations

import os

import numpy as np

ITK_THREADS = os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def _ants():
    """antspyx, an optional dependency (only notebook 07's §5 uses it), with the install command when missing."""
    try:
        import ants
    except ImportError as err:
        raise ImportError("antspyx is needed for the registration of notebook 07 (§5): pip install -e '.[ct]' "
                          "(`make install` installs every extra).") from err
    return ants


class _Quiet:
    """Silence ANTs while it builds a template: its C++ code writes 'wrote file to …' to file descriptor 1 and
    antspyx's Python code prints its transform lists (in Jupyter those go to ``sys.stdout``, not descriptor 1)."""

    def __enter__(self):
        import contextlib
        import io
        import os
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        self._null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self._null, 1)
        self._python = contextlib.redirect_stdout(io.StringIO())
        self._python.__enter__()
        return self

    def __exit__(self, *exc):
        import os

        self._python.__exit__(*exc)
        os.dup2(self._saved, 1)
        os.close(self._saved)
        os.close(self._null)
        return False


class _AntsSeed:
    """Make one ANTs call reproducible: seed its random metric sampling and run ITK on one thread.

    Measured (antspyx 0.6): a multi-threaded SyN gives other numbers on every run even with a fixed seed, and
    ANTs reads a seed of 0 as "seed from the clock", so the collection's seed s is passed as s + 1. The single
    ITK thread is set when this module is imported (:data:`ITK_THREADS`)."""

    def __init__(self, seed):
        self.seed = seed

    def __enter__(self):
        ants = _ants()

        self._saved = ants.config._random_seed
        ants.config._random_seed = None if self.seed is None else int(self.seed) + 1

    def __exit__(self, *exc):
        ants = _ants()

        ants.config._random_seed = self._saved
        return False


def _ants_image(volume, spacing):
    ants = _ants()

    return ants.from_numpy(np.asarray(volume, np.float32), spacing=tuple(float(s) for s in spacing))


def build_template(volumes, spacing, sample_fraction: float = 0.1, iterations: int = 2,
                   type_of_transform: str = "SyN", seed: int = 0, min_subjects: int = 4, tolerance: float | None = None):
    """A study-specific template (antspyx ``build_template``: average, register everyone to it, update, repeat)
    from a random ``sample_fraction`` of the subjects (at least ``min_subjects``).

    ``iterations``: at most this many update rounds. ``tolerance``: the convergence criterion — stop after the first
    round that changes the template by less than this fraction (root-mean-square change over the root-mean-square of
    the previous template); None runs every round. The rounds are antspyx's own, one call each with the last
    template as the start, which gives the same template as one call with that many iterations.
    Returns (template, indices, changes): ``changes[r]`` is round r's relative change, so ``len(changes)`` rounds ran
    and the template converged when ``tolerance`` is given and ``changes[-1] < tolerance``."""
    ants = _ants()

    volumes = np.asarray(volumes)
    if volumes.ndim != 4:
        raise ValueError(f"volumes of shape {volumes.shape}: expected N×z×y×x.")
    if int(iterations) < 1:
        raise ValueError(f"iterations = {iterations}: give at least 1 round of template updates.")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance = {tolerance}: give a relative change above 0 (e.g. 0.01), or None to run "
                         "every round.")
    n = len(volumes)
    size = min(n, max(min_subjects, int(round(sample_fraction * n))))
    idx = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    images = [_ants_image(volumes[i], spacing) for i in idx]
    # round 1 starts, as antspyx does, from the plain average of the images
    previous, template, changes = volumes[idx].astype(np.float64).mean(0), None, []
    with _Quiet(), _AntsSeed(seed):
        for _ in range(int(iterations)):
            if template is not None:
                previous = template.numpy()
            template = ants.build_template(initial_template=template, image_list=images, iterations=1,
                                           type_of_transform=type_of_transform)
            rms = float(np.sqrt(np.mean(previous.astype(np.float64) ** 2)))
            change = float(np.sqrt(np.mean((template.numpy().astype(np.float64) - previous) ** 2)))
            changes.append(change / rms if rms > 0 else float("inf"))
            if tolerance is not None and changes[-1] < tolerance:
                break
    return template.numpy().astype(np.float32), idx, changes


def register_to_template(volumes, template, spacing, type_of_transform: str = "SyN", extra=None, drive=None,
                         progress: bool = True, seed: int | None = 0, points=None):
    """Register every volume to the template (antspyx ``registration``, SyN by default) and resample it there.

    ``drive``: optional N×z×y×x images that drive the registration instead of the volumes (e.g. lung masks,
    with a template built from them): disease changes lung density, and an intensity-driven registration
    then pulls dense diseased lung onto soft tissue. ``extra``: arrays carried along with the same
    transforms (nearest neighbour, e.g. lung masks). ``points``: optional N × L × 3 voxel positions (landmarks)
    carried along too, each as a 3 × 3 × 3 label, their template-space position the centroid of what arrives (NaN
    when a point is lost; points closer than 3 voxels overwrite each other's blocks). Returns (warped volumes, warped extra or None), and the N × L × 3 warped points last when
    ``points`` is given."""
    ants = _ants()
    from tqdm.auto import tqdm

    volumes, template = np.asarray(volumes), np.asarray(template)
    if volumes.ndim != 4 or volumes.shape[1:] != template.shape:
        raise ValueError(f"the template is {template.shape} but the volumes are {volumes.shape[1:]}: build the "
                         "template from these volumes or resample them onto the template's grid first.")
    if drive is not None and np.shape(drive) != volumes.shape:
        raise ValueError(f"drive images {np.shape(drive)} do not match the volumes {volumes.shape}.")
    if points is not None:
        points = np.asarray(points)
        if points.ndim != 3 or points.shape[0] != len(volumes) or points.shape[2] != 3 or \
                not ((points >= 0) & (points < np.asarray(volumes.shape[1:]))).all():
            raise ValueError(f"points of shape {points.shape}: give N × L × 3 voxel indices inside the volumes "
                             f"{volumes.shape[1:]}, one row of L points per volume.")
        warped_points = np.full(points.shape, np.nan)
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
        if points is not None:
            # each point as a 3 × 3 × 3 block: a single voxel can fall between the template's grid points
            labels = np.zeros(volumes.shape[1:], np.float32)
            for j, point in enumerate(points[i]):
                labels[tuple(slice(max(c - 1, 0), c + 2) for c in point)] = j + 1
            arrived = ants.apply_transforms(fixed=fixed, moving=_ants_image(labels, spacing),
                                            transformlist=reg["fwdtransforms"],
                                            interpolator="nearestNeighbor").numpy()
            for j in range(points.shape[1]):
                where = np.argwhere(np.isclose(arrived, j + 1))
                if len(where):
                    warped_points[i, j] = where.mean(0)
    return (warped, warped_extra) + ((warped_points,) if points is not None else ())


def landmark_spread(points) -> np.ndarray:
    """Per landmark, the mean distance (voxels) of the subjects' positions (N × L × 3) from their mean position: 0
    when every subject has the landmark at one voxel. Before registration it measures the subjects' anatomical
    variation, after it what the registration left; lost points (NaN) are left out."""
    points = np.asarray(points, float)
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points of shape {points.shape}: expected N subjects × L landmarks × 3 coordinates.")
    centre = np.nanmean(points, axis=0)
    return np.nanmean(np.linalg.norm(points - centre, axis=2), axis=0)


def alignment_correlation(volumes, template, mask=None) -> np.ndarray:
    """Pearson correlation of each volume with the template (inside ``mask`` if given)."""
    volumes, template = np.asarray(volumes, np.float64), np.asarray(template, np.float64)
    if volumes.ndim != template.ndim + 1 or volumes.shape[1:] != template.shape:
        raise ValueError(f"volumes {volumes.shape} and template {template.shape}: give N volumes on the template's "
                         "grid (register them first, see register_to_template).")
    sel = np.ones(template.shape, bool) if mask is None else np.asarray(mask, bool)
    if sel.shape != template.shape:
        raise ValueError(f"mask {sel.shape} differs from the template {template.shape}; give a mask on its grid.")
    t = template[sel]
    return np.array([np.corrcoef(v[sel], t)[0, 1] for v in volumes])


# ------------------------------------------------------------------ a real chest CT onto the cohort's grid
def segment_lungs(hu, spacing, threshold_hu: float = -400.0, closing_mm: float = 20.0, second_lung: float = 0.2,
                  axial_axis: int = -1):
    """The lung fields of a real chest CT (HU; axial slices along ``axial_axis``: the last as
    :func:`helpers.data.formats.load_nrrd` gives them, 0 for ``load_dicom_series``' Z×Y×X), by the classical
    threshold method (no learned weights):
    air below ``threshold_hu`` that does not touch the scan's in-plane border (the air around the body); the
    largest such component, and any other at least ``second_lung`` of its size (a lung the airways do not join);
    holes filled in each axial slice (vessels, nodules inside the lung); then a closing in each slice with a disc
    of ``closing_mm`` radius, the "rolling ball" that takes in lesions lying against the pleura. Returns a bool mask."""
    from scipy import ndimage

    hu = np.asarray(hu, np.float32)
    spacing = np.asarray(spacing, float)
    if hu.ndim != 3 or spacing.shape != (3,) or (spacing <= 0).any():
        raise ValueError(f"hu of shape {hu.shape} with spacing {spacing.tolist()}: give one 3-D CT volume in HU and "
                         "its three voxel sizes in mm.")
    if axial_axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"axial_axis={axial_axis}: the axis along which the axial slices are stacked (0, 1 or 2).")
    if axial_axis % 3 != 2:      # the work below runs slice by slice along the last axis
        order = [a for a in range(3) if a != axial_axis % 3] + [axial_axis % 3]
        lungs = segment_lungs(np.transpose(hu, order), spacing[order], threshold_hu, closing_mm, second_lung)
        return np.transpose(lungs, np.argsort(order))
    air = hu < threshold_hu
    labels, n = ndimage.label(air)
    outside = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                                        labels[:, -1].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=n + 1).astype(float)
    sizes[outside] = 0
    sizes[0] = 0                  # label 0 is everything that is not air
    if sizes.max() == 0:
        raise ValueError(f"no air below {threshold_hu} HU inside the body: is the volume in HU (air about −1000), "
                         "with axial slices along the last axis?")
    lungs = np.isin(labels, np.flatnonzero(sizes >= second_lung * sizes.max()))
    pad = [(int(np.ceil(closing_mm / s)) + 1,) * 2 for s in spacing[:2]]
    out = np.empty_like(lungs)
    for z in range(lungs.shape[2]):
        # the closing as two Euclidean distance thresholds (in mm, exact for any disc, fast for a large one);
        # padded so that it does not eat lung at the slice's edge
        filled = np.pad(ndimage.binary_fill_holes(lungs[:, :, z]), pad)
        grown = ndimage.distance_transform_edt(~filled, sampling=spacing[:2]) <= closing_mm
        closed = ndimage.distance_transform_edt(grown, sampling=spacing[:2]) > closing_mm
        out[:, :, z] = ndimage.binary_fill_holes(closed | filled)[pad[0][0]:-pad[0][1], pad[1][0]:-pad[1][1]]
    return out


def cohort_box(lung, affine, shape, spacing_mm: float) -> np.ndarray:
    """The affine of a box on the simulated cohort's grid (``shape`` voxels of ``spacing_mm``, axes z, y, x: index 0
    of the first axis is superior — the apex —, the second runs anterior → posterior, the third from the patient's
    right to left), centred on the centre of the lung mask ``lung`` (voxel grid of ``affine``, RAS mm)."""
    lung = np.asarray(lung, bool)
    if not lung.any():
        raise ValueError("lung is empty: segment the lungs first (segment_lungs).")
    centre_voxel = np.append(np.argwhere(lung).mean(0), 1.0)
    centre = (np.asarray(affine, float) @ centre_voxel)[:3]
    axes = np.array([[0, 0, -1], [0, -1, 0], [-1, 0, 0]], float).T * float(spacing_mm)   # columns: i, j, k in RAS
    box = np.eye(4)
    box[:3, :3] = axes
    box[:3, 3] = centre - axes @ ((np.asarray(shape, float) - 1) / 2)
    return box


def resample_to_box(volume, affine, box_affine, shape, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """``volume`` (with its voxel → RAS ``affine``) resampled onto the box (nibabel's ``resample_from_to``; order 1
    linear for CT, 0 nearest for masks; ``cval`` outside the scan)."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    image = nib.Nifti1Image(np.asarray(volume, np.float32), np.asarray(affine, float))
    return np.asarray(resample_from_to(image, (tuple(int(s) for s in shape), np.asarray(box_affine, float)),
                                       order=order, mode="constant", cval=cval).dataobj, np.float32)
