"""QuPath GeoJSON in and out: clicks read from a file as QuPath writes it, seeded iterative clustering from them,
the predicted region written back as polygons and checked with shapely against the region it should be."""
import json

import numpy as np
import pytest

from helpers.data import annotations
from helpers.methods.seeded import sic


def _qupath_points(path, points):
    """Two point annotations the way QuPath 0.4+ exports them (MultiPoint, a classification with a colour)."""
    features = []
    for name, coords in points.items():
        features.append({"type": "Feature", "id": f"id-{name}",
                         "geometry": {"type": "MultiPoint", "coordinates": [list(c) for c in coords]},
                         "properties": {"objectType": "annotation",
                                        "classification": {"name": name, "color": [200, 0, 0]}}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_geojson_clicks_to_sic_to_geojson_region(tmp_path):
    from shapely.geometry import Point, box

    # a 40 × 40 grid of 64-px patches over a 2 560 px square slide; the "tumour" is a 20 × 12 block of patches
    patch, n = 64, 40
    rows, cols = np.mgrid[:n, :n]
    centres = np.stack([rows.ravel() * patch + patch / 2, cols.ravel() * patch + patch / 2], 1)
    truth = ((rows >= 10) & (rows < 30) & (cols >= 5) & (cols < 17)).ravel()
    rng = np.random.default_rng(0)
    embeddings = rng.normal(0, 1, (n * n, 16)) + 4.0 * truth[:, None]
    clicks_file = _qupath_points(tmp_path / "clicks.geojson", {
        "Tumor": [(700.0, 1200.0), (900.0, 1500.0)], "Stroma": [(2200.0, 300.0), (150.0, 2400.0)]})
    clicks = annotations.read_qupath_points(clicks_file)
    assert len(clicks) == 4 and set(clicks["classification"]) == {"Tumor", "Stroma"}
    again = annotations.read_qupath_points(annotations.write_qupath_points(tmp_path / "copy.geojson", clicks))
    assert again.equals(clicks)
    seeds = sic.clicks_to_seeds(clicks, centres, patch)
    assert (seeds == 1).sum() == 2 and (seeds == 0).sum() == 2
    result = sic.seeded_iterative_clustering(embeddings, seeds)
    mask = sic.region_mask(result.positive, centres, patch, (n * patch, n * patch), downsample=16)
    geometry = annotations.mask_to_geometry(mask, downsample=16)
    out = annotations.write_qupath_geojson(tmp_path / "region.geojson", geometry, classification="Tumor")

    regions = annotations.read_qupath_regions(out)
    assert [name for _, name in regions] == ["Tumor"]
    region = regions[0][0]
    expected = box(5 * patch, 10 * patch, 17 * patch, 30 * patch)          # x from columns, y from rows
    assert region.is_valid
    assert region.intersection(expected).area / region.union(expected).area > 0.95
    for x, y in [(700.0, 1200.0), (900.0, 1500.0)]:
        assert region.contains(Point(x, y))                                # the tumour clicks are inside
    assert not region.contains(Point(2200.0, 300.0))
    # pixel-exact: rasterising the written polygons gives back the mask
    np.testing.assert_array_equal(annotations.rasterise(region, mask.shape, downsample=16), mask)
    content = json.loads(out.read_text())
    assert content["type"] == "FeatureCollection"
    assert content["features"][0]["properties"]["objectType"] == "annotation"


def test_mask_with_a_hole_round_trips():
    from shapely.geometry import Polygon

    mask = np.zeros((20, 20), bool)
    mask[2:18, 2:18] = True
    mask[8:12, 8:12] = False
    mask[0, 19] = True                                                      # a second, separate piece
    geometry = annotations.mask_to_geometry(mask, downsample=4, origin=(100, 200))
    assert geometry.area == pytest.approx(mask.sum() * 16)
    pieces = list(getattr(geometry, "geoms", [geometry]))
    assert len(pieces) == 2 and any(isinstance(p, Polygon) and len(p.interiors) == 1 for p in pieces)
    np.testing.assert_array_equal(annotations.rasterise(geometry, mask.shape, 4, (100, 200)), mask)


def test_bad_annotation_files_are_named(tmp_path):
    (tmp_path / "broken.geojson").write_text("{not json")
    with pytest.raises(ValueError, match="broken.geojson is not GeoJSON"):
        annotations.read_qupath_points(tmp_path / "broken.geojson")
    (tmp_path / "lines.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "properties": {}}]}))
    with pytest.raises(ValueError, match="no Point or MultiPoint"):
        annotations.read_qupath_points(tmp_path / "lines.geojson")
    with pytest.raises(FileNotFoundError):
        annotations.read_qupath_points(tmp_path / "missing.geojson")
    with pytest.raises(ValueError, match="empty"):
        annotations.mask_to_geometry(np.zeros((4, 4), bool))
    geometry = annotations.mask_to_geometry(np.ones((4, 4), bool))
    annotations.write_qupath_geojson(tmp_path / "once.geojson", geometry)
    with pytest.raises(FileExistsError, match="exists"):
        annotations.write_qupath_geojson(tmp_path / "once.geojson", geometry)
    clicks = annotations.read_qupath_points(_qupath_points(tmp_path / "far.geojson", {"Tumor": [(5000.0, 5000.0)]}))
    with pytest.raises(sic.SeedError, match="lies in no patch"):
        sic.clicks_to_seeds(clicks, np.array([[32.0, 32.0]]), 64)


def test_a_file_without_the_annotations_asked_for_says_so_instead_of_returning_nothing(tmp_path):
    points_only = _qupath_points(tmp_path / "points.geojson", {"Tumor": [(10, 20)]})
    with pytest.raises(ValueError, match="no Polygon or MultiPolygon"):
        annotations.read_qupath_regions(points_only)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    for reader, kind in ((annotations.read_qupath_regions, "Polygon"), (annotations.read_qupath_points, "Point")):
        with pytest.raises(ValueError, match=f"no {kind}"):
            reader(empty)
