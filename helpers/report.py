"""Recording a notebook's results: ``OUTPUT_DIR/metrics.json`` (flat name → number or list) and figures."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from .cache import NotOwnedError
from .env import ensure_writable_dir

_state: dict = {"output_dir": None, "started": None}
CLAIMS_FILE = "claims.json"
# OUTPUT_DIR may be a folder of the user's: the files written there are listed here, and only those are ever replaced
LEDGER = ".written-by-helpers.json"
VERDICTS = {True: "reproduces", False: "does not reproduce"}
# what a claim's verdict can tell: a reproduction of the paper; a verdict the simulator decides by construction (the
# data were made so that it holds or fails — never counted as a reproduction); a check the paper did not make
KINDS = {"reproduction": "reproduction of the paper", "simulator": "set by the simulator",
         "beyond": "beyond the paper"}
_VERDICT_WORDS = {"reproduction": VERDICTS, "simulator": {True: "holds (set by the simulator)",
                                                          False: "fails (set by the simulator)"},
                  "beyond": {True: "holds", False: "fails"}}


def init(output_dir, fresh: bool = True) -> Path:
    """Make ``output_dir`` the place where :func:`record` and :func:`save_figure` write.

    ``fresh`` starts a new metrics.json (a notebook run records everything again); the clock for
    :func:`elapsed` starts here.
    """
    path = ensure_writable_dir(output_dir, what="OUTPUT_DIR")
    _state["output_dir"] = path
    try:    # tables of claims and notes are read in full: pandas would cut every cell at 50 characters
        import pandas as pd

        pd.set_option("display.max_colwidth", None)
    except ImportError:
        pass
    _state["started"] = time.perf_counter()
    if fresh:
        for name in ("metrics.json", CLAIMS_FILE):
            target = _take(name)       # refuses a file of the user's before anything is deleted
            if target.exists():
                target.unlink()
    return path


def _owned(folder: Path) -> set:
    """The names of the files in ``folder`` that this module wrote (its ledger). A folder written before the ledger
    existed is recognised by a claims.json in this module's format, and its results are adopted."""
    ledger = folder / LEDGER
    if ledger.exists():
        try:
            return set(json.loads(ledger.read_text()))
        except (ValueError, TypeError):
            raise NotOwnedError(f"{ledger} is not the list of files helpers wrote (edited or truncated); nothing in "
                                f"{folder} is replaced. Delete {LEDGER} only if every result file there is yours "
                                "to lose, or set OUTPUT_DIR to another folder.") from None
    try:
        rows = json.loads((folder / CLAIMS_FILE).read_text())
        legacy = isinstance(rows, list) and all(isinstance(r, dict) and {"name", "statement", "holds"} <= set(r)
                                                 for r in rows)
    except (OSError, ValueError):
        legacy = False
    if not legacy:
        return set()
    adopted = {"metrics.json", CLAIMS_FILE} | {p.name for p in folder.glob("*.png")}
    _write_ledger(folder, adopted)
    return adopted


def _write_ledger(folder: Path, names: set) -> None:
    tmp = folder / (LEDGER + ".tmp")
    tmp.write_text(json.dumps(sorted(names), indent=0))
    tmp.replace(folder / LEDGER)


