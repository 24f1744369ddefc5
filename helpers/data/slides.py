"""Whole-slide images opened by path and read lazily: one :class:`Slide` for SVS, NDPI, MRXS, tiled TIFF and
OME-TIFF files. A region is read at a pyramid level without loading the level: through OpenSlide (the
``openslide-python`` + ``openslide-bin`` wheels, ``pip install .[slides]``) for the formats it knows, and through
tifffile's Zarr view of the file for TIFF / OME-TIFF (the fallback, and the only route without OpenSlide). The
physical pixel size comes from the file (OpenSlide's ``openslide.mpp-x``, Aperio's ``MPP =``, OME's
``PhysicalSizeX``, or the TIFF resolution tags); a file that does not state it needs ``mpp=``.

:func:`write_pyramidal_tiff` writes the other way: an RGB array (a slide region, a concept map rendered as colour)
as a tiled pyramidal OME-TIFF that QuPath, OpenSlide-based viewers and this reader open."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

BACKENDS = ("auto", "openslide", "tifffile")
OPENSLIDE_HINT = "pip install openslide-python openslide-bin  (or: pip install '.[slides]')"
# the largest region read into memory at once: 64 million px, 192 MB of RGB (read_region, read_level, read_wsi)
MAX_REGION_PIXELS = 64e6
# the TIFF Software tag of the pyramids write_pyramidal_tiff writes: with overwrite, only such a file is replaced
WRITER_SOFTWARE = "helpers.data.slides.write_pyramidal_tiff"


class SlideError(ValueError):
    """A slide that cannot be read as asked (unknown pixel size, a region outside the level, a bad level)."""


def _openslide():
    try:
        import openslide
    except (ImportError, OSError):        # OSError: the wheel without its binary library
        return None
    return openslide


def _mpp_from_tiff(tif) -> float | None:
    """µm per pixel of level 0 from a TIFF: Aperio's description, OME-XML, then the resolution tags."""
    page = tif.pages[0]
    description = page.description or ""
    aperio = re.search(r"MPP\s*=\s*([0-9.eE+-]+)", description)
    if aperio:
        return float(aperio.group(1))
    if tif.is_ome and tif.ome_metadata:
        size = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', tif.ome_metadata)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', tif.ome_metadata)
        if size:
            factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(unit.group(1) if unit else "µm")
            if factor is not None:
                return float(size.group(1)) * factor
    tags = page.tags
    if "XResolution" in tags and "ResolutionUnit" in tags:
        numerator, denominator = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
        per_unit = numerator / denominator if denominator else 0
        if per_unit > 0 and unit in (2, 3):           # 2: inch, 3: centimetre; 1 (none) says nothing
            return (25400.0 if unit == 2 else 10000.0) / per_unit
    return None


