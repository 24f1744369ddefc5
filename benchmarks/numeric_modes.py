"""Which numerical settings change a trained model's numbers, and does the "portable" numeric mode pin them?

Each row trains notebook 02's grading CNN (paper 001, SMOKE sizes: data simulated from scratch in an empty DATA_DIR,
then 40 epochs at most) in a fresh process whose environment carries one setting a user's machine may differ in:
torch's thread count, torch's CPU capability (ATEN_CPU_CAPABILITY), oneDNN's instruction set or oneDNN switched off,
MKL's instruction set (as on a processor without AVX-512), numpy without its AVX-512 loops, deterministic algorithms
off. Every row is run in both numeric modes (helpers.env): "native" (each library picks its own path) and
"portable" (the mode's variables set before Python starts, as the runner and the xai-medimg kernel do). A row is
compared with its mode's first row by a hash of the trained weights and of the test probabilities, and by the
largest difference of a test probability.

    .venv/bin/python benchmarks/numeric_modes.py            # every row, both modes (about 25 minutes on 2 cores)
    .venv/bin/python benchmarks/numeric_modes.py --quick    # threads, ATen and oneDNN rows only

Writes benchmarks/results/numeric_modes.json and prints the table. The slowdown of "portable" is the ratio of the
training times of the first rows (best of the repeats asked with --repeat).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (label, environment variables; XAI_STUDY_* are read by the worker below)
SETTINGS = [
    ("as installed", {}),
    ("torch 1 thread", {"XAI_STUDY_THREADS": "1"}),
    ("torch 4 threads", {"XAI_STUDY_THREADS": "4"}),
    ("ATEN_CPU_CAPABILITY=avx2", {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("ATEN_CPU_CAPABILITY=avx512", {"ATEN_CPU_CAPABILITY": "avx512"}),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}),
    ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("ONEDNN_MAX_CPU_ISA=AVX512_CORE", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    ("oneDNN off", {"XAI_STUDY_ONEDNN": "0"}),
    ("MKL_ENABLE_INSTRUCTIONS=AVX2", {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    ("numpy without AVX-512", {"NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL "
                                                           "AVX512_ICL AVX512_SPR"}),
    ("deterministic algorithms off", {"XAI_STUDY_DETERMINISTIC": "0"}),
]
QUICK = {"as installed", "torch 1 thread", "torch 4 threads", "ATEN_CPU_CAPABILITY=avx512",
         "ATEN_CPU_CAPABILITY=default", "ONEDNN_MAX_CPU_ISA=AVX2"}
# what a study variable stands for, applied by the worker before helpers.env.setup (which may pin it again)
MODE_VARIABLES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_CORETYPE",
                  "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "XAI_NUMERIC_MODE")


def worker(data_root: Path) -> dict:
    """Train and evaluate in this process; the setting is in the environment."""
    import torch

    if "XAI_STUDY_THREADS" in os.environ:        # the machine's thread count, before the mode may pin it
        torch.set_num_threads(int(os.environ["XAI_STUDY_THREADS"]))
    from helpers import env, recipes
    from helpers.simulate import datasets

    env.setup(0, "cpu", deterministic=os.environ.get("XAI_STUDY_DETERMINISTIC", "1") == "1", verbose=False)
    if os.environ.get("XAI_STUDY_ONEDNN") == "0":
        torch.backends.mkldnn.enabled = False
    state = env._numeric_state()
    started = time.perf_counter()
    model, info = recipes.ensure_grading_model(data_root, smoke=True, seed=0, device="cpu")
    seconds = time.perf_counter() - started
    grading, _ = datasets.ensure_grading_patches(data_root, smoke=True, seed=0)
    import numpy as np

    test = np.flatnonzero(np.asarray(grading["split"]) == 2)
    images = np.asarray(grading["images"])[test]
    ev = recipes.evaluate_classifier(model, images, np.asarray(grading["label"])[test], 7, "cpu")
    weights = torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()])
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]  # noqa: E731
    return {"seconds": seconds, "accuracy": ev["accuracy"], "weights_sha": digest(weights.numpy()),
            "probabilities_sha": digest(ev["probabilities"]), "data_sha": digest(images),
            "probabilities": ev["probabilities"].round(8).tolist(), "state": state,
            "torch_threads": torch.get_num_threads()}


def run_row(mode: str, variables: dict, real_cache: Path | None) -> dict:
    from helpers import env

    base = {k: v for k, v in os.environ.items() if k not in MODE_VARIABLES and not k.startswith("XAI_STUDY")}
    run_env = {**base, **variables}
    if mode == "portable":     # as helpers.runner and the kernel launcher do: the mode's variables win
        run_env.update(env.numeric_environment("portable"))
        if "OPENBLAS_CORETYPE" in variables:
            run_env["OPENBLAS_CORETYPE"] = variables["OPENBLAS_CORETYPE"]
    else:
        run_env["XAI_NUMERIC_MODE"] = "native"
    with tempfile.TemporaryDirectory(prefix="numeric-") as tmp:
        data_root = Path(tmp) / "data"
        data_root.mkdir()
        if real_cache and real_cache.exists():     # the bundled real files only; everything else is built
            shutil.copytree(real_cache, data_root / "cache" / "real")
        out = Path(tmp) / "result.json"
        code = ("import json, sys; sys.path.insert(0, %r); from benchmarks.numeric_modes import worker; "
                "json.dump(worker(__import__('pathlib').Path(%r)), open(%r, 'w'))" % (str(ROOT), str(data_root), str(out)))
        proc = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{mode} {variables}: worker failed\n{proc.stderr[-3000:]}")
        return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the rows of threads, ATen and oneDNN")
    parser.add_argument("--modes", nargs="+", default=["native", "portable"])
    parser.add_argument("--repeat", type=int, default=1, help="timings of the first row, best of this many")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "numeric_modes.json"))
    args = parser.parse_args(argv)
    import numpy as np
    from tqdm.auto import tqdm

    from helpers import env

    rows = [(label, v) for label, v in SETTINGS if not args.quick or label in QUICK]
    real_cache = ROOT / "data" / "cache" / "real"
    results = {"configuration": env.configuration("native"), "rows": {}}
    for mode in args.modes:
        first = None
        for label, variables in tqdm(rows, desc=f"{mode} mode"):
            repeats = args.repeat if first is None else 1
            found = [run_row(mode, variables, real_cache) for _ in range(repeats)]
            row = found[0]
            row["seconds"] = min(r["seconds"] for r in found)
            probs = np.asarray(row.pop("probabilities"))
            if first is None:
                first = (row, probs)
            row["same_weights_as_first"] = row["weights_sha"] == first[0]["weights_sha"]
            row["same_data_as_first"] = row["data_sha"] == first[0]["data_sha"]
            row["max_probability_difference"] = float(np.abs(probs - first[1]).max())
            results["rows"].setdefault(mode, {})[label] = row
    first_times = {m: results["rows"][m][rows[0][0]]["seconds"] for m in results["rows"]}
    if {"native", "portable"} <= set(first_times):
        results["portable_over_native_time"] = first_times["portable"] / first_times["native"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


def table(results: dict) -> str:
    lines = ["| setting | " + " | ".join(f"{m}: same bits / max Δp / accuracy / s" for m in results["rows"]) + " |",
             "| --- | " + " | ".join("---" for _ in results["rows"]) + " |"]
    labels = list(next(iter(results["rows"].values())))
    for label in labels:
        cells = []
        for mode, rows in results["rows"].items():
            r = rows[label]
            cells.append(f"{'yes' if r['same_weights_as_first'] else 'no'} / {r['max_probability_difference']:.2g} / "
                         f"{r['accuracy']:.3f} / {r['seconds']:.0f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "portable_over_native_time" in results:
        lines.append(f"\ntraining time, portable / native: {results['portable_over_native_time']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