def _take(name: str) -> Path:
    """``OUTPUT_DIR/name`` for writing: refused (NotOwnedError) when a file of that name exists that helpers did
    not write; otherwise entered in the folder's ledger, so that a later run may replace it."""
    folder = output_dir()
    owned = _owned(folder)
    target = folder / name
    if name not in owned:
        if target.exists():
            raise NotOwnedError(f"{target} exists and was not written by helpers; it is left as it is. Set OUTPUT_DIR "
                                "to a folder of its own (e.g. a new sub-folder), or move the file.")
        _write_ledger(folder, owned | {name})
    return target


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
    path = _take("metrics.json")
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
    path = _take(f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ------------------------------------------------------------------------------------------------ claims
def claim(name: str, statement: str, paper: str, here: str, holds, evidence: dict | None = None,
          effect=None, kind: str = "reproduction") -> bool:
    """Record one claim of the paper as a verdict of this run.

    ``metrics.json`` gets ``claim_<name>`` (true when the claim reproduces here) and every number of
    ``evidence`` (metric name → value) that the verdict rests on; ``claims.json`` keeps the row (statement, the
    paper's value, this run's value as text) for :func:`claims_table`. ``here`` is meant to be an f-string of
    the evidence, so that no number in the table is typed by hand. ``effect`` (optional) is the signed size of the
    effect the claim is about, positive in the paper's direction (e.g. a difference of means, a correlation):
    recorded as ``effect_<name>``, it lets the seed study tell "same direction, not decided" from "flips".
    ``kind`` (:data:`KINDS`): "reproduction" (the paper's claim tested on this data), "simulator" (a verdict the
    simulator decides by construction: shown and recorded, never counted as a reproduction) or "beyond" (a check
    the paper did not make, e.g. a sanity check with a control)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {', '.join(map(repr, KINDS))} ('simulator' when the data were "
                         "simulated so that the verdict is decided by construction).")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"claim name {name!r} must be a short identifier such as 'gradcam_best' "
                         "(it becomes the metric claim_<name>).")
    if not isinstance(holds, (bool, np.bool_)):
        raise TypeError(f"claim {name!r}: holds must be True or False (the verdict), got {type(holds).__name__}; "
                        "compare the evidence with the paper's statement to get one.")
    evidence = dict(evidence or {})
    if effect is not None:
        evidence[f"effect_{name}"] = effect
    for key, value in evidence.items():
        record(key, value)
    verdict = bool(record(f"claim_{name}", bool(holds)))
    path = _take(CLAIMS_FILE)
    rows = [r for r in (json.loads(path.read_text()) if path.exists() else []) if r["name"] != name]
    rows.append({"name": name, "statement": statement, "paper": str(paper), "here": str(here), "holds": verdict,
                 "evidence": sorted(evidence), "kind": kind})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    tmp.replace(path)
    return verdict


def claims(output_dir_path=None) -> list[dict]:
    """The claims recorded so far (in ``output_dir_path``, default the current OUTPUT_DIR), in order."""
    path = Path(output_dir_path or output_dir()) / CLAIMS_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _seed_study(notebook: str) -> dict:
    """The default section of ``tests/expected/<notebook>.json`` (``make seeds``); empty when the file or the study is
    missing (e.g. helpers installed without the repository)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "expected" / f"{notebook}.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("default", {})


def seed_verdicts(notebook: str) -> dict:
    """Verdicts of each claim over the seeds of the recorded seed study: claim name → list (one per seed)."""
    verdicts: dict = {}
    for metrics in _seed_study(notebook).get("seeds", {}).values():
        for key, value in metrics.items():
            if key.startswith("claim_"):
                verdicts.setdefault(key[len("claim_"):], []).append(bool(value))
    return verdicts


def seed_values(notebook: str, key: str) -> dict:
    """One recorded number of every seed of the recorded seed study: seed (str) → value; empty without a study or
    when no seed recorded ``key`` (e.g. a metric added after the study)."""
    return {seed: metrics[key] for seed, metrics in _seed_study(notebook).get("seeds", {}).items() if key in metrics}


def claims_table(notebook: str | None = None):
    """The paper-vs-here table of the recorded claims (a pandas DataFrame): statement, the paper's value, this
    run's value and the verdict. With ``notebook`` (its file stem) two columns compare with the recorded seed
    study: its label of the claim (holds / fails / same direction, not decided / flips, with how many seeds held)
    and whether this run's verdict is one the seeds gave. :func:`seed_study_note` says where the study was made."""
    import pandas as pd

    rows = claims()
    study = seed_verdicts(notebook) if notebook else {}
    labels = _seed_study(notebook).get("claims", {}) if notebook else {}
    table = pd.DataFrame({
        "claim": [r["statement"] for r in rows],
        "kind": [KINDS[r.get("kind", "reproduction")] for r in rows],
        "paper": [r["paper"] for r in rows],
        "here": [r["here"] for r in rows],
        "verdict": [_VERDICT_WORDS[r.get("kind", "reproduction")][r["holds"]] for r in rows],
    }, index=pd.Index([r["name"] for r in rows], name="claim_"))
    if study:
        table["over the seed study"] = [seed_verdict(study.get(r["name"], []), labels.get(f"claim_{r['name']}"))
                                        for r in rows]
        table["this run vs the seeds"] = [
            "not studied" if not study.get(r["name"]) else
            "a verdict the seeds gave" if r["holds"] in study[r["name"]] else "differs from every seed"
            for r in rows]
    return table


def seed_verdict(verdicts: list, label: str | None = None) -> str:
    """The seed study's label of a claim with how many seeds held it ("not studied" without seeds); without a
    recorded label: holds / fails when every seed agrees, flips otherwise."""
    if not verdicts:
        return "not studied"
    label = label or ("holds" if all(verdicts) else "fails" if not any(verdicts) else "flips")
    return f"{label} ({sum(verdicts)} of {len(verdicts)} seeds hold)"


def seed_study_note(notebook: str) -> str:
    """One Markdown sentence: where the seed study was recorded (numeric mode, platform, library versions) and how
    this run's configuration compares, so a reader knows whether to expect the study's seed-0 numbers exactly."""
    from .env import configuration

    study = _seed_study(notebook)
    if not study.get("seeds"):
        return "No seed study is recorded for this notebook (`make seeds`)."
    recorded = study.get("configuration")
    here = configuration()
    n = len(study["seeds"])
    if not recorded:
        return (f"The seed study ({n} seeds) does not say in which configuration it was recorded; compare with care. "
                f"This run: {_describe(here)}.")
    if recorded == here:
        return (f"The seed study ({n} seeds) was recorded in this run's configuration ({_describe(recorded)}): at "
                "seed 0 this run's numbers equal the study's seed-0 numbers exactly.")
    differs = sorted(k for k in set(recorded) | set(here) if recorded.get(k) != here.get(k))
    return (f"The seed study ({n} seeds) was recorded in {_describe(recorded)}; this run differs in "
            + ", ".join(f"{k} ({here.get(k)} here, {recorded.get(k)} there)" for k in differs)
            + ": its numbers can differ from the study's seed-0 run (after training, by more than rounding); the "
            "verdicts should be ones the seeds gave.")


def _describe(configuration: dict) -> str:
    names = ("numeric_mode", "system", "machine", "torch", "numpy")
    return "numeric mode " + ", ".join(str(configuration.get(k)) for k in names if configuration.get(k))


def claims_summary(notebook: str | None = None) -> str:
    """One Markdown sentence naming which claims reproduce, which do not, and which flip across seeds, followed
    (with ``notebook``) by where the seed study was recorded."""
    every = claims()
    rows = [r for r in every if r.get("kind", "reproduction") == "reproduction"]
    study = seed_verdicts(notebook) if notebook else {}
    unstable = [r["name"] for r in rows if len(set(study.get(r["name"], []))) > 1]
    held = [r["name"] for r in rows if r["holds"] and r["name"] not in unstable]
    failed = [r["name"] for r in rows if not r["holds"] and r["name"] not in unstable]
    parts = [f"**{len(held)} of {len(rows)} claims reproduce here**" + (f" ({', '.join(held)})" if held else "")]
    parts.append(f"{len(failed)} do not" + (f" ({', '.join(failed)})" if failed else ""))
    if study:
        parts.append(f"{len(unstable)} change verdict between the seeds of the study (`make seeds`)"
                     + (f" ({', '.join(unstable)})" if unstable else ""))
    text = "; ".join(parts) + "."
    for kind in ("simulator", "beyond"):
        others = [r for r in every if r.get("kind") == kind]
        if others:
            text += (f" Counted apart, {KINDS[kind]}: {sum(r['holds'] for r in others)} of {len(others)} hold ("
                     + ", ".join(f"{r['name']} {'holds' if r['holds'] else 'fails'}" for r in others) + ").")
    return text + (" " + seed_study_note(notebook) if notebook else "")
