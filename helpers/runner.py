"""Run every notebook in ``notebooks/`` in order with papermill and print a summary of the recorded metrics.

    python -m helpers.runner                 # default parameters → outputs/<stem>/
    python -m helpers.runner --smoke         # SMOKE=True everywhere → outputs/smoke/<stem>/
    python -m helpers.runner 01 03           # only notebooks whose name starts with 01 or 03
    python -m helpers.runner --smoke --update-expected   # `make expected`: record the smoke references
    python -m helpers.runner --seed 1        # a default run at another seed → outputs/seeds/seed1/<stem>/
    python -m helpers.runner --record-seeds                # `make seeds`' last step: the seed study → tests/expected/

The smoke references in ``tests/expected/<stem>.json`` are every number a SMOKE run records (run times aside);
the regression test compares each run with them. Regenerating them is a deliberate act: review the diff.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "expected"
# The smoke references are compared at this relative tolerance (and 1e-12 absolute). Measured: two SMOKE runs
# on one machine, with the caches cold (everything built) and warm (everything loaded), record identical
# numbers, so anything wider would only hide changes; 1e-9 leaves room for the decimal round trip of JSON.
SMOKE_REL_TOL = 1e-9
SMOKE_ABS_TOL = 1e-12


def is_timing(name: str) -> bool:
    """Run times are recorded but never compared: a busy machine is slower without the code being wrong."""
    return "seconds" in name


def notebooks(selection=()) -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selection:
        found = [nb for nb in found if any(nb.stem.startswith(s) for s in selection)]
    return found


KERNEL_NAME = "xai-medimg"
KERNEL_DISPLAY_NAME = "Python (xai-medimg)"


def ensure_kernel() -> str:
    """The notebooks' kernel, ``xai-medimg``: this environment's Python. Its kernelspec is written into this
    environment (``sys.prefix/share/jupyter/kernels``, as ``python -m ipykernel install --sys-prefix`` does) when it is
    missing or points at another Python, so that JupyterLab and papermill open the notebooks on the environment that
    has the project installed, never on whichever ``python3`` a JupyterHub offers."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if Path(spec.argv[0]).absolute() == Path(sys.executable).absolute():   # this very environment
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix)
    return KERNEL_NAME


def run_notebook(nb: Path, output_root: Path, smoke: bool = False, data_dir: Path | None = None,
                 extra: dict | None = None) -> tuple[Path, float]:
    """Execute one notebook into ``output_root/<stem>/`` (executed copy, figures, metrics.json)."""
    import papermill as pm

    # absolute paths: the notebook runs with notebooks/ as its working directory
    out_dir = Path(output_root).resolve() / nb.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), "OUTPUT_DIR": str(out_dir), "DATA_DIR": str(Path(data_dir or ROOT / "data").resolve())}
    params.update(extra or {})
    started = time.perf_counter()
    # the kernel inherits this process's environment: a MPLBACKEND=Agg set for headless tests would keep every
    # figure out of the executed notebook (and so out of the book); the inline backend embeds them
    saved = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(nb.parent),
                            kernel_name=ensure_kernel(), progress_bar=False, log_output=False)
    finally:
        if saved is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved
    return out_dir, time.perf_counter() - started


def smoke_reference(metrics: dict) -> dict:
    """The smoke section of an expected file for one run's metrics: every value, the run times listed apart."""
    return {
        "about": "Every number a SMOKE run records, compared by tests/test_notebooks.py at rel_tol (ints, booleans "
                 "and list lengths exactly). Regenerate on purpose with `make expected` and review the diff.",
        "rel_tol": SMOKE_REL_TOL, "abs_tol": SMOKE_ABS_TOL,
        "values": {k: v for k, v in sorted(metrics.items()) if not is_timing(k)},
        "timings": sorted(k for k in metrics if is_timing(k)),
    }


def compare_with_reference(metrics: dict, reference: dict) -> list[str]:
    """Differences between a run's metrics and a smoke reference (empty list: the run reproduces it)."""
    rel, abs_ = float(reference.get("rel_tol", SMOKE_REL_TOL)), float(reference.get("abs_tol", SMOKE_ABS_TOL))
    expected = reference.get("values", {})
    problems = [f"{name} is recorded but has no reference (new metric? run `make expected`)"
                for name in sorted(set(metrics) - set(expected)) if not is_timing(name)]
    problems += [f"{name} was not recorded" for name in sorted(set(expected) - set(metrics))]
    problems += [f"run time {name} was not recorded" for name in reference.get("timings", []) if name not in metrics]
    for name in sorted(set(expected) & set(metrics)):
        why = _differs(metrics[name], expected[name], rel, abs_)
        if why:
            problems.append(f"{name}: {why}")
    return problems


