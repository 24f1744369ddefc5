"""The notebooks themselves: hygiene of the committed files, and a papermill smoke run of each one whose
recorded metrics are checked against tests/expected/<stem>.json.

An expected file holds, per mode ("smoke" for this harness, "default" for `make run`'s outputs):
  "exact":  values a deterministic run must reproduce (same seed → same numbers);
  "ranges": [low, high] bounds that encode the paper's claim or the issue's acceptance;
  "required": names every run must record.
Run times are recorded ("seconds") but not asserted: a busy machine is slower without the code being wrong.
"""
import json
import math
from pathlib import Path

import nbformat
import pytest

from helpers import runner

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = runner.notebooks()
EXPECTED = ROOT / "tests" / "expected"


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") for c in code), "strip outputs before committing"
    assert all(c.get("execution_count") is None for c in code), "strip execution counts before committing"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
    for knob in ("SMOKE", "SEED", "DATA_DIR", "OUTPUT_DIR", "DEVICE"):
        assert knob in tagged[0].source, f"parameters cell lacks {knob}"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "start with a title"
    assert (EXPECTED / f"{nb_path.stem}.json").exists(), "every notebook needs its expected metrics"


def check_metrics(metrics: dict, expected: dict):
    problems = []
    for name in expected.get("required", []):
        if name not in metrics:
            problems.append(f"{name} not recorded")
    for name, value in expected.get("exact", {}).items():
        got = metrics.get(name)
        if isinstance(value, float) and isinstance(got, (int, float)):
            ok = math.isclose(got, value, rel_tol=1e-6, abs_tol=1e-9)
        else:
            ok = got == value
        if not ok:
            problems.append(f"{name} = {got!r}, expected exactly {value!r}")
    for name, (low, high) in expected.get("ranges", {}).items():
        got = metrics.get(name)
        values = got if isinstance(got, list) else [got]
        if got is None or any(v is None or not (low <= v <= high) for v in values):
            problems.append(f"{name} = {got!r}, expected within [{low}, {high}]")
    return problems


def test_check_metrics_catches_violations():
    expected = {"required": ["a", "b"], "exact": {"a": 1}, "ranges": {"c": [0, 1]}}
    assert check_metrics({"a": 1, "b": 2, "c": [0.5, 1.0]}, expected) == []
    assert len(check_metrics({"a": 2, "c": [0.5, 1.5]}, expected)) == 3


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_smoke_run(nb_path, tmp_path, repo_data_dir):
    out_dir, seconds = runner.run_notebook(nb_path, tmp_path, smoke=True, data_dir=repo_data_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    expected = json.loads((EXPECTED / f"{nb_path.stem}.json").read_text())
    problems = check_metrics(metrics, expected["smoke"])
    assert not problems, f"{nb_path.stem} (SMOKE, {seconds:.0f} s): " + "; ".join(problems)
    assert list(out_dir.glob("*.png")), "the notebook saved no figure"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_recorded_default_run(nb_path):
    """Checks outputs/<stem>/metrics.json written by `make run` (default parameters) when it exists."""
    path = ROOT / "outputs" / nb_path.stem / "metrics.json"
    if not path.exists():
        pytest.skip("no default run recorded yet (run `make run`)")
    metrics = json.loads(path.read_text())
    expected = json.loads((EXPECTED / f"{nb_path.stem}.json").read_text())
    problems = check_metrics(metrics, expected["default"])
    assert not problems, "; ".join(problems)


def _default_metrics(stem):
    path = ROOT / "outputs" / stem / "metrics.json"
    if not path.exists():
        pytest.skip("no default run recorded yet (run `make run`)")
    return json.loads(path.read_text())


def test_nmf_concepts_follow_the_papers_table2_pattern():
    """Paper 000: concepts that push the surrogate towards cancer correlate more with GradCAM on cancer tiles."""
    m = _default_metrics("03_nmf_concepts")
    coef, corr = m["logreg_coefficients"], m["gradcam_corr_cancer"]
    pro = [c for k, c in zip(coef, corr) if k > 0]
    contra = [c for k, c in zip(coef, corr) if k <= 0]
    assert pro and contra, f"all coefficients have one sign: {coef}"
    assert sum(pro) / len(pro) > sum(contra) / len(contra), (coef, corr)
