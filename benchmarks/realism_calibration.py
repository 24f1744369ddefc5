"""Recalibrating the H&E simulator's texture against real H&E, selected on validation halves, tested once.

``benchmarks/realism_composition.py`` found that notebook 01's linear probe tells simulated tiles from real ones by
structure and texture, not colour or organ. This study searches the knobs that make those textures
(``histology.Rendering``: stroma fibres and clefts, chromatin, nuclear rim, stain grain, residual tint, camera noise,
optics). The knobs change pixels only, so every mask and nucleus (the ground truth) stays exactly what it was.

Protocol, fixed before any number was seen:

- **Real tiles.** Each real image is cut into a left and a right half before tiling: the CMU-1 region and the skin
  section (notebook 01's two sources), and each of HistoQC's four tumour fields. The left halves are the
  **validation** set, the right halves the **test** set. Tiles cover 128 µm at 1 µm/px, as in notebook 01.
- **Simulated tiles.** Validation and test use different slide seeds (``VALIDATION_SEED`` and ``TEST_SEED``), and
  neither uses notebook 01's seeds: 12 sections of 1 024 px per draw, 25 tiles each.
- **Objective**, on validation only: the probe's balanced accuracy against the three real sources (one fold per
  source, the slides dealt round them, ``realism.compare_with_real``), mean over ``VALIDATION_DRAWS`` draws.
- **Search**: coordinate descent from the default (simulator version 6, kept as ``histology.RENDERING_VERSION_6``).
  The knobs are taken in the order of ``CANDIDATES``, and each of a knob's candidate values is tried with the others
  held. A value is kept only if it lowers the objective by more than ``MIN_GAIN``, which is the size of the
  draw-to-draw noise. The passes repeat until one changes nothing, or ``MAX_PASSES`` is reached.
- **Test**, once, for the default and the chosen rendering, on the right halves with new slide seeds. Measured
  there: notebook 01's probe (CMU-1 + skin), the three-source probe, the probe against the tumour fields alone,
  the same three in grey, and the Fréchet distances. Beside them is the control: the tumour fields' right halves
  in the simulated tiles' seat, probed against the skin sources' right halves.

One change after numbers were seen, before any test number: a first search over 17 knobs found gains of at most
0.012 per knob in its first 12 validation evaluations. Four knobs were added then (``cleft_clearing``, which empties
the clefts of all three stains at once, where single knobs could only take one each; ``epithelium_hema``;
``nuclear_stain``; ``jpeg_quality``), and the search started again from the default.

Every evaluation is appended to ``benchmarks/results/realism_calibration_log.jsonl``, so an interrupted search resumes
where it stopped (the log records the protocol's constants and refuses to mix with another protocol).

    eval "$(.venv/bin/python -m helpers.env --export)"     # the numeric mode the notebooks run in
    .venv/bin/python benchmarks/realism_calibration.py     # alone on 2 cores: about a minute per evaluation

Writes ``benchmarks/results/realism_calibration.json``.

Measured (Intel Xeon, portable mode; 84 validation evaluations, about a minute each alone on 2 cores; the test part
alone 389 s, twice with the same numbers):

- **Chosen on validation**: ``stroma_hema`` 0.17 → 0.1, ``jpeg_quality`` 0 → 80, ``epithelium_hema`` 0.30 → 0.12.
  The validation probe fell from 0.890 to 0.811; JPEG alone took it from 0.878 to 0.834. Every other knob made it
  worse or moved it by less than ``MIN_GAIN``: thicker or longer fibres, crisper bundles, white clefts, paler or
  vesicular nuclei, granular chromatin, less or smoother grain, less tint, other noise or blur. The search stopped at
  ``MAX_PASSES`` while its second pass was still improving, so a third pass might go further. Paler nuclei were
  clearly worse (``rim_base`` 0.4: 0.933; ``nuclear_stain`` 0.65: 0.922), and the candidates offered no darker ones.
- **Test** (right halves, new seeds, 3 draws; the draws pair up because both renderings draw the same slides),
  default → chosen:
  - notebook 01's probe (CMU-1 + skin): 0.786 → **0.719** (per draw −0.081, −0.064, −0.058);
  - three sources: 0.952 → 0.915 (−0.027, −0.048, −0.035);
  - tumour fields alone: 0.771 → 0.729 (−0.052, 0.000, −0.073);
  - in grey: notebook 01's probe 0.897 → 0.828 and three sources 0.951 → 0.941.
- **Fréchet distances** in the three-source projection, to CMU-1 / skin / tumour fields: 734 / 650 / 589 → 682 /
  615 / 559.
- **Control**: the real tumour fields' right halves in the simulated seat score **0.530** (grey 0.568).
- Reading:
  - On the test halves the chosen rendering meets the issue's goal (≤ 0.75) for notebook 01's probe on average.
    Its draws run 0.667–0.758, so one lies just above the goal.
  - It stays far above real tissue in the same seat, and the three-source probe still tells it apart 0.915 of the
    time.
  - Part of the gain is the scanner's JPEG compression. The real sources carry it and the simulator lacked it.
  - The rest of the gap is structure the knobs do not reach: nuclear size and shape, and tissue architecture.
    Those would change the ground truth, so they need their own study.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOG = RESULTS / "realism_calibration_log.jsonl"
# the same sections and tiles as that study: 12 sections of 1 024 px, 25 tiles of 128 px (1 µm/px) from each
from realism_composition import PER_SLIDE, SLIDE_PX, SLIDES, TILE  # noqa: E402
VALIDATION_SEED, TEST_SEED = 700_000, 800_000
VALIDATION_DRAWS, TEST_DRAWS = 2, 3
DIMS = 32
MIN_GAIN = 0.01
MAX_PASSES = 2
# each knob's values to try besides its current one, in the order they are searched: stroma first (most of a tile's
# area), then nuclei, then grain, tint and optics
CANDIDATES = {
    "fibre_wavelength_um": [16.0, 22.0],
    "fibre_length": [0.06, 0.03],
    "looseness": [0.2, -0.2],
    "bundle_sharpness": [5.0, 10.0],
    "cleft_eosin": [0.02, 0.0],
    "bundle_eosin": [0.18, 0.32],
    "stroma_hema": [0.10, 0.05],
    "hema_follows_bundles": [0.5, 1.0],
    "cleft_clearing": [0.5, 0.9],
    "epithelium_hema": [0.2, 0.12],
    "chromatin_contrast": [0.3, 0.5],
    "chromatin_grain_um": [0.7, 1.5],
    "rim_base": [0.6, 0.4],
    "rim_gain": [0.6, 1.0],
    "nuclear_stain": [0.8, 0.65],
    "stain_grain": [0.06, 0.2],
    "stain_grain_um": [1.0, 2.0],
    "residual_base": [0.1, 0.0],
    "camera_noise": [0.006, 0.02],
    "optics_sigma_px": [0.3, 0.8],
    "jpeg_quality": [80, 60],
}
PROTOCOL = {"tile": TILE, "real_tiles_per_half": 75, "slides": SLIDES, "slide_px": SLIDE_PX,
            "per_slide": PER_SLIDE, "validation_seed": VALIDATION_SEED, "validation_draws": VALIDATION_DRAWS,
            "dims": DIMS}


def half_tiles(data_dir, half: int) -> tuple:
    """Real tiles from the left (``half`` 0, validation) or right (1, test) half of every real image: name → tiles,
    and the field each tumour-field tile comes from."""
    import numpy as np

    from helpers import realism
    from helpers.data import bundled
    from realism_composition import split_tiles

    def cut(image):
        middle = image.shape[1] // 2
        return image[:, :middle] if half == 0 else image[:, middle:]

    # the skin sources' halves as the composition study's control cuts them (75 tiles each, seeded by the half)
    tiles = {name: both[of_half == half] for name, (both, of_half) in split_tiles(data_dir).items()}
    field_px = int(round(TILE / bundled.TUMOUR_FIELDS_UM_PER_PX))
    fields = [cut(f) for f in bundled.load_real_tumour_fields(data_dir)]
    # a field's half holds only a dozen half-overlapping tiles: take them all
    per_field = [realism.real_tiles(f, np.ones(f.shape[:2], bool), field_px, 10_000, half, TILE, 0.5) for f in fields]
    tiles["tumour fields"] = np.concatenate(per_field)
    return tiles, np.repeat(np.arange(len(fields)), [len(t) for t in per_field])


def simulated_tiles(first_seed: int, draw: int, rendering):
    """PER_SLIDE tissue tiles from each of SLIDES sections (two positive in three) rendered with ``rendering``."""
    from realism_composition import slide_tiles

    return slide_tiles([first_seed + 1_000 * draw + s for s in range(SLIDES)], draw, rendering=rendering)


def validation_score(data_dir, real_features, rendering) -> float:
    """The objective: mean three-source probe accuracy over the validation draws."""
    import numpy as np

    from helpers import realism, recipes

    scores = []
    for draw in range(VALIDATION_DRAWS):
        tiles, slide_of = simulated_tiles(VALIDATION_SEED, draw, rendering)
        report = realism.compare_with_real(real_features, recipes.backbone_features(data_dir, tiles), slide_of,
                                           dims=DIMS)
        scores.append(report["probe"]["balanced_accuracy"])
    return float(np.mean(scores))


def read_log() -> list:
    if not LOG.exists():
        return []
    rows = [json.loads(line) for line in LOG.read_text().splitlines() if line.strip()]
    for row in rows:
        if row["protocol"] != PROTOCOL:
            raise SystemExit(f"{LOG.relative_to(ROOT)} holds evaluations of another protocol ({row['protocol']}); "
                             "move it away to start a new search.")
    return rows


def search(data_dir, real_features) -> tuple[dict, list]:
    """Coordinate descent on the validation objective; returns the chosen knobs and every evaluation."""
    from tqdm.auto import tqdm

    from helpers.simulate import histology

    done = {json.dumps(r["knobs"], sort_keys=True): r["validation_probe"] for r in read_log()}

    def score(knobs: dict) -> float:
        key = json.dumps(knobs, sort_keys=True)
        if key not in done:
            started = time.perf_counter()
            done[key] = validation_score(data_dir, real_features, histology.Rendering(**knobs))
            with LOG.open("a") as f:
                f.write(json.dumps({"protocol": PROTOCOL, "knobs": knobs, "validation_probe": done[key],
                                    "seconds": round(time.perf_counter() - started, 1)}) + "\n")
        return done[key]

    current = dataclasses.asdict(histology.RENDERING_VERSION_6)
    best = score(current)
    print(f"default rendering: validation probe {best:.3f}", flush=True)
    for n_pass in range(MAX_PASSES):
        changed = False
        for knob, values in tqdm(CANDIDATES.items(), desc=f"pass {n_pass + 1}"):
            for value in [v for v in [getattr(histology.RENDERING_VERSION_6, knob), *values] if v != current[knob]]:
                trial = current | {knob: value}
                result = score(trial)
                if result < best - MIN_GAIN:
                    print(f"  {knob} {current[knob]} → {value}: validation probe {best:.3f} → {result:.3f}",
                          flush=True)
                    current, best, changed = trial, result, True
        if not changed:
            break
    return current, [{"knobs": json.loads(k), "validation_probe": v} for k, v in done.items()]


def test_report(data_dir, rendering, test_real: dict, field_of) -> dict:
    """The test measures for one rendering, mean and range over TEST_DRAWS draws (right halves, new seeds)."""
    import numpy as np

    from helpers import realism, recipes
    from realism_composition import grey

    skin = [n for n in test_real if n != "tumour fields"]
    rows = []
    for draw in range(TEST_DRAWS):
        tiles, slide_of = simulated_tiles(TEST_SEED, draw, rendering)
        row = {}
        for prefix, view in (("", lambda t: t), ("grey_", grey)):
            real = {n: recipes.backbone_features(data_dir, view(t)) for n, t in test_real.items()}
            sim = recipes.backbone_features(data_dir, view(tiles))
            two = realism.compare_with_real({n: real[n] for n in skin}, sim, slide_of, dims=DIMS)
            three = realism.compare_with_real(real, sim, slide_of, dims=DIMS)
            tumour = real["tumour fields"]
            alone = realism.probe(np.vstack([tumour, sim]),
                                  np.r_[np.ones(len(tumour), bool), np.zeros(len(sim), bool)],
                                  np.r_[field_of, slide_of % (int(field_of.max()) + 1)])
            row |= {f"{prefix}probe_notebook01": two["probe"]["balanced_accuracy"],
                    f"{prefix}probe_three_sources": three["probe"]["balanced_accuracy"],
                    f"{prefix}probe_tumour_fields_alone": alone["balanced_accuracy"]}
            row |= {f"{prefix}fd_to_{n}": three["fd"][f"simulated ↔ {n}"] for n in test_real}
        rows.append(row)
    return {key: {"mean": float(np.mean([r[key] for r in rows])),
                  "range": [float(min(r[key] for r in rows)), float(max(r[key] for r in rows))],
                  "per_draw": [r[key] for r in rows]} for key in rows[0]}


def control(data_dir, test_real: dict, field_of) -> dict:
    """The tumour fields' right halves in the simulated tiles' seat against the skin sources' right halves (fields
    0 and 2 in one fold, 1 and 3 in the other), in colour and in grey, with the real ↔ real distances."""
    from helpers import realism, recipes
    from realism_composition import grey

    out = {}
    for prefix, view in (("", lambda t: t), ("grey_", grey)):
        skin = {n: recipes.backbone_features(data_dir, view(t)) for n, t in test_real.items() if n != "tumour fields"}
        report = realism.compare_with_real(skin, recipes.backbone_features(data_dir, view(test_real["tumour fields"])),
                                           field_of, dims=DIMS)
        out[f"{prefix}probe_notebook01"] = report["probe"]["balanced_accuracy"]
        out |= {f"{prefix}fd_{k}": v for k, v in report["fd"].items()}
    return out


def main() -> int:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from helpers import env, recipes
    from helpers.simulate import histology

    env.setup(0, "auto")
    data_dir = ROOT / "data"
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    validation_real, _ = half_tiles(data_dir, 0)
    validation_features = {n: recipes.backbone_features(data_dir, t) for n, t in validation_real.items()}
    chosen, evaluations = search(data_dir, validation_features)
    default = dataclasses.asdict(histology.RENDERING_VERSION_6)
    print("chosen on validation: " + (", ".join(f"{k} {default[k]} → {v}" for k, v in chosen.items()
                                                if v != default[k]) or "the default"), flush=True)
    # the test halves, touched once, after the choice
    test_real, field_of = half_tiles(data_dir, 1)
    result = {
        "about": __doc__.split("\n\n")[0], "machine": env.processor_name(), "protocol": PROTOCOL,
        "min_gain": MIN_GAIN, "candidates": CANDIDATES, "default": default, "chosen": chosen,
        "changed": {k: [default[k], v] for k, v in chosen.items() if v != default[k]},
        "validation_probe": {"default": min(e["validation_probe"] for e in evaluations if e["knobs"] == default),
                             "chosen": next(e["validation_probe"] for e in evaluations if e["knobs"] == chosen)},
        "evaluations": len(evaluations),
        "real_test_tiles": {n: len(t) for n, t in test_real.items()},
        "test": {"default": test_report(data_dir, histology.RENDERING_VERSION_6, test_real, field_of),
                 "chosen": test_report(data_dir, histology.Rendering(**chosen), test_real, field_of)},
        "control_tumour_fields_in_simulated_seat": control(data_dir, test_real, field_of),
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = RESULTS / "realism_calibration.json"
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for key in ("probe_notebook01", "probe_three_sources", "probe_tumour_fields_alone",
                "grey_probe_notebook01", "grey_probe_three_sources"):
        d, c = result["test"]["default"][key], result["test"]["chosen"][key]
        # the same slides in both renderings (geometry identical), so the draws pair up
        paired = ", ".join(f"{b - a:+.3f}" for a, b in zip(d["per_draw"], c["per_draw"]))
        print(f"test {key}: default {d['mean']:.3f} → chosen {c['mean']:.3f} (per draw, chosen − default: {paired})")
    ctrl = result["control_tumour_fields_in_simulated_seat"]
    print(f"control (real tumour fields in the simulated seat): probe {ctrl['probe_notebook01']:.3f} "
          f"(grey {ctrl['grey_probe_notebook01']:.3f})")
    print(f"wrote {out.relative_to(ROOT)} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
