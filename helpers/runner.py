"""Run every notebook in ``notebooks/`` in order with papermill and print a summary of the recorded metrics.

    python -m helpers.runner                 # default parameters → outputs/<stem>/
    python -m helpers.runner --smoke         # SMOKE=True everywhere → outputs/smoke/<stem>/
    python -m helpers.runner 01 03           # only notebooks whose name starts with 01 or 03
    python -m helpers.runner --smoke --update-expected   # `make expected`: record the smoke references
    python -m helpers.runner --seed 1        # a default run at another seed → outputs/seeds/seed1/<stem>/
    python -m helpers.runner --keep-seed-runs --seeds 1    # keep a finished seed run in tests/expected/seed_runs/
    python -m helpers.runner --record-seeds                # `make seeds`' last step: the seed study → tests/expected/
    python -m helpers.runner --record-tolerances           # `make tolerances`: spread over other numeric configurations
    python -m helpers.runner 07 --record-seeds             # one notebook's seed study (after its five default runs)
    python -m helpers.runner 07 --record-tolerances --configurations native   # one notebook, some configurations

The smoke references in ``tests/expected/<stem>.json`` are every number a SMOKE run records (run times aside);
the regression test compares each run with them. Regenerating them is a deliberate act: review the diff.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from . import env

ROOT = Path(__file__).resolve().parent.parent
# beside metrics.json: the numeric mode, platform and library versions the run was made with (helpers.env)
CONFIGURATION_FILE = "configuration.json"
CODE_FILE = "code.json"        # which notebook and helpers made a run (code_fingerprint)
EXPECTED = ROOT / "tests" / "expected"
# Finished default runs at each seed, kept in the repository (small JSON, run times left out): a seed study whose
# runs take longer than one sitting is finished in another checkout (`--keep-seed-runs`, read by `seed_study`).
KEPT_SEED_RUNS = EXPECTED / "seed_runs"
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


def kernel_argv() -> list[str]:
    """The command of the ``xai-medimg`` kernel: this environment's Python, through ``helpers.env``'s launcher, which
    sets the numeric mode's variables before numpy or torch load (``XAI_NUMERIC_MODE`` chooses the mode)."""
    return [sys.executable, "-m", "helpers.env", "kernel", "-f", "{connection_file}"]


def ensure_kernel() -> str:
    """The notebooks' kernel, ``xai-medimg``: this environment's Python. Its kernelspec is written into this
    environment (``sys.prefix/share/jupyter/kernels``, as ``python -m ipykernel install --sys-prefix`` does) when it is
    missing, points at another Python or starts without the numeric-mode launcher, so that JupyterLab and papermill
    open the notebooks on the environment that has the project installed, never on whichever ``python3`` a JupyterHub
    offers, and with the numbers pinned (helpers.env, "numeric mode")."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if Path(spec.argv[0]).absolute() == Path(sys.executable).absolute() and spec.argv == kernel_argv():
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    folder = Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix))
    spec_file = folder / "kernel.json"
    kernel = json.loads(spec_file.read_text())
    kernel["argv"] = kernel_argv()
    spec_file.write_text(json.dumps(kernel, indent=1) + "\n")
    return KERNEL_NAME


def _module_file(name: str) -> Path | None:
    """The source file of module ``name`` (``helpers.x.y``) inside this project, or None."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_helpers(tree, package: str) -> set[str]:
    """The ``helpers`` modules an abstract syntax tree imports (``package`` resolves relative imports)."""
    import ast

    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".") if node.level else []
            base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)     # `from helpers import env`
    found = set()
    for name in names:
        if name.split(".")[0] != "helpers":
            continue
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))   # a module's packages run first
    return {name for name in found if _module_file(name) is not None}


def helpers_modules(nb: Path) -> list[str]:
    """Every ``helpers`` module a notebook's code reaches: the ones its cells import and, transitively, theirs.

    Raises ValueError when a code cell cannot be parsed (after dropping IPython's ``%`` and ``!`` lines): the run's
    code would then be unknown."""
    import ast

    cells = json.loads(Path(nb).read_text())["cells"]
    todo = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            todo |= _imported_helpers(ast.parse("\n".join(lines)), "")
        except SyntaxError as err:
            raise ValueError(f"a code cell of {Path(nb).name} does not parse ({err}); its imports of helpers are "
                             f"unknown, so the run's code cannot be fingerprinted: fix the cell") from None
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo |= _imported_helpers(ast.parse(path.read_text()), package) - seen
    return sorted(seen)


