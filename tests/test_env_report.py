import json
import math

import numpy as np
import pytest
import torch

from helpers import env, report


def test_auto_device_is_available_one():
    dev = env.select_device("auto")
    assert dev.type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        assert dev.type in {"cpu", "mps"}
    assert env.select_device("cpu").type == "cpu"


def test_bad_device_names_the_fix():
    with pytest.raises(ValueError, match="DEVICE"):
        env.select_device("tpu-please")


def test_same_seed_same_numbers():
    env.seed_everything(3)
    a = torch.rand(5), np.random.rand(3)
    env.seed_everything(3)
    b = torch.rand(5), np.random.rand(3)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="SEED"):
        env.seed_everything(-1)


def test_version_report_names_the_stack():
    v = env.versions()
    for name in ("python", "torch", "captum", "pytorch_grad_cam", "lime", "sklearn", "nibabel", "ants"):
        assert v[name] != "missing", name


def test_record_writes_flat_json(tmp_path):
    report.init(tmp_path / "out")
    report.record("a", np.float32(0.5))
    report.record("b", np.arange(3))
    report.record("c", 7)
    report.record("a", 0.25)  # overwrite keeps one entry
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == {"a": 0.25, "b": [0, 1, 2], "c": 7}
    assert report.load_metrics(tmp_path / "out") == metrics


def test_record_refuses_garbage(tmp_path):
    report.init(tmp_path)
    with pytest.raises(ValueError, match="finite"):
        report.record("x", math.nan)
    with pytest.raises(TypeError, match="number"):
        report.record("x", {"nested": 1})
    with pytest.raises(ValueError, match="name"):
        report.record("has space", 1)


def test_init_starts_fresh(tmp_path):
    report.init(tmp_path)
    report.record("old", 1)
    report.init(tmp_path)
    report.record("new", 2)
    assert report.load_metrics(tmp_path) == {"new": 2}


def test_output_dir_errors(tmp_path, monkeypatch):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="OUTPUT_DIR"):
        report.init(f)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.ensure_writable_dir(tmp_path / "nope", "DATA_DIR", create=False)
    # root bypasses permission bits, so simulate a read-only folder through os.access
    monkeypatch.setattr(env.os, "access", lambda *a, **k: False)
    with pytest.raises(PermissionError, match="not writable"):
        report.ensure_writable_dir(tmp_path, "DATA_DIR")


def test_save_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report.init(tmp_path)
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = report.save_figure(fig, "line")
    assert path.exists() and path.stat().st_size > 1000
    with pytest.raises(ValueError, match="stem"):
        report.save_figure(fig, "a/b")


def test_claims_are_recorded_as_verdicts_with_their_evidence(tmp_path):
    report.init(tmp_path)
    assert report.claim("a_holds", "A is larger than B", "yes", "0.7 vs 0.2", 0.7 > 0.2, {"a_score": 0.7}) is True
    report.claim("b_fails", "B is larger than A", "yes", "0.2 vs 0.7", False)
    metrics = report.load_metrics(tmp_path)
    assert metrics["claim_a_holds"] is True and metrics["claim_b_fails"] is False and metrics["a_score"] == 0.7
    table = report.claims_table()
    assert list(table.index) == ["a_holds", "b_fails"]
    assert list(table["verdict"]) == ["reproduces", "does not reproduce"]
    assert report.claims_summary() == "**1 of 2 claims reproduce here** (a_holds); 1 do not (b_fails)."
    report.claim("a_holds", "A is larger than B", "yes", "0.1 vs 0.2", False)       # recorded again: replaced
    assert [r["holds"] for r in report.claims()] == [False, False]
    report.init(tmp_path)                                                             # a new run starts clean
    assert report.claims() == []


def test_verdicts_set_by_the_simulator_are_shown_and_counted_apart(tmp_path):
    report.init(tmp_path)
    report.claim("paper_claim", "the paper's claim", "yes", "0.7", True)
    report.claim("built_in", "an association the simulator builds in", "p < 0.001", "p = 1e-9", True, kind="simulator")
    report.claim("control", "the map beats its control (not in the paper)", "—", "0.1 [0.05, 0.2]", False,
                 kind="beyond")
    table = report.claims_table()
    assert list(table["kind"]) == ["reproduction of the paper", "set by the simulator", "beyond the paper"]
    assert list(table["verdict"]) == ["reproduces", "holds (set by the simulator)", "fails"]
    summary = report.claims_summary()
    assert summary.startswith("**1 of 1 claims reproduce here** (paper_claim); 0 do not.")
    assert "set by the simulator: 1 of 1 hold (built_in holds)" in summary
    assert "beyond the paper: 0 of 1 hold (control fails)" in summary
    assert report.load_metrics(tmp_path)["claim_built_in"] is True          # recorded like every verdict
    with pytest.raises(ValueError, match="kind='guess'"):
        report.claim("x", "s", "p", "h", True, kind="guess")