class Slide:
    """A whole-slide image, read lazily.

    ``backend``: "auto" (OpenSlide for the vendor formats it recognises — Aperio SVS, Hamamatsu NDPI, MIRAX,
    Leica, Philips… — when it is installed; tifffile for plain and OME-TIFF), "openslide" or "tifffile". ``mpp``: µm per pixel of level 0, when the file does not say (or says wrongly).

    Coordinates follow OpenSlide: ``read_region((x, y), level, (width, height))`` with (x, y) in level-0 pixels and
    the size in pixels of ``level``; the result is an H × W × 3 uint8 array. Use it as a context manager, or call
    :meth:`close`."""

    def __init__(self, path, backend: str = "auto", mpp: float | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"slide {self.path} not found; give the path of a .svs, .ndpi, .mrxs, .tif or "
                                    ".ome.tif file.")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}.")
        if mpp is not None and not float(mpp) > 0:
            raise ValueError(f"mpp={mpp}: the pixel size is a positive number of µm per pixel (e.g. 0.25 at 40×).")
        openslide = _openslide()
        if backend == "auto":
            # OpenSlide for the vendor formats; plain and OME-TIFF through tifffile, which also reads pyramids kept
            # in SubIFDs (OpenSlide's generic-tiff driver sees only the first level of those)
            vendor = openslide.OpenSlide.detect_format(str(self.path)) if openslide is not None else None
            backend = "openslide" if vendor not in (None, "generic-tiff") else "tifffile"
        self.backend = backend
        self._osl = self._tif = None
        if backend == "openslide":
            if openslide is None:
                raise ImportError(f"OpenSlide is not installed; {OPENSLIDE_HINT}.")
            try:
                self._osl = openslide.OpenSlide(str(self.path))
            except openslide.OpenSlideError as err:
                raise SlideError(f"OpenSlide cannot open {self.path.name}: {err}. For TIFF / OME-TIFF use "
                                 "backend='tifffile'.") from None
            self.level_dimensions = [tuple(int(v) for v in d) for d in self._osl.level_dimensions]
            file_mpp = self._osl.properties.get("openslide.mpp-x")
            file_mpp = float(file_mpp) if file_mpp else None
        else:
            self._open_tifffile()
            file_mpp = _mpp_from_tiff(self._tif)
        width0 = self.level_dimensions[0][0]
        self.level_downsamples = [width0 / w for w, _ in self.level_dimensions]
        self.file_mpp = file_mpp               # what the file states (None: nothing)
        self._mpp = float(mpp) if mpp is not None else file_mpp

    def _check_complete(self, series):
        """Every tile of every level must lie inside the file: tifffile reads the missing tiles of a truncated file as
        empty (black) pixels without a word."""
        size = self.path.stat().st_size
        for index, level in enumerate(series.levels):
            for page in level.pages:
                if page is None:
                    continue
                offsets = np.asarray(page.dataoffsets, np.int64)
                counts = np.asarray(page.databytecounts, np.int64)
                if offsets.size != counts.size or (offsets.size and (offsets + counts).max() > size):
                    raise SlideError(f"{self.path.name} is truncated: tiles of level {index} lie beyond its "
                                     f"{size} bytes; copy the file again from its source.")

    def _open_tifffile(self):
        import tifffile
        import zarr

        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
            root = zarr.open(series.aszarr(), mode="r")
        except Exception as err:  # noqa: BLE001 - tifffile raises several types for files it cannot parse
            raise SlideError(f"{self.path.name} cannot be read as a TIFF slide ({type(err).__name__}: {err}); "
                             f"for SVS / NDPI / MRXS install OpenSlide: {OPENSLIDE_HINT}.") from None
        self._check_complete(series)
        self._levels = [root] if isinstance(root, zarr.Array) else [root[str(i)] for i in range(len(series.levels))]
        self._axes = series.axes.upper()
        if not (self._axes in ("YX", "YXS") or self._axes.endswith("YXS")):
            raise SlideError(f"{self.path.name} stores axes {series.axes!r}; an RGB slide has rows, columns and "
                             "samples (YXS) or is greyscale (YX).")
        self.level_dimensions = [(int(a.shape[self._axes.index("X")]), int(a.shape[self._axes.index("Y")]))
                                 for a in self._levels]

    # ------------------------------------------------------------------------------------------ properties
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def mpp(self) -> float:
        """µm per pixel at level 0 (from the file, or the ``mpp`` given)."""
        if self._mpp is None:
            raise SlideError(f"{self.path.name} does not state its pixel size; pass it: Slide(path, mpp=0.25) "
                             "(µm per pixel at level 0; 0.25 at 40×, 0.5 at 20×).")
        return self._mpp

    def level_mpp(self, level: int) -> float:
        return self.mpp * self.level_downsamples[self.check_level(level)]

    def best_level(self, mpp: float) -> int:
        """The coarsest level whose pixels are at most ``mpp`` µm (read there and resize the rest of the way)."""
        finer = [lv for lv in range(self.level_count) if self.level_mpp(lv) <= mpp * 1.001]
        return max(finer) if finer else 0

    def check_level(self, level) -> int:
        """``level`` as an int, or a SlideError naming the levels that exist."""
        if not 0 <= int(level) < self.level_count:
            raise SlideError(f"level {level} does not exist: {self.path.name} has {self.level_count} level(s), "
                             f"0–{self.level_count - 1}.")
        return int(level)

    # --------------------------------------------------------------------------------------------- reading
    def read_region(self, location, level: int, size, max_pixels: float = MAX_REGION_PIXELS) -> np.ndarray:
        """H × W × 3 uint8 pixels of ``level`` starting at ``location`` (x, y in level-0 pixels), ``size`` =
        (width, height) in pixels of that level. Only the tiles under the region are read; a region of more than
        ``max_pixels`` is refused before anything is allocated (a notebook kernel would die of it)."""
        level = self.check_level(level)
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        if w * h > max_pixels:
            raise SlideError(f"size=({w}, {h}) asks for {w * h / 1e6:.0f} million px of {self.path.name} at level "
                             f"{level} ({3 * w * h / 2**30:.1f} GiB), more than max_pixels={max_pixels:.0f}; read "
                             "smaller regions or a coarser level, or raise max_pixels if the memory is there.")
        ds = self.level_downsamples[level]
        col, row = int(round(x / ds)), int(round(y / ds))
        width, height = self.level_dimensions[level]
        if w < 1 or h < 1 or row < 0 or col < 0 or row + h > height or col + w > width:
            raise SlideError(f"region at level-0 (x={x}, y={y}) of {w}×{h} px is not inside {self.path.name}'s level "
                             f"{level} ({width}×{height} px); give a region inside the slide.")
        if self._osl is not None:
            rgba = np.asarray(self._osl.read_region((x, y), level, (w, h)))
            return np.ascontiguousarray(rgba[..., :3])
        array = self._levels[level]
        index = [0] * array.ndim
        index[self._axes.index("Y")] = slice(row, row + h)
        index[self._axes.index("X")] = slice(col, col + w)
        if "S" in self._axes:
            index[self._axes.index("S")] = slice(None)
        try:
            pixels = np.asarray(array[tuple(index)])
        except Exception as err:  # noqa: BLE001 - zarr / imagecodecs raise many types for a damaged tile
            raise SlideError(f"{self.path.name}: the tiles under region (x={x}, y={y}, {w}×{h} px, level {level}) "
                             f"cannot be decoded ({type(err).__name__}: {err}); the file is truncated or damaged — "
                             "copy it again from its source.") from None
        if pixels.ndim == 2:                       # greyscale: three equal channels
            pixels = np.repeat(pixels[..., None], 3, axis=-1)
        if pixels.dtype != np.uint8:
            raise SlideError(f"{self.path.name} stores {pixels.dtype} pixels; this reader takes 8-bit RGB slides.")
        return np.ascontiguousarray(pixels[..., :3])

    def read_level(self, level: int, max_pixels: float = MAX_REGION_PIXELS) -> np.ndarray:
        """A whole level as one array, refused above ``max_pixels`` (read regions instead)."""
        level = self.check_level(level)
        width, height = self.level_dimensions[level]
        return self.read_region((0, 0), level, (width, height), max_pixels=max_pixels)

    def thumbnail(self, max_side: int = 2048, stripe: int = 512) -> tuple[np.ndarray, float]:
        """The slide at most ``max_side`` px on its longer side, from the finest level that fits; when none does,
        the coarsest level is read in stripes and block-averaged, so memory stays bounded. Returns (RGB,
        downsample from level 0)."""
        fitting = [lv for lv, (w, h) in enumerate(self.level_dimensions) if max(w, h) <= max_side]
        if fitting:
            level = min(fitting)
            return self.read_level(level), self.level_downsamples[level]
        level = self.level_count - 1
        width, height = self.level_dimensions[level]
        factor = int(np.ceil(max(width, height) / max_side))
        rows = []
        step = max(factor, (stripe // factor) * factor)
        for top in range(0, height - height % factor, step):
            h = min(step, height - height % factor - top)
            block = self.read_region((0, int(round(top * self.level_downsamples[level]))), level,
                                     (width - width % factor, h)).astype(np.float32)
            rows.append(block.reshape(h // factor, factor, -1, factor, 3).mean(axis=(1, 3)))
        return np.concatenate(rows).round().astype(np.uint8), self.level_downsamples[level] * factor

    def tissue_mask(self, max_side: int = 2048, **options) -> tuple[np.ndarray, float]:
        """Tissue mask (``helpers.data.tissue.tissue_mask_from_rgb``) of :meth:`thumbnail`; returns (mask,
        downsample from level 0), so mask pixel (r, c) covers level-0 pixels from (r·d, c·d)."""
        from .tissue import tissue_mask_from_rgb

        small, downsample = self.thumbnail(max_side)
        return tissue_mask_from_rgb(small, **options), downsample

    def close(self):
        if self._osl is not None:
            self._osl.close()
        if self._tif is not None:
            self._tif.close()
        self._osl = self._tif = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        mpp = f"{self._mpp:g} µm/px" if self._mpp else "pixel size unknown"
        return (f"Slide({self.path.name!r}, backend={self.backend!r}, {self.dimensions[0]}×{self.dimensions[1]} px, "
                f"{self.level_count} level(s), {mpp})")


def write_pyramidal_tiff(path, rgb, mpp: float, tile: int = 256, min_side: int = 512, compression: str = "zlib",
                         overwrite: bool = False) -> Path:
    """Write an H × W × 3 uint8 array as a tiled pyramidal OME-TIFF (levels halved until the longer side is below
    ``min_side``; sub-resolutions as SubIFDs, as QuPath and Bio-Formats expect), with its pixel size. Refuses to
    replace an existing file unless ``overwrite`` (and then only a file this function wrote: an OME-TIFF)."""
    import tifffile

    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an H × W × 3 uint8 array, got {rgb.shape} {rgb.dtype}.")
    if not float(mpp) > 0:
        raise ValueError(f"mpp={mpp}: give the pixel size in µm per pixel.")
    if tile % 16:
        raise ValueError(f"tile={tile}: TIFF tiles are multiples of 16 pixels.")
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True.")
        try:
            with tifffile.TiffFile(path) as existing:
                ours = existing.pages[0].software == WRITER_SOFTWARE
        except Exception:  # noqa: BLE001 - a file tifffile cannot read is certainly not one we wrote
            ours = False
        if not ours:      # an OME-TIFF from a scanner or another tool is not ours to replace
            raise FileExistsError(f"{path} exists and is not a pyramid this function wrote (its TIFF Software tag is "
                                  f"not {WRITER_SOFTWARE!r}); it is left alone. Choose another name.")
    levels = [rgb]
    while max(levels[-1].shape[:2]) >= 2 * min_side:
        prev = levels[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(tile=(tile, tile), photometric="rgb", compression=compression, resolutionunit="CENTIMETER",
                   software=WRITER_SOFTWARE)
    with tifffile.TiffWriter(path, bigtiff=rgb.size > 2 ** 31, ome=True) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, resolution=(1e4 / mpp, 1e4 / mpp),
                  metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": mpp,
                            "PhysicalSizeYUnit": "µm"}, **options)
        for i, level in enumerate(levels[1:], start=1):
            scale = 2 ** i
            tif.write(level, subfiletype=1, resolution=(1e4 / (mpp * scale), 1e4 / (mpp * scale)), **options)
    return path