def _differs(got, want, rel, abs_) -> str | None:
    import math

    if isinstance(want, list) or isinstance(got, list):
        if not (isinstance(want, list) and isinstance(got, list)) or len(got) != len(want):
            return f"{_short(got)} where the reference has {_short(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            why = _differs(g, w, rel, abs_)
            if why:
                return f"element {i}: {why}"
        return None
    if isinstance(want, bool) or isinstance(got, bool) or isinstance(want, int) and isinstance(got, int):
        return None if got == want and type(got) is type(want) else f"{got!r}, reference {want!r}"
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return None if math.isclose(got, want, rel_tol=rel, abs_tol=abs_) else f"{got!r}, reference {want!r}"
    return None if got == want else f"{got!r}, reference {want!r}"


def update_expected(stem: str, metrics: dict) -> Path:
    """Write the smoke section of ``tests/expected/<stem>.json`` from a SMOKE run (other sections kept)."""
    path = EXPECTED / f"{stem}.json"
    expected = json.loads(path.read_text()) if path.exists() else {}
    expected["smoke"] = smoke_reference(metrics)
    path.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    return path


SEEDS = (0, 1, 2)


def seed_run_dir(output_root: Path, seed: int) -> Path:
    """Where the default run at ``seed`` lives: ``make run``'s outputs for seed 0, outputs/seeds/seed<k> otherwise."""
    return Path(output_root) if seed == 0 else Path(output_root) / "seeds" / f"seed{seed}"


def default_output_root(smoke: bool = False, seed: int | None = None, record_seeds: bool = False) -> Path:
    """Where a run writes when no ``--output`` is given: the default run at seed 0 in outputs/, a smoke run in
    outputs/smoke/, a default run at another seed in outputs/seeds/seed<k>/ (where the seed study reads it), so a
    smoke or other-seed run never replaces the default run's outputs."""
    root = ROOT / "outputs"
    if record_seeds:
        return root
    return seed_run_dir(root / "smoke" if smoke else root, seed or 0)


def _spread_range(values: list) -> list:
    """[min − half the spread, max + half the spread] of one number over the seeds (elementwise for lists)."""
    if isinstance(values[0], list):
        if len({len(v) for v in values}) != 1:
            return None
        ranges = [_spread_range([v[i] for v in values]) for i in range(len(values[0]))]
        return None if any(r is None for r in ranges) else ranges
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    low, high = min(values), max(values)
    margin = (high - low) / 2
    return [low - margin, high + margin]


def seed_study(stem: str, output_root: Path = ROOT / "outputs", seeds=SEEDS) -> dict:
    """The default section's seed study for one notebook from its default runs at ``seeds``: every run's metrics,
    each claim's verdict over the seeds ("holds", "fails" or "unstable") and, for the numbers the claims rest on,
    the range the seeds span widened by half their spread on each side."""
    runs = {}
    for seed in seeds:
        path = seed_run_dir(output_root, seed) / stem / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"no default run at seed {seed} for {stem} ({path}); run `make run` (seed 0) and "
                                    f"`python -m helpers.runner --seed {seed} --output {seed_run_dir(output_root, seed)}`.")
        metrics = json.loads(path.read_text())
        runs[str(seed)] = {k: v for k, v in sorted(metrics.items()) if not is_timing(k)}
    claims = sorted({k for m in runs.values() for k in m if k.startswith("claim_")})
    verdicts = {}
    for name in claims:
        seen = [m.get(name) for m in runs.values()]
        verdicts[name] = "holds" if all(v is True for v in seen) else "fails" if all(v is False for v in seen) else "unstable"
    claims_file = seed_run_dir(output_root, seeds[0]) / stem / "claims.json"
    evidence = sorted({e for row in (json.loads(claims_file.read_text()) if claims_file.exists() else [])
                       for e in row["evidence"]})
    key_numbers = {}
    for name in evidence:
        values = [m.get(name) for m in runs.values()]
        if all(v is not None for v in values):
            spread = _spread_range(values)
            if spread is not None:
                key_numbers[name] = spread
    return {"about": f"Default runs at seeds {', '.join(map(str, seeds))} (`make seeds`). A claim is pinned when all "
                     "seeds agree and reported as unstable otherwise; the numbers the claims rest on must fall in the "
                     "range the seeds span, widened by half that spread on each side.",
            "claims": verdicts, "key_numbers": key_numbers, "seeds": runs}