def test_claims_refuse_what_is_not_a_verdict(tmp_path):
    report.init(tmp_path)
    with pytest.raises(TypeError, match="True or False"):
        report.claim("vague", "statement", "paper", "here", 0.8)
    with pytest.raises(ValueError, match="identifier"):
        report.claim("two words", "statement", "paper", "here", True)


def test_seed_verdicts_name_the_study_label_and_the_count():
    assert report.seed_verdict([True] * 5) == "holds (5 of 5 seeds hold)"
    assert report.seed_verdict([False] * 5) == "fails (0 of 5 seeds hold)"
    assert report.seed_verdict([True, False, True]) == "flips (2 of 3 seeds hold)"
    assert report.seed_verdict([True, False, True], "same direction, not decided") == \
        "same direction, not decided (2 of 3 seeds hold)"
    assert report.seed_verdict([]) == "not studied"


def test_seed_values_read_one_number_per_recorded_seed():
    import json
    from pathlib import Path

    study = json.loads((Path(report.__file__).resolve().parent.parent / "tests" / "expected" /
                        "06_dti_regression_xai.json").read_text())["default"]["seeds"]
    values = report.seed_values("06_dti_regression_xai", "chosen_candidate")
    assert values == {seed: m["chosen_candidate"] for seed, m in study.items()} and len(values) == len(study) > 0
    assert report.seed_values("06_dti_regression_xai", "no_such_metric") == {}
    assert report.seed_values("no_such_notebook", "chosen_candidate") == {}


def test_numeric_mode_is_chosen_checked_and_named(monkeypatch):
    monkeypatch.delenv("XAI_NUMERIC_MODE", raising=False)
    assert env.numeric_mode() == ("portable" if env.has_avx2() else "native")
    assert env.numeric_mode("native") == "native"
    with pytest.raises(ValueError, match="not one of"):
        env.numeric_mode("fast")
    monkeypatch.setenv("XAI_NUMERIC_MODE", "Native")
    assert env.numeric_mode() == "native" and env.numeric_environment() == {"XAI_NUMERIC_MODE": "native"}
    if env.has_avx2():
        variables = env.numeric_environment("portable")
        assert variables["MKL_CBWR"] == "AVX2,STRICT" and variables["ATEN_CPU_CAPABILITY"] == "avx2"
        assert variables["OMP_NUM_THREADS"] == str(env.PORTABLE_THREADS)
        # what decides the bits: the processor is part of a native configuration, not of a portable one
        assert "processor" in env.configuration("native") and "processor" not in env.configuration("portable")


def test_portable_mode_started_before_python_pins_every_kernel_it_names():
    """A process started with the mode's variables (as the runner and the kernel launcher start one) and then
    `setup` runs torch on AVX2 kernels without oneDNN on two threads, numpy without AVX-512 loops, OpenBLAS on
    Haswell kernels, and warns about nothing; the same products come out on 1 and 4 requested threads."""
    import os
    import subprocess
    import sys

    if not env.has_avx2():
        pytest.skip("portable mode needs x86-64 with AVX2")
    code = ("import hashlib, json, torch, warnings; warnings.simplefilter('error'); from helpers import env; "
            "torch.set_num_threads(int(__import__('sys').argv[1])); s = env.apply_numeric_mode(); "
            "g = torch.Generator().manual_seed(0); a = torch.randn(300, 500, generator=g); "
            "w = torch.randn(16, 3, 5, 5, generator=g); x = torch.randn(4, 3, 40, 40, generator=g); "
            "y = torch.nn.functional.conv2d(x, w).sum() + (a @ a.T).sum(); "
            "print(json.dumps(s['in_effect']), hashlib.sha256(y.numpy().tobytes()).hexdigest())")
    runs = []
    for threads in ("1", "4"):
        variables = {**os.environ, **env.numeric_environment("portable"), "OMP_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", code, threads], env=variables, capture_output=True, text=True,
                             check=True).stdout
        runs.append(out)
    state = json.loads(runs[0].rsplit(" ", 1)[0])      # the state in effect, as the child printed it
    assert state["torch_cpu_capability"] == "AVX2" and state["onednn"] is False and state["torch_threads"] == 2
    assert state["numpy_avx512"] is False and set(state["openblas_core"]) <= {"Haswell"}
    assert runs[0].rsplit(" ", 1)[1] == runs[1].rsplit(" ", 1)[1]