def code_fingerprint(nb: Path) -> dict:
    """What code made a run: sha256 of the notebook's cell sources (outputs and metadata left out) and of every
    ``helpers`` module the notebook reaches (:func:`helpers_modules`), so a change to another notebook's module
    leaves this notebook's runs current. A seed study is made of runs of one code (see :func:`seed_study`), and a
    seed run whose code is the current one need not be repeated (``--reuse``)."""
    import hashlib

    cells = json.loads(Path(nb).read_text())["cells"]
    notebook = hashlib.sha256(json.dumps([(c["cell_type"], "".join(c["source"])) for c in cells]).encode()).hexdigest()
    helpers = hashlib.sha256()
    for name in helpers_modules(nb):
        path = _module_file(name)
        helpers.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return {"notebook": notebook, "helpers": helpers.hexdigest()}


def run_notebook(nb: Path, output_root: Path, smoke: bool = False, data_dir: Path | None = None,
                 extra: dict | None = None) -> tuple[Path, float]:
    """Execute one notebook into ``output_root/<stem>/`` (executed copy, figures, metrics.json)."""
    import papermill as pm

    # absolute paths: the notebook runs with notebooks/ as its working directory
    out_dir = Path(output_root).resolve() / nb.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), "OUTPUT_DIR": str(out_dir), "DATA_DIR": str(Path(data_dir or ROOT / "data").resolve())}
    params.update(extra or {})
    code = code_fingerprint(nb)            # before the run: the code it starts with
    (out_dir / CODE_FILE).unlink(missing_ok=True)
    started = time.perf_counter()
    # the kernel inherits this process's environment: a MPLBACKEND=Agg set for headless tests would keep every
    # figure out of the executed notebook (and so out of the book); the inline backend embeds them
    # The numeric mode's variables go to the kernel too (its launcher sets them again from XAI_NUMERIC_MODE).
    with _environment({"MPLBACKEND": "module://matplotlib_inline.backend_inline", **env.numeric_environment()}):
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(nb.parent),
                            kernel_name=ensure_kernel(), progress_bar=False, log_output=False)
        configuration = env.configuration()          # as the kernel saw it
    (out_dir / CONFIGURATION_FILE).write_text(json.dumps(configuration, indent=1) + "\n")
    (out_dir / CODE_FILE).write_text(json.dumps(code, indent=1) + "\n")
    return out_dir, time.perf_counter() - started


def is_current_run(out_dir: Path, nb: Path) -> bool:
    """A finished run in ``out_dir`` made by the current code of ``nb`` in this process's numeric configuration."""
    out_dir = Path(out_dir)
    files = [out_dir / name for name in ("metrics.json", CONFIGURATION_FILE, CODE_FILE)]
    return all(f.exists() for f in files) and json.loads(files[1].read_text()) == env.configuration() and \
        json.loads(files[2].read_text()) == code_fingerprint(nb)


