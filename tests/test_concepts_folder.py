"""Concepts fitted on simulated training slides, applied through the folder API to real slides: the bundled CMU-1
Aperio region (read through OpenSlide) and a pyramidal OME-TIFF written from part of it."""
import numpy as np
import pytest
import torch

from helpers.data import bundled, slides
from helpers.methods import concepts
from helpers.simulate import histology


class TinyCNN(torch.nn.Module):
    """Two strided convolutions: a layer grid of stride 4, enough to stitch feature maps."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.relu2 = torch.nn.ReLU()

    def forward(self, x):
        return self.relu2(self.conv2(self.relu1(self.conv1(x))))


def test_concepts_from_simulated_training_slides_applied_to_a_folder_of_real_slides(repo_data_dir, tmp_path):
    model = TinyCNN().eval()
    training = histology.render_slide(0, size=384, positive=True, um_per_px=1.0)
    fitted = concepts.region_concepts(training.scene.rgb, model, "relu2", 3, tile=32, stride=16, device="cpu")
    H = fitted.nmf.components_
    folder = tmp_path / "slides"
    folder.mkdir()
    svs = bundled.real_file("cmu_small_region.svs", repo_data_dir)
    (folder / svs.name).symlink_to(svs)
    with slides.Slide(svs, backend="tifffile") as cmu:
        part = cmu.read_region((600, 900), 0, (512, 512))
    slides.write_pyramidal_tiff(folder / "part.ome.tif", part, mpp=0.499, min_side=128)
    # the training slides are at 1 µm/px: read the real slides at that pixel size
    results = concepts.apply_to_folder(folder, model, "relu2", H, tmp_path / "out", tile=32, stride=16, mpp=1.0,
                                       max_pixels=8e6, device="cpu")
    assert [r["slide"] for r in results] == ["cmu_small_region.svs", "part.ome.tif"]
    for r in results:
        assert r["downsample"] == pytest.approx(1.0 / 0.499, rel=0.02)           # resized to 1 µm/px
        assert sum(r["concept_share"]) == pytest.approx(1.0)
        out = r["output"]
        import zarr
        group = zarr.open_group(str(out / "concepts.zarr"), mode="r")
        clusters = np.asarray(group["clusters"][:])
        assert set(np.unique(clusters)) <= {-1, 0, 1, 2} and (clusters >= 0).any()
        assert group.attrs["n_concepts"] == 3
        with slides.Slide(out / "concepts.ome.tif") as written:
            assert written.mpp == pytest.approx(1.0, rel=0.02)
        assert (out / "overview.png").stat().st_size > 0
    with pytest.raises(ValueError, match="K × C"):
        concepts.apply_to_folder(folder, model, "relu2", H[0], tmp_path / "out2", tile=32, stride=16)
    with pytest.raises(FileNotFoundError, match="no slide files"):
        concepts.apply_to_folder(tmp_path / "out", model, "relu2", H, tmp_path / "out3", tile=32, stride=16)


def test_slides_whose_names_share_a_stem_get_folders_of_their_own(tmp_path):
    """case7.HE.ome.tif and case7.IHC.ome.tif: two output folders, neither replacing the other; names that would
    still share one (a.tif and a.TIFF) are refused before anything is written."""
    model = TinyCNN().eval()
    training = histology.render_slide(0, size=256, positive=True, um_per_px=1.0)
    H = concepts.region_concepts(training.scene.rgb, model, "relu2", 2, tile=32, stride=16, device="cpu").nmf.components_
    folder = tmp_path / "slides"
    folder.mkdir()
    for name, seed in (("case7.HE.ome.tif", 1), ("case7.IHC.ome.tif", 2)):
        rgb = histology.render_slide(seed, size=128, positive=False, um_per_px=1.0).scene.rgb
        slides.write_pyramidal_tiff(folder / name, rgb, mpp=1.0, min_side=64)
    results = concepts.apply_to_folder(folder, model, "relu2", H, tmp_path / "out", tile=32, stride=16, device="cpu")
    assert sorted(r["output"].name for r in results) == ["case7.HE", "case7.IHC"]
    assert all((r["output"] / "concepts.zarr").exists() for r in results)
    clash = tmp_path / "clash"
    clash.mkdir()
    for name in ("a.tif", "a.TIFF"):
        slides.write_pyramidal_tiff(clash / name, training.scene.rgb[:128, :128], mpp=1.0, min_side=64)
    with pytest.raises(ValueError, match="a.TIFF and a.tif.*share one output folder"):
        concepts.apply_to_folder(clash, model, "relu2", H, tmp_path / "out_clash", tile=32, stride=16, device="cpu")
    assert not (tmp_path / "out_clash").exists()