def record_seed_study(output_root: Path = ROOT / "outputs", seeds=SEEDS) -> list[Path]:
    """Write every notebook's seed study into the default section of its expected file (other sections kept)."""
    written = []
    for nb in notebooks():
        path = EXPECTED / f"{nb.stem}.json"
        expected = json.loads(path.read_text()) if path.exists() else {}
        expected.setdefault("default", {}).update(seed_study(nb.stem, output_root, seeds))
        path.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def check_default_run(metrics: dict, default: dict) -> list[str]:
    """Problems of a recorded default run against the seed study: a claim pinned by the seeds with another
    verdict, a key number outside the seeds' range, a required name missing."""
    problems = [f"{name} not recorded" for name in default.get("required", []) if name not in metrics]
    for name, verdict in default.get("claims", {}).items():
        if verdict == "unstable":
            continue
        if name not in metrics:
            problems.append(f"{name} not recorded (seeds 0–2: {verdict})")
        elif metrics[name] is not (verdict == "holds"):
            problems.append(f"{name} = {metrics[name]} but it {verdict} at every seed of the study")
    for name, bounds in default.get("key_numbers", {}).items():
        got = metrics.get(name)
        if not _within(got, bounds):
            problems.append(f"{name} = {_short(got)} outside the seeds' range {bounds}")
    return problems


def _within(got, bounds) -> bool:
    """A number inside [low, high], or a (nested) list whose every element is inside its own range."""
    if bounds and isinstance(bounds[0], list):
        return isinstance(got, list) and len(got) == len(bounds) and all(_within(g, b) for g, b in zip(got, bounds))
    return isinstance(got, (int, float)) and not isinstance(got, bool) and bounds[0] - 1e-12 <= got <= bounds[1] + 1e-12


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        inner = ", ".join(_short(v) for v in value[:8])
        return f"[{inner}{', …' if len(value) > 8 else ''}]"
    return str(value)


def summary(results) -> str:
    lines = []
    for nb, out_dir, seconds, error in results:
        lines.append(f"== {nb.stem}  ({seconds:.0f} s{', FAILED' if error else ''})")
        if error:
            lines.append(f"   {error}")
            continue
        metrics_path = out_dir / "metrics.json"
        try:
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        except ValueError as err:         # one broken file must not hide the other notebooks' results
            lines.append(f"   {metrics_path} is not valid JSON ({err})")
            continue
        for name, value in metrics.items():
            lines.append(f"   {name:32s} {_short(value)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("select", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run with SMOKE=True")
    parser.add_argument("--output", default=None,
                        help="output root (default: outputs/ for the default run at seed 0, outputs/smoke/ with "
                             "--smoke, outputs/seeds/seed<k>/ with --seed k, so no run overwrites another's outputs)")
    parser.add_argument("--update-expected", action="store_true",
                        help="with --smoke: record each run's metrics as its reference in tests/expected/")
    parser.add_argument("--seed", type=int, default=None, help="run at this SEED (default: the notebooks' own, 0)")
    parser.add_argument("--record-seeds", action="store_true",
                        help="write the seed study of the default runs at seeds 0, 1, 2 into tests/expected/")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="with --record-seeds: the seeds whose default runs form the study (default 0 1 2)")
    args = parser.parse_args(argv)
    if args.update_expected and not args.smoke:
        parser.error("--update-expected records smoke references; add --smoke")
    if args.output is None:
        args.output = str(default_output_root(args.smoke, args.seed, args.record_seeds))
    if args.record_seeds:
        for path in record_seed_study(Path(args.output), tuple(args.seeds)):
            print(f"seed study written: {path.relative_to(ROOT)}")
        return 0
    todo = notebooks(args.select)
    if not todo:
        print(f"no notebook matches {args.select}", file=sys.stderr)
        return 2
    results = []
    for nb in todo:
        print(f"running {nb.name} …", flush=True)
        started = time.perf_counter()
        try:
            out_dir, seconds = run_notebook(nb, Path(args.output), smoke=args.smoke,
                                            extra=None if args.seed is None else {"SEED": args.seed})
            results.append((nb, out_dir, seconds, None))
            if args.update_expected:
                written = update_expected(nb.stem, json.loads((out_dir / "metrics.json").read_text()))
                print(f"reference written: {written.relative_to(ROOT)}", flush=True)
        except Exception as err:  # keep going: one failing notebook must not hide the others' results
            msg = str(err).strip().splitlines()
            results.append((nb, Path(args.output) / nb.stem, time.perf_counter() - started,
                            msg[-1] if msg else repr(err)))
    print(summary(results))
    return 1 if any(r[3] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
