"""Annotations in the format pathologists' tools use: QuPath's GeoJSON (File → Export objects as GeoJSON; drag a
.geojson file onto a QuPath viewer to import it). Coordinates are level-0 pixels of the slide, x to the right and y
down. Clicks come in as Point / MultiPoint annotations with a classification ("Tumor", "Stroma"…); regions go out
as Polygon / MultiPolygon annotations with holes, built from a binary mask with shapely."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _features(path: Path) -> list:
    if not path.is_file():
        raise FileNotFoundError(f"GeoJSON file {path} not found.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not GeoJSON ({err}); export it from QuPath with File → Export objects as "
                         "GeoJSON.") from None
    if isinstance(content, dict) and content.get("type") == "FeatureCollection":
        features = content.get("features", [])
    elif isinstance(content, dict) and content.get("type") == "Feature":
        features = [content]
    elif isinstance(content, list):                  # QuPath 0.2 exports a bare list of features
        features = content
    else:
        raise ValueError(f"{path}: expected a GeoJSON FeatureCollection, Feature or a list of features.")
    bad = [i for i, f in enumerate(features) if not isinstance(f, dict) or "geometry" not in f]
    if bad:
        raise ValueError(f"{path}: feature {bad[0]} has no geometry.")
    return features


def _classification(feature) -> str:
    props = feature.get("properties") or {}
    value = props.get("classification")
    if isinstance(value, dict):
        return str(value.get("name", "Unclassified"))
    return str(value) if value else "Unclassified"


def read_qupath_points(path):
    """Clicks from a QuPath GeoJSON file: every Point and every vertex of a MultiPoint annotation, as a DataFrame
    with columns x, y (level-0 pixels) and classification. Other geometries are skipped."""
    import pandas as pd

    path = Path(path)
    rows = []
    for feature in _features(path):
        geometry = feature["geometry"] or {}
        kind, coords = geometry.get("type"), geometry.get("coordinates")
        points = [coords] if kind == "Point" else coords if kind == "MultiPoint" else []
        for point in points:
            if not (isinstance(point, (list, tuple)) and len(point) >= 2):
                raise ValueError(f"{path}: a {kind} has the coordinate {point!r}; expected [x, y].")
            rows.append({"x": float(point[0]), "y": float(point[1]), "classification": _classification(feature)})
    if not rows:
        raise ValueError(f"{path} holds no Point or MultiPoint annotation; place clicks with QuPath's points tool.")
    return pd.DataFrame(rows)


def read_qupath_regions(path):
    """Polygon and MultiPolygon annotations of a QuPath GeoJSON file as (shapely geometry, classification) pairs."""
    from shapely.geometry import shape

    path = Path(path)
    regions = []
    for feature in _features(path):
        geometry = feature["geometry"] or {}
        if geometry.get("type") in ("Polygon", "MultiPolygon"):
            regions.append((shape(geometry), _classification(feature)))
    if not regions:      # an empty list would read as "no tissue of that class" downstream
        raise ValueError(f"{path} holds no Polygon or MultiPolygon annotation; draw regions with QuPath's polygon or "
                         "brush tools (points are read by read_qupath_points).")
    return regions


def mask_to_geometry(mask, downsample: float = 1.0, origin=(0.0, 0.0)):
    """A binary mask as a shapely (Multi)Polygon in level-0 pixels: pixel (r, c) of the mask covers the square
    from (x, y) = origin + (c, r)·downsample to origin + (c + 1, r + 1)·downsample. Holes are kept. Built pixel-exact
    (the union of the mask's runs of pixels), so rasterising it back gives the same mask."""
    from shapely import affinity, union_all
    from shapely.geometry import box

    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (rows × columns), got shape {mask.shape}.")
    if not mask.any():
        raise ValueError("the mask is empty: there is no region to write.")
    boxes = []
    for r in range(mask.shape[0]):
        row = np.concatenate([[False], mask[r], [False]])
        edges = np.flatnonzero(np.diff(row.astype(np.int8)))
        boxes.extend(box(start, r, stop, r + 1) for start, stop in zip(edges[::2], edges[1::2]))
    geometry = union_all(boxes)
    geometry = affinity.scale(geometry, xfact=downsample, yfact=downsample, origin=(0, 0))
    return affinity.translate(geometry, xoff=float(origin[0]), yoff=float(origin[1]))


def rasterise(geometry, shape, downsample: float = 1.0, origin=(0.0, 0.0)) -> np.ndarray:
    """The inverse of :func:`mask_to_geometry`: a boolean mask of ``shape`` whose pixel centres lie inside the
    geometry (shapely's vectorised contains)."""
    import shapely

    if not (hasattr(geometry, "geom_type") and np.ndim(shape) == 1 and len(shape) == 2
            and all(isinstance(v, (int, np.integer)) and v > 0 for v in shape)):
        raise ValueError(f"rasterise(geometry={type(geometry).__name__}, shape={shape!r}): give a shapely geometry "
                         "(e.g. from read_qupath_regions) and the mask's (height, width) as two positive integers.")
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    xs = float(origin[0]) + (cols.ravel() + 0.5) * downsample
    ys = float(origin[1]) + (rows.ravel() + 0.5) * downsample
    return shapely.contains_xy(geometry, xs, ys).reshape(shape)


def write_qupath_geojson(path, geometry, classification: str = "Tumor", color=(200, 0, 0), name: str | None = None,
                         overwrite: bool = False) -> Path:
    """Write a shapely (Multi)Polygon as QuPath annotations (one Feature per polygon, ``objectType`` annotation,
    with its classification and colour) in a FeatureCollection. Refuses to replace an existing file unless
    ``overwrite``."""
    from shapely.geometry import MultiPolygon, Polygon, mapping

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True.")
    if isinstance(geometry, Polygon):
        polygons = [geometry]
    elif isinstance(geometry, MultiPolygon):
        polygons = list(geometry.geoms)
    else:
        raise TypeError(f"geometry is a {type(geometry).__name__}; write a shapely Polygon or MultiPolygon "
                        "(mask_to_geometry builds one from a mask).")
    if not all(p.is_valid for p in polygons):
        raise ValueError("the geometry is not valid (self-intersections); fix it with shapely.make_valid first.")
    features = []
    for polygon in polygons:
        properties = {"objectType": "annotation",
                      "classification": {"name": classification, "color": [int(c) for c in color]}}
        if name:
            properties["name"] = name
        features.append({"type": "Feature", "geometry": mapping(polygon), "properties": properties})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1), encoding="utf-8")
    return path


def write_qupath_points(path, clicks, overwrite: bool = False) -> Path:
    """Clicks (a table with x, y in level-0 pixels and classification) as QuPath point annotations, one
    MultiPoint per classification — the file QuPath's points tool exports, to hand clicks to a pathologist or to
    keep them with the slide. Refuses to replace an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or pass overwrite=True.")
    missing = [c for c in ("x", "y", "classification") if c not in clicks]
    if missing:
        raise ValueError(f"clicks lack column(s) {missing}; give x, y (level-0 pixels) and classification.")
    features = []
    for name in dict.fromkeys(clicks["classification"]):
        chosen = clicks[clicks["classification"] == name]
        features.append({"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [
            [float(x), float(y)] for x, y in zip(chosen["x"], chosen["y"])]},
            "properties": {"objectType": "annotation", "classification": {"name": str(name)}}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1), encoding="utf-8")
    return path
