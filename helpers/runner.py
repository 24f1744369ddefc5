"""Run every notebook in ``notebooks/`` in order with papermill and print a summary of the recorded metrics.

    python -m helpers.runner                 # default parameters → outputs/<stem>/
    python -m helpers.runner --smoke         # SMOKE=True everywhere
    python -m helpers.runner 01 03           # only notebooks whose name starts with 01 or 03
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def notebooks(selection=()) -> list[Path]:
    found = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selection:
        found = [nb for nb in found if any(nb.stem.startswith(s) for s in selection)]
    return found


def run_notebook(nb: Path, output_root: Path, smoke: bool = False, data_dir: Path | None = None,
                 extra: dict | None = None) -> tuple[Path, float]:
    """Execute one notebook into ``output_root/<stem>/`` (executed copy, figures, metrics.json)."""
    import papermill as pm

    out_dir = output_root / nb.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"SMOKE": bool(smoke), "OUTPUT_DIR": str(out_dir), "DATA_DIR": str(data_dir or ROOT / "data")}
    params.update(extra or {})
    started = time.perf_counter()
    pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(nb.parent),
                        kernel_name="python3", progress_bar=False, log_output=False)
    return out_dir, time.perf_counter() - started


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
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
        for name, value in metrics.items():
            lines.append(f"   {name:32s} {_short(value)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("select", nargs="*", help="notebook name prefixes (default: all)")
    parser.add_argument("--smoke", action="store_true", help="run with SMOKE=True")
    parser.add_argument("--output", default=str(ROOT / "outputs"), help="output root (default: outputs/)")
    args = parser.parse_args(argv)
    todo = notebooks(args.select)
    if not todo:
        print(f"no notebook matches {args.select}", file=sys.stderr)
        return 2
    results = []
    for nb in todo:
        print(f"running {nb.name} …", flush=True)
        started = time.perf_counter()
        try:
            out_dir, seconds = run_notebook(nb, Path(args.output), smoke=args.smoke)
            results.append((nb, out_dir, seconds, None))
        except Exception as err:  # keep going: one failing notebook must not hide the others' results
            msg = str(err).strip().splitlines()
            results.append((nb, Path(args.output) / nb.stem, time.perf_counter() - started,
                            msg[-1] if msg else repr(err)))
    print(summary(results))
    return 1 if any(r[3] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
