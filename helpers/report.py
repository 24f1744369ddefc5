"""Recording a notebook's results: ``OUTPUT_DIR/metrics.json`` (flat name → number or list) and figures."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

_state: dict = {"output_dir": None, "started": None}


def init(output_dir, fresh: bool = True) -> Path:
    """Make ``output_dir`` the place where :func:`record` and :func:`save_figure` write.

    ``fresh`` starts a new metrics.json (a notebook run records everything again); the clock for
    :func:`elapsed` starts here.
    """
    path = ensure_writable_dir(output_dir, what="OUTPUT_DIR")
    _state["output_dir"] = path
    _state["started"] = time.perf_counter()
    metrics = path / "metrics.json"
    if fresh and metrics.exists():
        metrics.unlink()
    return path


def ensure_writable_dir(path, what: str = "directory", create: bool = True) -> Path:
    """Return ``path`` as a Path after checking it is (or can be made) a writable directory."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{what} is empty; set it in the notebook's parameters cell.")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what}={str(path)!r} is a file, not a directory; point {what} at a folder.")
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{what}={str(path)!r} does not exist; create it or set {what} to an existing folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"{what}={str(path)!r} cannot be created ({err.strerror}); "
                                  f"set {what} to a folder you can write to.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}={str(path)!r} is not writable; set {what} to a folder you can write to.")
    return path


def output_dir() -> Path:
    if _state["output_dir"] is None:
        raise RuntimeError("helpers.report.init(OUTPUT_DIR) has not been called; call it in the setup cell.")
    return _state["output_dir"]


def elapsed() -> float:
    """Seconds since :func:`init`."""
    if _state["started"] is None:
        raise RuntimeError("helpers.report.init(OUTPUT_DIR) has not been called; call it in the setup cell.")
    return time.perf_counter() - _state["started"]


def _plain(value, name: str):
    """Turn numpy scalars/arrays into JSON numbers or lists of numbers; refuse anything else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"metric {name!r} is {value}; record finite numbers only (check the computation).")
        return value
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    raise TypeError(f"metric {name!r} has type {type(value).__name__}; record a number or a list of numbers.")


def record(name: str, value):
    """Store ``name → value`` in ``OUTPUT_DIR/metrics.json`` (read, update, write) and return the value."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(f"metric name {name!r} must be a non-empty string without spaces.")
    plain = _plain(value, name)
    path = output_dir() / "metrics.json"
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics[name] = plain
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(path)
    return plain


def load_metrics(output_dir_path) -> dict:
    path = Path(output_dir_path) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics.json in {str(output_dir_path)!r}; run the notebook first.")
    return json.loads(path.read_text())


def save_figure(fig, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``OUTPUT_DIR/<name>.png`` and return the path."""
    if not name or "/" in name:
        raise ValueError(f"figure name {name!r} must be a plain file stem such as 'gallery'.")
    path = output_dir() / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