@contextlib.contextmanager
def _environment(variables: dict):
    """These environment variables while the block runs (a kernel started in it inherits them), then the old ones."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def smoke_reference(metrics: dict, configuration: dict | None = None) -> dict:
    """The smoke section of an expected file for one run's metrics: every value, the run times listed apart, and the
    configuration (numeric mode, platform, library versions) the values are exact for."""
    return {
        "about": "Every number a SMOKE run records, compared by tests/test_notebooks.py at rel_tol (ints, booleans "
                 "and list lengths exactly) when the run's configuration is this one, and within 'tolerances' (the "
                 "spread measured over other configurations, `make tolerances`) otherwise. Regenerate on purpose "
                 "with `make expected` and review the diff.",
        "configuration": dict(configuration or env.configuration()),
        "rel_tol": SMOKE_REL_TOL, "abs_tol": SMOKE_ABS_TOL,
        "values": {k: v for k, v in sorted(metrics.items()) if not is_timing(k)},
        "timings": sorted(k for k in metrics if is_timing(k)),
    }


def is_reference_configuration(reference: dict, configuration: dict | None = None) -> bool:
    """True when a run made in ``configuration`` (default: this process's) must reproduce ``reference`` exactly."""
    return dict(configuration or env.configuration()) == reference.get("configuration")


def unmeasured_vendor(reference: dict, configuration: dict | None = None) -> str | None:
    """The processor vendor of a run in ``configuration`` (default: this process's) when it is part of the
    configuration (not Intel: see helpers.env) and none of the configurations the reference's spread was measured in
    ran on it; None otherwise (always None in the reference's own configuration, which is compared bit for bit).
    Such a run cannot be judged number by number: nothing says how far it may move."""
    if is_reference_configuration(reference, configuration):
        return None
    vendor = dict(configuration or env.configuration()).get("processor_vendor")
    measured = reference.get("tolerances", {}).get("configurations", {})
    seen = {run.get("configuration", {}).get("processor_vendor") for run in measured.values()}
    return None if vendor is None or vendor in seen else vendor


def compare_with_reference(metrics: dict, reference: dict, configuration: dict | None = None) -> list[str]:
    """Differences between a run's metrics and a smoke reference (empty list: the run reproduces it).

    In the reference's configuration every number must be equal (rel_tol). In another one (another numeric mode,
    processor, platform or library version) each number may move by the spread measured over other configurations
    (``reference["tolerances"]``: an absolute margin per number, or the set of values seen for verdicts and counts);
    a number without a measured spread must still be equal. On a processor vendor no spread was measured on
    (:func:`unmeasured_vendor`) only the names are compared: every recorded number has a reference and every
    reference number is recorded."""
    exact = configuration is None and "configuration" not in reference or \
        is_reference_configuration(reference, configuration)
    rel, abs_ = float(reference.get("rel_tol", SMOKE_REL_TOL)), float(reference.get("abs_tol", SMOKE_ABS_TOL))
    spread = {} if exact else reference.get("tolerances", {}).get("numbers", {})
    expected = reference.get("values", {})
    problems = [f"{name} is recorded but has no reference (new metric? run `make expected`)"
                for name in sorted(set(metrics) - set(expected)) if not is_timing(name)]
    # a number that a measured configuration left unrecorded (undefined there, e.g. the mean of no finite value)
    may_be_missing = set() if exact else set(reference.get("tolerances", {}).get("missing", []))
    problems += [f"{name} was not recorded" for name in sorted(set(expected) - set(metrics) - may_be_missing)]
    problems += [f"run time {name} was not recorded" for name in reference.get("timings", []) if name not in metrics]
    if not exact and unmeasured_vendor(reference, configuration):
        return problems
    for name in sorted(set(expected) & set(metrics)):
        why = _differs(metrics[name], expected[name], rel, abs_, spread.get(name))
        if why:
            problems.append(f"{name}: {why}" + ("" if exact else " (beyond the spread measured over configurations)"))
    return problems


def _differs(got, want, rel, abs_, tolerance=None) -> str | None:
    """Why ``got`` differs from ``want``; ``tolerance``: None (exact), an absolute margin, a list of values seen
    (verdicts, counts) or, for lists, one of these per element."""
    import math

    if isinstance(want, list) or isinstance(got, list):
        if not (isinstance(want, list) and isinstance(got, list)) or len(got) != len(want):
            return f"{_short(got)} where the reference has {_short(want)}"
        per_element = tolerance if isinstance(tolerance, list) and len(tolerance) == len(want) else [None] * len(want)
        for i, (g, w, t) in enumerate(zip(got, want, per_element)):
            why = _differs(g, w, rel, abs_, t)
            if why:
                return f"element {i}: {why}"
        return None
    if isinstance(tolerance, dict) and "seen" in tolerance:
        return None if got in tolerance["seen"] and type(got) is type(want) else \
            f"{got!r}, reference {want!r} (seen over configurations: {tolerance['seen']})"
    if isinstance(want, bool) or isinstance(got, bool) or isinstance(want, int) and isinstance(got, int):
        return None if got == want and type(got) is type(want) else f"{got!r}, reference {want!r}"
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        margin = max(abs_, float(tolerance)) if isinstance(tolerance, (int, float)) else abs_
        return None if math.isclose(got, want, rel_tol=rel, abs_tol=margin) else f"{got!r}, reference {want!r}" + (
            f" ± {margin:.3g}" if margin > abs_ else "")
    return None if got == want else f"{got!r}, reference {want!r}"


def measured_spread(reference_values: dict, runs: dict) -> dict:
    """Per number, how far the runs of other configurations (label → metrics) moved from the reference: the largest
    absolute difference for real numbers, the values seen for verdicts and counts (per element for lists). Numbers
    that never moved get no entry (they stay exact)."""
    spread = {}
    for name, want in reference_values.items():
        got = [m[name] for m in runs.values() if name in m]
        found = _spread_of(want, got)
        if found is not None:
            spread[name] = found
    return spread


def _spread_of(want, got: list):
    if isinstance(want, list):
        if any(not isinstance(g, list) or len(g) != len(want) for g in got):
            return None
        parts = [_spread_of(w, [g[i] for g in got]) for i, w in enumerate(want)]
        return None if all(p is None for p in parts) else parts
    if isinstance(want, bool) or isinstance(want, int):
        seen = sorted({want, *got}, key=lambda v: (str(type(v)), v))
        return None if seen == [want] else {"seen": seen}
    if isinstance(want, float):
        moved = max((abs(g - want) for g in got if isinstance(g, (int, float))), default=0.0)
        return moved if moved > 0 else None
    return None


def merge_spread(a, b):
    """Two measured spreads of one number (see :func:`measured_spread`) as one: the larger margin, the union of the
    values seen, element by element for lists; None means "did not move"."""
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [merge_spread(x, y) for x, y in zip(a, b)]
    if isinstance(a, dict) and isinstance(b, dict) and "seen" in a and "seen" in b:
        return {"seen": sorted({*a["seen"], *b["seen"]}, key=lambda v: (str(type(v)), v))}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return max(a, b)
    raise ValueError(f"spreads {a!r} and {b!r} are of different kinds; record the tolerances again without merging.")


def update_expected(stem: str, metrics: dict) -> Path:
    """Write the smoke section of ``tests/expected/<stem>.json`` from a SMOKE run (other sections kept)."""
    path = EXPECTED / f"{stem}.json"
    expected = json.loads(path.read_text()) if path.exists() else {}
    expected["smoke"] = smoke_reference(metrics)     # new values: the spread is measured again (`make tolerances`)
    path.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    return path


# Other configurations whose smoke runs give the tolerances (`make tolerances`): the native mode as the machine
# offers it, on one thread, and with MKL, oneDNN and torch held to AVX2 as on a processor without AVX-512.
TOLERANCE_CONFIGURATIONS = {
    # the default mode itself: on a processor where it is not bit-identical with the reference (not Intel: see
    # helpers.env), its smoke runs are one more measured configuration (recorded with --merge)
    "portable": {"XAI_NUMERIC_MODE": "portable"},
    "native": {"XAI_NUMERIC_MODE": "native"},
    "native-1-thread": {"XAI_NUMERIC_MODE": "native", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "native-avx2": {"XAI_NUMERIC_MODE": "native", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def record_tolerances(output_root: Path, selection=(), configurations=None, reuse: bool = False,
                      merge: bool = False) -> list[Path]:
    """Run the smoke notebooks under each of ``configurations`` (label → environment variables) and write, into
    each expected file, the spread of every number around the smoke reference (see :func:`measured_spread`).
    ``reuse``: a notebook whose run in that configuration is already in ``output_root/<label>/`` (same
    configuration.json) is read instead of run again — for a recording that was interrupted. ``merge``: add these
    configurations' spread to the recorded one (largest difference, union of the values seen) instead of replacing
    it — for a configuration only another machine has (another processor vendor)."""
    configurations = configurations or {k: v for k, v in TOLERANCE_CONFIGURATIONS.items() if k != "portable"}
    runs: dict = {}
    failed: dict = {}     # a smoke run that stops with an error in a configuration is a finding, recorded as such
    for label, variables in configurations.items():
        with _environment(variables):
            for nb in notebooks(selection):
                out_dir = Path(output_root).resolve() / label / nb.stem
                done = out_dir / CONFIGURATION_FILE
                if not (reuse and done.exists() and (out_dir / "metrics.json").exists()
                        and json.loads(done.read_text()) == env.configuration()):
                    print(f"running {nb.name} in configuration {label} …", flush=True)
                    try:
                        out_dir, _ = run_notebook(nb, Path(output_root) / label, smoke=True)
                    except Exception as err:  # noqa: BLE001 - the other notebooks and configurations still count
                        lines = [line for line in str(err).strip().splitlines() if line.strip()]
                        failed.setdefault(nb.stem, {})[label] = lines[-1] if lines else repr(err)
                        print(f"{nb.name} stopped with an error in configuration {label}: "
                              f"{failed[nb.stem][label]}", flush=True)
                        continue
                runs.setdefault(nb.stem, {})[label] = {
                    "metrics": json.loads((out_dir / "metrics.json").read_text()),
                    "configuration": json.loads((out_dir / CONFIGURATION_FILE).read_text()),
                    "variables": variables}
    written = []
    for stem in sorted(set(runs) | set(failed)):
        found = runs.get(stem, {})
        path = EXPECTED / f"{stem}.json"
        expected = json.loads(path.read_text())
        smoke = expected["smoke"]
        recorded = smoke.get("tolerances", {}) if merge else {}
        numbers = measured_spread(smoke["values"], {label: r["metrics"] for label, r in found.items()})
        for name, old in recorded.get("numbers", {}).items():
            numbers[name] = merge_spread(old, numbers.get(name))
        missing = {name for name in smoke["values"] for r in found.values() if name not in r["metrics"]}
        missing |= set(recorded.get("missing", []))
        smoke["tolerances"] = {
            "about": "The largest difference from 'values' seen over the smoke runs of these configurations (the "
                     "values seen, for verdicts and counts); a number that did not move has no entry and stays exact; "
                     "'missing' lists numbers a configuration did not record (undefined there). Nothing is widened "
                     "beyond what was measured.",
            "configurations": {**recorded.get("configurations", {}),
                               **{label: {"variables": r["variables"], "configuration": r["configuration"]}
                                  for label, r in found.items()}},
            "numbers": dict(sorted(numbers.items())),
            **({"missing": sorted(missing)} if missing else {}),
        }
        stopped = {**recorded.get("failed", {}), **failed.get(stem, {})}
        if stopped:      # configuration → the error the smoke run stopped with there (no spread measured for it)
            smoke["tolerances"]["failed"] = dict(sorted(stopped.items()))
        path.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


SEEDS = (0, 1, 2, 3, 4)
# A claim's label over the seed study (see claim_label)
LABELS = ("holds", "fails", "same direction, not decided", "flips")


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


def claim_label(verdicts: list, effects: list | None = None) -> str:
    """A claim's label over the seeds: "holds" (true at every seed), "fails" (false at every seed, and its effect
    does not point the paper's way at every seed), "same direction, not decided" (not true at every seed, but the
    effect — recorded as ``effect_<name>``, positive in the paper's direction — is positive at every seed: the
    direction agrees and the test is underpowered), "flips" (the verdict changes between seeds, the direction too)."""
    if all(v is True for v in verdicts):
        return "holds"
    same_direction = bool(effects) and len(effects) == len(verdicts) and all(
        isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0 for e in effects)
    if same_direction:
        return "same direction, not decided"
    return "fails" if all(v is False for v in verdicts) else "flips"


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


def _covers_everything(values: list, bounds) -> bool:
    """A range that cannot fail: the widened range of numbers that all lie in [0, 1] (p-values, fractions, scores)
    covers all of [0, 1], or of numbers in [−1, 1] (correlations) all of [−1, 1]. Lists: when every element's does."""
    if bounds and isinstance(bounds[0], list):
        return all(_covers_everything([v[i] for v in values], b) for i, b in enumerate(bounds))
    if all(0 <= v <= 1 for v in values):
        return bounds[0] <= 0 and bounds[1] >= 1
    if all(-1 <= v <= 1 for v in values):
        return bounds[0] <= -1 and bounds[1] >= 1
    return False


def kept_seed_run_file(stem: str, seed: int) -> Path:
    """Where :func:`keep_seed_runs` keeps the default run of notebook ``stem`` at ``seed``."""
    return KEPT_SEED_RUNS / stem / f"seed{seed}.json"


def _seed_run(output_root: Path, stem: str, seed: int) -> dict | None:
    """The default run at ``seed``: from the output folder when it holds one, else the kept one, else None. A dict
    of metrics (run times left out), configuration, code and the claims' rows (claims.json)."""
    folder = seed_run_dir(output_root, seed) / stem
    if (folder / "metrics.json").exists():
        def read(name, default=None):
            return json.loads((folder / name).read_text()) if (folder / name).exists() else default
        metrics = read("metrics.json")
        return {"metrics": {k: v for k, v in sorted(metrics.items()) if not is_timing(k)},
                "configuration": read(CONFIGURATION_FILE), "code": read(CODE_FILE), "claims": read("claims.json", [])}
    kept = kept_seed_run_file(stem, seed)
    return json.loads(kept.read_text()) if kept.exists() else None


def is_current_kept_run(nb: Path, seed: int) -> bool:
    """A run of ``nb`` at ``seed`` kept in tests/expected/seed_runs/ by the current code in this configuration."""
    kept = kept_seed_run_file(nb.stem, seed)
    if not kept.exists():
        return False
    run = json.loads(kept.read_text())
    return run.get("code") == code_fingerprint(nb) and run.get("configuration") == env.configuration()


def keep_seed_runs(output_root: Path = ROOT / "outputs", seeds=SEEDS, selection=()) -> tuple[list[Path], list[str]]:
    """Copy each finished default run in ``output_root`` made by the current code into tests/expected/seed_runs/
    (:func:`kept_seed_run_file`), so the seed study can be completed in another checkout of the same code. Returns
    the files written and what was left out (missing runs, runs of older code) in words."""
    written, left = [], []
    for nb in notebooks(selection):
        current = code_fingerprint(nb)
        for seed in seeds:
            folder = seed_run_dir(output_root, seed) / nb.stem
            if not (folder / "metrics.json").exists():
                left.append(f"{nb.stem} seed {seed}: no finished run in {folder}")
                continue
            run = _seed_run(output_root, nb.stem, seed)
            if run["code"] != current:
                left.append(f"{nb.stem} seed {seed}: made by other code than the current one; run it again")
                continue
            # what papermill gave the run (the executed copy's metadata): a default run at this seed, nothing else
            executed = folder / nb.name
            parameters = json.loads(executed.read_text()).get("metadata", {}).get("papermill", {}).get(
                "parameters", {}) if executed.exists() else None
            if parameters is None or parameters.get("SMOKE") or parameters.get("SEED", 0) != seed:
                left.append(f"{nb.stem} seed {seed}: the run in {folder} is not a default run at seed {seed} "
                            f"(papermill parameters: {parameters}); run it again")
                continue
            path = kept_seed_run_file(nb.stem, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n")
            written.append(path)
    return written, left


def seed_study(stem: str, output_root: Path = ROOT / "outputs", seeds=SEEDS) -> dict:
    """The default section's seed study for one notebook from its default runs at ``seeds`` (each from the output
    folder, or kept in tests/expected/seed_runs/ by :func:`keep_seed_runs`): every run's metrics, each claim's label
    over the seeds (:func:`claim_label`) with the verdicts seen, and, for the numbers the claims rest on, the range
    the seeds span widened by half their spread on each side (numbers whose range would contain every possible
    value are listed as unchecked instead), and the configuration the runs were made in (``configuration``). When
    the runs were made in more than one, ``configurations`` gives each seed's and ``configuration`` is the first
    seed's: the run a default run (seed 0) is compared with, so the book says whether to expect its numbers exactly."""
    runs, configurations, codes, claim_rows = {}, {}, {}, {}
    for seed in seeds:
        run = _seed_run(output_root, stem, seed)
        if run is None:
            raise FileNotFoundError(
                f"no default run at seed {seed} for {stem} ({seed_run_dir(output_root, seed) / stem / 'metrics.json'}, "
                f"nor kept in {kept_seed_run_file(stem, seed)}); run `make run` (seed 0) and "
                f"`python -m helpers.runner --seed {seed} --output {seed_run_dir(output_root, seed)}`.")
        runs[str(seed)] = run["metrics"]
        if run.get("configuration") is not None:
            configurations[str(seed)] = run["configuration"]
        codes[str(seed)] = run.get("code")
        claim_rows[str(seed)] = run.get("claims") or []
    distinct_code = {json.dumps(c, sort_keys=True) for c in codes.values()}
    if len(distinct_code) > 1:
        groups = {}
        for seed, c in codes.items():
            groups.setdefault(json.dumps(c, sort_keys=True), []).append(seed)
        raise ValueError(f"the default runs of {stem} at seeds {', '.join(codes)} were made by different code (seeds "
                         + " | ".join(", ".join(g) for g in groups.values()) + "); a seed study compares seeds, not "
                         "code versions: run the stale ones again (seed 0 with `make run`, the others with `make seeds`, which "
                         "repeats only the runs of older code).")
    claims = sorted({k for m in runs.values() for k in m if k.startswith("claim_")})
    labels, seen = {}, {}
    for name in claims:
        verdicts = [m.get(name) for m in runs.values()]
        effects = [m.get("effect_" + name[len("claim_"):]) for m in runs.values()]
        labels[name] = claim_label(verdicts, effects if any(e is not None for e in effects) else None)
        seen[name] = sorted({v for v in verdicts if isinstance(v, bool)})
    evidence = sorted({e for row in claim_rows[str(seeds[0])] for e in row["evidence"]})
    key_numbers, unchecked = {}, {}
    for name in evidence:
        values = [m.get(name) for m in runs.values()]
        if all(v is not None for v in values):
            spread = _spread_range(values)
            if spread is None:
                continue
            if _covers_everything(values, spread):
                unchecked[name] = "the seeds span its whole range"
            else:
                key_numbers[name] = spread
    distinct = {json.dumps(c, sort_keys=True) for c in configurations.values()}
    # runs kept over several sittings can come from machines of another processor vendor (in the portable mode a
    # vendor other than Intel is part of the configuration): say which seed ran where, and compare a default run with
    # the configuration of the study's own seed-0 run, the one whose numbers it should equal
    mixed = {"configurations": configurations} if len(distinct) > 1 else {}
    configuration = json.loads(distinct.pop()) if len(distinct) == 1 else configurations.get(str(seeds[0]))
    # every name each seed recorded: a rename or a dropped metric shows up in the default-run check
    required = sorted(set.intersection(*(set(m) for m in runs.values())))
    return {"about": f"Default runs at seeds {', '.join(map(str, seeds))} (`make seeds`). Each claim is labelled "
                     "holds / fails / same direction, not decided / flips (helpers.runner.claim_label); a default run "
                     "must record every name the seeds recorded, give each claim a verdict the seeds gave, and record "
                     "no claim the study lacks; the numbers the claims rest on must fall in the range the "
                     "seeds span, widened by half that spread on each side (except those listed as unchecked).",
            "configuration": configuration, **mixed,
            "code": codes[str(seeds[0])],          # one code made every run (checked above)
            "required": required, "claims": labels, "verdicts_seen": seen, "key_numbers": key_numbers,
            "unchecked": unchecked, "seeds": runs}


def record_seed_study(output_root: Path = ROOT / "outputs", seeds=SEEDS, selection=()) -> list[Path]:
    """Write the seed study of every notebook (or of those ``selection`` names, by prefix) into the default section
    of its expected file (other sections and other notebooks' files kept)."""
    written = []
    for nb in notebooks(selection):
        path = EXPECTED / f"{nb.stem}.json"
        expected = json.loads(path.read_text()) if path.exists() else {}
        expected.setdefault("default", {}).update(seed_study(nb.stem, output_root, seeds))
        path.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def check_default_run(metrics: dict, default: dict, code: dict | None = None) -> list[str]:
    """Problems of a recorded default run against the seed study: any claim whose verdict none of the seeds gave (or,
    for a claim whose direction agreed at every seed, whose effect turned), a key number outside the seeds' range,
    a required name missing, a claim the seed study does not know (the study is older than the notebook). ``code``:
    the run's code.json; when the study records another code, that comes first, since it explains what follows."""
    problems = []
    if code is not None and default.get("code") is not None and code != default["code"]:
        changed = " and ".join(part for part in ("notebook", "helpers") if code.get(part) != default["code"].get(part))
        problems.append(f"the seed study was recorded with other code (the {changed} changed since): what follows "
                        f"compares two versions, not two runs; record the study again (`make seeds`)")
    problems += [f"{name} not recorded" for name in default.get("required", []) if name not in metrics]
    problems += [f"{name} is not in the seed study (recorded before this claim existed): rerun `make seeds`"
                 for name in sorted(metrics) if name.startswith("claim_") and name not in default.get("claims", {})]
    seen_by_claim = default.get("verdicts_seen", {})
    for name, label in default.get("claims", {}).items():
        seen = seen_by_claim.get(name) or {"holds": [True], "fails": [False]}.get(label, [False, True])
        n = len(default.get("seeds", {})) or "the"
        if name not in metrics:
            problems.append(f"{name} not recorded (seed study: {label})")
        elif metrics[name] not in seen:
            problems.append(f"{name} = {metrics[name]} but it is {seen[0]} at all {n} seeds of the study ({label})")
        elif label == "same direction, not decided":
            effect = metrics.get("effect_" + name[len("claim_"):])
            if not (isinstance(effect, (int, float)) and effect > 0):
                problems.append(f"{name}: its effect {effect} points against the paper, where it pointed the paper's "
                                f"way at every seed of the study")
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


def _seed_value(text: str) -> int:
    """argparse type of a seed: a non-negative integer (the notebooks refuse others only after starting a kernel)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give a seed such as 0 or 3") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; a seed is a non-negative integer such as 0 or 3")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("select", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run with SMOKE=True")
    parser.add_argument("--output", default=None,
                        help="output root (default: outputs/ for the default run at seed 0, outputs/smoke/ with "
                             "--smoke, outputs/seeds/seed<k>/ with --seed k, so no run overwrites another's outputs)")
    parser.add_argument("--update-expected", action="store_true",
                        help="with --smoke: record each run's metrics as its reference in tests/expected/")
    parser.add_argument("--seed", type=_seed_value, default=None,
                        help="run at this SEED, a non-negative integer (default: the notebooks' own, 0)")
    parser.add_argument("--record-seeds", action="store_true",
                        help="write the seed study of the default runs at --seeds into tests/expected/")
    parser.add_argument("--seeds", type=_seed_value, nargs="+", default=list(SEEDS),
                        help=f"with --record-seeds: the seeds whose default runs form the study (default "
                             f"{' '.join(map(str, SEEDS))})")
    parser.add_argument("--keep-seed-runs", action="store_true",
                        help="copy the finished default runs at --seeds made by the current code into "
                             "tests/expected/seed_runs/, so the seed study can be finished in another checkout")
    parser.add_argument("--record-tolerances", action="store_true",
                        help="`make tolerances`: smoke runs under other numeric configurations → the measured spread "
                             "in tests/expected/ (output: outputs/smoke/configurations/)")
    parser.add_argument("--configurations", nargs="+", choices=sorted(TOLERANCE_CONFIGURATIONS), default=None,
                        help="with --record-tolerances: only these configurations (default: all)")
    parser.add_argument("--merge", action="store_true",
                        help="with --record-tolerances: add the spread of these configurations to the recorded one")
    parser.add_argument("--reuse", action="store_true",
                        help="with --record-tolerances: read runs already in the output folder instead of repeating "
                             "them; with --seed: skip a notebook whose run there was made by the current code in this "
                             "configuration (an interrupted `make seeds` resumes)")
    args = parser.parse_args(argv)
    if args.update_expected and not args.smoke:
        parser.error("--update-expected records smoke references; add --smoke")
    if args.record_tolerances:
        root = Path(args.output or ROOT / "outputs" / "smoke" / "configurations")
        chosen = {k: TOLERANCE_CONFIGURATIONS[k] for k in args.configurations} if args.configurations else None
        for path in record_tolerances(root, args.select, chosen, reuse=args.reuse, merge=args.merge):
            print(f"tolerances written: {path.relative_to(ROOT)}")
        return 0
    if args.keep_seed_runs and args.seed is not None:
        parser.error("--keep-seed-runs keeps the runs at --seeds (e.g. --seeds 1 2); --seed starts a run")
    if args.output is None:
        args.output = str(default_output_root(args.smoke, args.seed, args.record_seeds or args.keep_seed_runs))
    if args.keep_seed_runs:
        written, left = keep_seed_runs(Path(args.output), tuple(args.seeds), args.select)
        for path in written:
            print(f"seed run kept: {path.relative_to(ROOT)}")
        for line in left:
            print(f"not kept: {line}")
        return 0
    if args.record_seeds:
        for path in record_seed_study(Path(args.output), tuple(args.seeds), args.select):
            print(f"seed study written: {path.relative_to(ROOT)}")
        return 0
    todo = notebooks(args.select)
    if not todo:
        print(f"no notebook matches {args.select}", file=sys.stderr)
        return 2
    results = []
    for nb in todo:
        if args.reuse and args.seed is not None and is_current_run(Path(args.output) / nb.stem, nb):
            print(f"{nb.name}: the run in {args.output} is from the current code; kept", flush=True)
            continue
        if args.reuse and args.seed is not None and is_current_kept_run(nb, args.seed):
            print(f"{nb.name}: the run kept in {kept_seed_run_file(nb.stem, args.seed).relative_to(ROOT)} is from "
                  f"the current code; not repeated", flush=True)
            continue
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
