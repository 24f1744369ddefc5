"""The notebooks themselves: hygiene of the committed files, a papermill smoke run of each one compared number by
number with its recorded reference, determinism, and the recorded default run against the papers' claims.

An expected file ``tests/expected/<stem>.json`` holds:
  "smoke":   the reference of a SMOKE run: every recorded number ("values", compared at "rel_tol"; ints,
             booleans and list lengths exactly) and the names of the run times ("timings": recorded, never
             compared, since a busy machine is slower without the code being wrong). `make expected` rewrites it;
             a diff of tests/expected/ is how a change of numbers shows up in review;
  "default": for `make run`'s outputs: "required" names and "ranges" that encode the paper's claim or the
             issue's acceptance, and the seed study ("seeds": the metrics of default runs at seeds 0, 1, 2).
"""
import json
import shutil
import warnings
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
    # `papermill --help-notebook` lists a parameter only if it can parse its line (one "=" per line, comment included)
    assigned = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                if "=" in line and not line.startswith((" ", "#", "\t")) and line.split("=")[0].strip().isidentifier()}
    import papermill
    assert assigned - set(papermill.inspect_notebook(str(nb_path))) == set(), "papermill cannot read these parameters"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "start with a title"
    assert (EXPECTED / f"{nb_path.stem}.json").exists(), "every notebook needs its expected metrics"
    assert nb.metadata["kernelspec"]["name"] == runner.KERNEL_NAME, "notebooks open on the project's kernel"


def test_reference_comparison_catches_every_kind_of_change():
    reference = runner.smoke_reference({"iou": 0.25, "n": 3, "ok": True, "per_class": [0.5, 0.75], "seconds": 9.0})
    assert reference["timings"] == ["seconds"] and "seconds" not in reference["values"]
    same = {"iou": 0.25 * (1 + 1e-12), "n": 3, "ok": True, "per_class": [0.5, 0.75], "seconds": 1.0}
    assert runner.compare_with_reference(same, reference) == []
    changed = {"iou": 0.2500001, "n": 4, "ok": False, "per_class": [0.5, 0.75, 1.0], "extra": 1}
    problems = runner.compare_with_reference(changed, reference)
    for name in ("iou", "n", "ok", "per_class", "extra", "run time seconds"):
        assert any(p.startswith(name) for p in problems), (name, problems)
    assert runner.compare_with_reference({**same, "per_class": [0.5, 0.76]}, reference) == [
        "per_class: element 1: 0.76, reference 0.75"]


def test_off_the_reference_configuration_numbers_may_move_by_the_measured_spread_only():
    configuration = {"numeric_mode": "portable", "machine": "x86_64", "torch": "2.14.1"}
    reference = runner.smoke_reference({"iou": 0.25, "n": 3, "ok": True, "per_class": [0.5, 0.75]}, configuration)
    runs = {"native": {"iou": 0.26, "n": 4, "ok": True, "per_class": [0.5, 0.7]},
            "native-1-thread": {"iou": 0.245, "n": 3, "ok": True, "per_class": [0.5, 0.75]}}
    reference["tolerances"] = {"numbers": runner.measured_spread(reference["values"], runs)}
    assert reference["tolerances"]["numbers"] == {"iou": pytest.approx(0.01), "n": {"seen": [3, 4]},
                                                  "per_class": [None, pytest.approx(0.05)]}
    moved = {"iou": 0.259, "n": 4, "ok": True, "per_class": [0.5, 0.71]}
    other = {**configuration, "numeric_mode": "native", "processor": "another CPU"}
    assert runner.compare_with_reference(moved, reference, other) == []
    # in the reference configuration itself the same run is a change of numbers
    assert {p.split(":")[0] for p in runner.compare_with_reference(moved, reference, configuration)} == \
        {"iou", "n", "per_class"}
    # a number a measured configuration left unrecorded may be missing off the reference configuration only
    reference["tolerances"]["missing"] = ["ok"]
    missing = {k: v for k, v in moved.items() if k != "ok"}
    assert runner.compare_with_reference(missing, reference, other) == []
    assert runner.compare_with_reference(missing, reference, configuration)[0] == "ok was not recorded"
    # beyond the spread, or a verdict/element that never moved, fails off the reference configuration too
    too_far = {"iou": 0.2611, "n": 5, "ok": False, "per_class": [0.51, 0.75]}
    assert {p.split(":")[0] for p in runner.compare_with_reference(too_far, reference, other)} == \
        {"iou", "n", "ok", "per_class"}


def test_on_a_processor_vendor_with_no_measured_spread_only_the_names_are_compared():
    """A reference whose spread was measured on Intel machines only cannot say how far an AMD run may move: there the
    names are still checked, the numbers are not (the smoke test warns), and once a spread from that vendor is merged
    the numbers are checked again."""
    configuration = {"numeric_mode": "portable", "machine": "x86_64"}
    reference = runner.smoke_reference({"iou": 0.25, "n": 3}, configuration)
    intel = {"configuration": {**configuration, "numeric_mode": "native", "processor": "Intel(R) Xeon(R)"}}
    reference["tolerances"] = {"configurations": {"native": intel}, "numbers": {"iou": 0.01}}
    amd = {**configuration, "processor_vendor": "AuthenticAMD"}
    assert runner.unmeasured_vendor(reference, amd) == "AuthenticAMD"
    assert runner.unmeasured_vendor(reference, configuration) is None
    assert runner.unmeasured_vendor(reference, {**intel["configuration"]}) is None
    moved = {"iou": 0.4, "n": 5}
    assert runner.compare_with_reference(moved, reference, amd) == []
    assert runner.compare_with_reference({"iou": 0.4, "extra": 1}, reference, amd) == [
        "extra is recorded but has no reference (new metric? run `make expected`)", "n was not recorded"]
    reference["tolerances"]["configurations"]["portable"] = {"configuration": amd}
    assert runner.unmeasured_vendor(reference, amd) is None
    assert {p.split(":")[0] for p in runner.compare_with_reference(moved, reference, amd)} == {"iou", "n"}


def test_spreads_of_another_machine_merge_into_the_recorded_ones():
    """`--record-tolerances --merge`: a configuration measured on another machine widens a margin only where it
    moved further, adds the values it saw, and leaves what it did not move as recorded."""
    recorded = {"iou": 0.01, "n": {"seen": [3, 4]}, "per_class": [None, 0.05]}
    measured = {"iou": 0.002, "n": {"seen": [3, 5]}, "per_class": [0.2, None], "auc": 0.1}
    merged = {name: runner.merge_spread(recorded.get(name), measured.get(name)) for name in {*recorded, *measured}}
    assert merged == {"iou": 0.01, "n": {"seen": [3, 4, 5]}, "per_class": [0.2, 0.05], "auc": 0.1}
    with pytest.raises(ValueError, match="different kinds"):
        runner.merge_spread(0.1, {"seen": [1]})


def test_the_processor_vendor_is_part_of_the_portable_configuration_off_intel(monkeypatch):
    """MKL's reproducibility branch holds on Intel only: elsewhere the vendor enters the configuration, so the
    references of one vendor are compared within the spread measured on the other, not bit for bit."""
    from helpers import env

    for vendor, kept in (("GenuineIntel", False), ("AuthenticAMD", True)):
        monkeypatch.setattr(env, "processor_vendor", lambda vendor=vendor: vendor)
        found = env._find_configuration("portable")
        assert ("processor_vendor" in found) is kept and found.get("processor_vendor", vendor) == vendor


def test_smoke_references_say_their_configuration_and_measured_spread():
    """Every reference names the configuration its values are exact for (the numeric mode 'portable' on x86-64) and
    carries the spread measured over the other configurations of `make tolerances`."""
    for nb in NOTEBOOKS:
        reference = _smoke_reference(nb.stem)
        assert reference["configuration"]["numeric_mode"] == "portable", nb.stem
        tolerances = reference.get("tolerances", {})
        measured = set(tolerances.get("configurations", {}))
        assert measured and measured <= set(runner.TOLERANCE_CONFIGURATIONS), nb.stem
        # CI and users run on Intel and on AMD machines: the portable mode's numbers of the vendor that did not record
        # the reference must be measured, or every smoke run there fails (Intel) or checks names only (AMD)
        vendors = {reference["configuration"].get("processor_vendor", "GenuineIntel")} | {
            run["configuration"].get("processor_vendor", "GenuineIntel")
            for run in tolerances["configurations"].values() if run["configuration"]["numeric_mode"] == "portable"}
        assert vendors >= {"GenuineIntel", "AuthenticAMD"}, f"{nb.stem}: portable runs measured on {sorted(vendors)} only"


def _smoke_reference(stem):
    return json.loads((EXPECTED / f"{stem}.json").read_text())["smoke"]


def _exact_reference(stem, smoke_root, data_dir):
    """The reference a run in this process's configuration must reproduce bit for bit: the committed one where this
    is its configuration; elsewhere (another processor vendor: helpers.env) this machine's own smoke run of the
    notebook, made now if the suite has not made it yet."""
    reference = _smoke_reference(stem)
    if runner.is_reference_configuration(reference):
        return reference
    nb = next(nb for nb in NOTEBOOKS if nb.stem == stem)
    own = smoke_root / stem
    if not (own / "metrics.json").exists():
        runner.run_notebook(nb, smoke_root, smoke=True, data_dir=data_dir)
    return runner.smoke_reference(json.loads((own / "metrics.json").read_text()),
                                  json.loads((own / runner.CONFIGURATION_FILE).read_text()))


def test_smoke_references_pin_values_not_ranges():
    """Every notebook's reference pins numbers (the old [0, 1] ranges held by construction)."""
    for nb in NOTEBOOKS:
        reference = _smoke_reference(nb.stem)
        assert set(reference) >= {"values", "timings", "rel_tol"}, nb.stem
        assert "ranges" not in reference, f"{nb.stem}: smoke references pin values; ranges belong to 'default'"
        assert len(reference["values"]) >= 5, f"{nb.stem} pins only {len(reference['values'])} numbers"
        assert reference["rel_tol"] <= 1e-6, f"{nb.stem}: a tolerance of {reference['rel_tol']} needs a reason"


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    """Where this session's smoke runs go: the book test below builds its site from them."""
    return tmp_path_factory.mktemp("smoke")


@pytest.mark.notebook
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_smoke_run(nb_path, smoke_root, repo_data_dir):
    out_dir, seconds = runner.run_notebook(nb_path, smoke_root, smoke=True, data_dir=repo_data_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    configuration = json.loads((out_dir / runner.CONFIGURATION_FILE).read_text())
    reference = _smoke_reference(nb_path.stem)
    problems = runner.compare_with_reference(metrics, reference, configuration)
    vendor = runner.unmeasured_vendor(reference, configuration)
    if vendor:
        warnings.warn(f"{nb_path.stem}: no spread was measured on a {vendor} processor for this reference, so only its "
                      "names were compared, not its numbers; measure it here with `python -m helpers.runner "
                      f"{nb_path.stem[:2]} --record-tolerances --configurations portable --merge`")
    assert not problems, (f"{nb_path.stem} (SMOKE, {seconds:.0f} s) differs from tests/expected/{nb_path.stem}.json "
                          "(if the change is intended, run `make expected` and review the diff): " + "; ".join(problems))
    assert list(out_dir.glob("*.png")), "the notebook saved no figure"
    claims = [k for k in metrics if k.startswith("claim_")]
    assert claims, "the notebook records no claim_* verdict"
    table = json.loads((out_dir / "claims.json").read_text())
    assert sorted(f"claim_{row['name']}" for row in table) == sorted(claims)


@pytest.mark.notebook
def test_book_of_the_smoke_runs_loads_in_a_headless_browser(smoke_root, repo_data_dir, tmp_path):
    """`make book` on this session's smoke runs: the site builds, and in headless Chromium the landing page and every
    notebook page load with all their images and with every link into the site pointing at a file that exists.
    A screenshot of the landing page is kept in outputs/test-artifacts/ (the test's artefact)."""
    import os

    from helpers import book

    for nb in NOTEBOOKS:      # notebooks this session did not run (e.g. under -k) are run here
        if not (smoke_root / nb.stem / "metrics.json").exists():
            runner.run_notebook(nb, smoke_root, smoke=True, data_dir=repo_data_dir)
    site = book.build(smoke_root, tmp_path / "book")
    pages = {p.name for p in (site / "notebooks").glob("*.html")}
    assert pages == {f"{nb.stem}.html" for nb in NOTEBOOKS} and (site / "index.html").exists()
    assert len(list((site / "api").glob("*.html"))) == len(book.MODULES) + 1
    browser = book.find_browser()
    if browser is None:
        assert not os.environ.get("CI"), "chromium is missing under CI: `make browser` installs it"
        pytest.skip("no chromium on the PATH (`make browser` installs Debian's chromium)")
    screenshot = ROOT / "outputs" / "test-artifacts" / "book_landing.png"
    reports = book.check_site(site, browser, screenshot=screenshot)
    assert set(reports) == {"index.html", *(f"notebooks/{p}" for p in pages)}
    for page, report in reports.items():
        assert report["text"] > 1000, f"{page} loaded almost empty"
        assert not report["broken_images"], f"{page}: images that do not load: {report['broken_images']}"
        assert not report["broken_links"], f"{page}: links into the site that go nowhere: {report['broken_links']}"
    for nb in NOTEBOOKS:      # every notebook shows its figures and its tables (the paper-vs-here tables among them)
        report = reports[f"notebooks/{nb.stem}.html"]
        assert report["n_images"] >= 1 and report["tables"] >= 1, (nb.stem, report)
    landing_links = reports["index.html"]["links"]
    assert all(any(link.endswith(f"notebooks/{nb.stem}.html") for link in landing_links) for nb in NOTEBOOKS)
    assert screenshot.stat().st_size > 10_000


@pytest.mark.notebook
def test_smoke_regression_fails_when_a_metric_definition_changes(tmp_path, repo_data_dir, smoke_root, monkeypatch):
    """Mutation test: paper 001's attribution threshold 0.3 → 0.31 in a copy of helpers must change notebook 05's
    recorded numbers (compared bit for bit with the run of the unchanged code in this configuration)."""
    exact = _exact_reference("05_cam_benchmarks", smoke_root, repo_data_dir)     # before the mutation is in place
    mutated = tmp_path / "mutated"
    shutil.copytree(ROOT / "helpers", mutated / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    source = mutated / "helpers" / "xai_metrics.py"
    text = source.read_text()
    assert "ATTRIBUTION_THRESHOLD = 0.3 " in text
    source.write_text(text.replace("ATTRIBUTION_THRESHOLD = 0.3 ", "ATTRIBUTION_THRESHOLD = 0.31 "))
    monkeypatch.setenv("PYTHONPATH", str(mutated))    # the notebook's kernel imports the mutated copy first
    nb = next(nb for nb in NOTEBOOKS if nb.stem.startswith("05_"))
    out_dir, _ = runner.run_notebook(nb, tmp_path / "out", smoke=True, data_dir=repo_data_dir)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    problems = runner.compare_with_reference(metrics, exact)
    changed = {p.split(":")[0] for p in problems}
    assert {"iou_gradcam", "f1_gradcam"} <= changed, problems
    assert not any(name.startswith(("relevance_mass", "pointing_game")) for name in changed), \
        f"threshold-free metrics changed too: {sorted(changed)}"


# A second configuration, as on another machine: one thread asked for, torch's AVX-512 kernels, oneDNN and MKL held
# to AVX2 (as on a processor without AVX-512). The numeric mode 'portable' must make every one of them irrelevant.
SECOND_CONFIGURATION = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx512",
                        "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


@pytest.mark.notebook
def test_same_seed_same_numbers_cold_caches_in_a_second_configuration(tmp_path, repo_data_dir, smoke_root,
                                                                       monkeypatch):
    """Determinism across caches and machines: notebook 03 run in an empty DATA_DIR (builds the slides and trains its
    classifier) under SECOND_CONFIGURATION records exactly the numbers of the reference, which the suite's other runs
    make with the caches warm in the machine's own configuration (on a processor whose vendor is part of the
    configuration, the reference is this machine's own warm smoke run)."""
    if runner.env.numeric_mode() != "portable":
        pytest.skip("the numeric mode is not 'portable' here: bit-identity across configurations is not claimed")
    exact = _exact_reference("03_nmf_concepts", smoke_root, repo_data_dir)
    for name, value in SECOND_CONFIGURATION.items():
        monkeypatch.setenv(name, value)
    cold = tmp_path / "data"
    real = repo_data_dir / "cache" / "real"
    if real.exists():     # the bundled real files only: everything simulated or trained is rebuilt
        shutil.copytree(real, cold / "cache" / "real")
    cold.mkdir(exist_ok=True)
    nb = next(nb for nb in NOTEBOOKS if nb.stem.startswith("03_"))
    out_dir, _ = runner.run_notebook(nb, tmp_path / "out", smoke=True, data_dir=cold)
    executed = (out_dir / nb.name).read_text()
    assert "numeric mode: portable" in executed and "is not fully in effect" not in executed
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert runner.is_reference_configuration(exact, json.loads((out_dir / runner.CONFIGURATION_FILE).read_text()))
    problems = runner.compare_with_reference(metrics, exact)
    assert not problems, ("a cold-cache run in a second configuration differs from the reference: "
                          + "; ".join(problems))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_recorded_default_run(nb_path):
    """Checks outputs/<stem>/metrics.json written by `make run` (default parameters, seed 0) when it exists: every
    claim's verdict is one the seed study gave (flipping claims included), and the numbers the claims rest on lie
    within the seeds' range."""
    path = ROOT / "outputs" / nb_path.stem / "metrics.json"
    if not path.exists():
        pytest.skip("no default run recorded yet (run `make run`)")
    metrics = json.loads(path.read_text())
    default = json.loads((EXPECTED / f"{nb_path.stem}.json").read_text())["default"]
    code_file = path.parent / runner.CODE_FILE
    problems = runner.check_default_run(metrics, default,
                                        json.loads(code_file.read_text()) if code_file.exists() else None)
    assert not problems, "; ".join(problems)


def test_default_check_says_first_when_the_seed_study_is_of_other_code():
    default = {"claims": {"claim_x": "holds"}, "key_numbers": {"auc": [0.8, 0.9]},
               "code": {"notebook": "n1", "helpers": "h1"}}
    assert runner.check_default_run({"claim_x": True, "auc": 0.85}, default, {"notebook": "n1", "helpers": "h1"}) == []
    problems = runner.check_default_run({"claim_x": True, "auc": 0.95}, default, {"notebook": "n1", "helpers": "h2"})
    assert problems[0].startswith("the seed study was recorded with other code (the helpers changed since)")
    assert problems[1].startswith("auc = ") and len(problems) == 2
    assert runner.check_default_run({"claim_x": True, "auc": 0.85}, default) == []      # no code.json: numbers only


def test_default_checks_catch_a_flipped_claim_and_a_number_out_of_range():
    default = {"required": ["n"], "claims": {"claim_a": "holds", "claim_b": "flips", "claim_c": "fails",
                                             "claim_d": "same direction, not decided"},
               "verdicts_seen": {"claim_a": [True], "claim_b": [False, True], "claim_c": [False],
                                 "claim_d": [False, True]},
               "key_numbers": {"auc": [0.9, 0.95], "per_sample": [[0.1, 0.2], [0.5, 0.6]]}}
    good = {"n": 3, "claim_a": True, "claim_b": False, "claim_c": False, "claim_d": False, "effect_d": 0.1,
            "auc": 0.93, "per_sample": [0.15, 0.55]}
    assert runner.check_default_run(good, default) == []
    bad = {"claim_a": False, "claim_b": True, "claim_c": True, "claim_d": True, "effect_d": -0.2, "auc": 0.97,
           "per_sample": [0.15, 0.65]}
    problems = runner.check_default_run(bad, default)
    assert [p.split(" ")[0].rstrip(":") for p in problems] == ["n", "claim_a", "claim_c", "claim_d", "auc",
                                                                "per_sample"], problems
    # a claim that flips over the seeds is still checked: it must be recorded
    assert runner.check_default_run({k: v for k, v in good.items() if k != "claim_b"}, default) == [
        "claim_b not recorded (seed study: flips)"]
    # a claim the study never saw (the notebook is newer than its seed study) is named, not passed over
    problems = runner.check_default_run({**good, "claim_new": True}, default)
    assert len(problems) == 1 and problems[0].startswith("claim_new is not in the seed study"), problems


def test_claim_labels_over_the_seeds():
    assert runner.claim_label([True] * 5) == "holds"
    assert runner.claim_label([False] * 5) == "fails"
    assert runner.claim_label([True, False, True, True, False]) == "flips"
    assert runner.claim_label([True, False, True, True, False], [0.2, 0.01, 0.3, 0.2, 0.05]) == \
        "same direction, not decided"
    assert runner.claim_label([False] * 5, [0.01, 0.02, 0.01, 0.03, 0.02]) == "same direction, not decided"
    assert runner.claim_label([True, False, True, True, False], [0.2, -0.01, 0.3, 0.2, 0.05]) == "flips"
    assert runner.claim_label([False] * 5, [0.01, -0.02, 0.01, 0.03, 0.02]) == "fails"


def test_seed_study_labels_claims_and_refuses_ranges_that_cannot_fail(tmp_path):
    seeds = (0, 1, 2)
    for seed, (auc, holds, p, effect) in zip(seeds, ((0.90, True, 0.01, 0.3), (0.94, True, 0.9, 0.1),
                                                     (0.92, False, 0.4, 0.02))):
        folder = runner.seed_run_dir(tmp_path, seed) / "99_demo"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"auc": auc, "p": p, "claim_high": auc > 0.8,
                                                         "claim_split": holds, "claim_weak": holds,
                                                         "effect_weak": effect, "seconds": 3.0}))
        (folder / "claims.json").write_text(json.dumps([{"name": "high", "evidence": ["auc"]},
                                                        {"name": "split", "evidence": ["p"]},
                                                        {"name": "weak", "evidence": ["effect_weak"]}]))
        (folder / runner.CONFIGURATION_FILE).write_text(json.dumps({"numeric_mode": "portable"}))
    study = runner.seed_study("99_demo", tmp_path, seeds)
    assert study["claims"] == {"claim_high": "holds", "claim_split": "flips",
                               "claim_weak": "same direction, not decided"}
    assert study["verdicts_seen"]["claim_split"] == [False, True]
    assert study["key_numbers"]["auc"] == pytest.approx([0.88, 0.96])
    assert "p" not in study["key_numbers"] and study["unchecked"] == {"p": "the seeds span its whole range"}
    assert study["configuration"] == {"numeric_mode": "portable"}
    assert set(study["seeds"]) == {"0", "1", "2"} and "seconds" not in study["seeds"]["0"]
    # the names every seed recorded are required of a default run (derived, never hand-kept)
    assert study["required"] == ["auc", "claim_high", "claim_split", "claim_weak", "effect_weak", "p"]
    with pytest.raises(FileNotFoundError, match="seed 3"):
        runner.seed_study("99_demo", tmp_path, (0, 1, 2, 3))


def test_seed_study_refuses_runs_of_different_code(tmp_path):
    for seed, code in ((0, {"notebook": "a", "helpers": "h"}), (1, {"notebook": "a", "helpers": "h"}),
                       (2, {"notebook": "b", "helpers": "h"})):
        folder = runner.seed_run_dir(tmp_path, seed) / "99_demo"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"auc": 0.9, "claim_x": True}))
        (folder / runner.CODE_FILE).write_text(json.dumps(code))
    study = runner.seed_study("99_demo", tmp_path, (0, 1))
    assert study["claims"] == {"claim_x": "holds"} and study["code"] == {"notebook": "a", "helpers": "h"}
    with pytest.raises(ValueError, match=r"different code \(seeds 0, 1 \| 2\)"):
        runner.seed_study("99_demo", tmp_path, (0, 1, 2))


def test_seed_study_says_which_seed_ran_in_which_configuration_when_they_differ(tmp_path):
    intel = {"numeric_mode": "portable", "machine": "x86_64"}
    amd = {**intel, "processor_vendor": "AuthenticAMD"}
    for seed, configuration in ((0, amd), (1, amd), (2, intel)):
        folder = runner.seed_run_dir(tmp_path, seed) / "99_demo"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"auc": 0.9, "claim_x": True}))
        (folder / runner.CONFIGURATION_FILE).write_text(json.dumps(configuration))
    same = runner.seed_study("99_demo", tmp_path, (0, 1))
    assert same["configuration"] == amd and "configurations" not in same
    mixed = runner.seed_study("99_demo", tmp_path, (0, 1, 2))
    assert mixed["configurations"] == {"0": amd, "1": amd, "2": intel}
    assert mixed["configuration"] == amd                # the first seed's: what a default run at seed 0 should equal
    assert runner.seed_study("99_demo", tmp_path, (2, 0))["configuration"] == intel


def test_seed_runs_kept_in_the_repository_finish_a_study_in_another_checkout(tmp_path, monkeypatch):
    """A seed run kept by --keep-seed-runs stands in for a missing output folder; a run of other code is not kept."""
    monkeypatch.setattr(runner, "KEPT_SEED_RUNS", tmp_path / "kept")
    nb = next(n for n in NOTEBOOKS if n.stem.startswith("07"))
    code = runner.code_fingerprint(nb)
    for seed, (auc, made_by) in enumerate(((0.91, code), (0.93, code), (0.95, {"notebook": "old", "helpers": "h"}))):
        folder = runner.seed_run_dir(tmp_path / "out", seed) / nb.stem
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"auc": auc, "claim_high": True, "seconds": 7.0}))
        (folder / "claims.json").write_text(json.dumps([{"name": "high", "evidence": ["auc"]}]))
        (folder / runner.CONFIGURATION_FILE).write_text(json.dumps(runner.env.configuration()))
        (folder / runner.CODE_FILE).write_text(json.dumps(made_by))
        parameters = {"SMOKE": False, "OUTPUT_DIR": str(folder)} | ({"SEED": seed} if seed else {})
        (folder / nb.name).write_text(json.dumps({"metadata": {"papermill": {"parameters": parameters}}}))
    mislabelled = runner.seed_run_dir(tmp_path / "out", 4) / nb.stem           # a seed-1 run in seed 4's folder
    shutil.copytree(runner.seed_run_dir(tmp_path / "out", 1) / nb.stem, mislabelled)
    written, left = runner.keep_seed_runs(tmp_path / "out", (0, 1, 2, 3, 4), ["07"])
    assert [p.name for p in written] == ["seed0.json", "seed1.json"]
    assert any("seed 2: made by other code" in line for line in left) and any("seed 3: no finished" in line
                                                                               for line in left)
    assert any("seed 4: the run in" in line and "not a default run at seed 4" in line for line in left)
    shutil.rmtree(mislabelled)
    kept = json.loads(runner.kept_seed_run_file(nb.stem, 1).read_text())
    assert kept["metrics"] == {"auc": 0.93, "claim_high": True} and kept["code"] == code      # run times left out
    assert runner.is_current_kept_run(nb, 1) and not runner.is_current_kept_run(nb, 2)
    shutil.rmtree(tmp_path / "out")                                  # another checkout: only the kept runs
    study = runner.seed_study(nb.stem, tmp_path / "out", (0, 1))
    assert study["seeds"] == {"0": {"auc": 0.91, "claim_high": True}, "1": {"auc": 0.93, "claim_high": True}}
    assert study["key_numbers"]["auc"] == pytest.approx([0.90, 0.94])      # the evidence came from the kept rows
    with pytest.raises(FileNotFoundError, match="nor kept in"):
        runner.seed_study(nb.stem, tmp_path / "out", (0, 1, 2))


def test_tolerances_record_the_spread_and_a_configuration_where_the_smoke_run_stopped(tmp_path, monkeypatch):
    """record_tolerances with the runs faked: the spread of the configuration that ran, the error of the one that
    stopped (recorded, not aborting the others)."""
    stem = NOTEBOOKS[0].stem
    monkeypatch.setattr(runner, "EXPECTED", tmp_path / "expected")
    (tmp_path / "expected").mkdir()
    (tmp_path / "expected" / f"{stem}.json").write_text(json.dumps({"smoke": runner.smoke_reference(
        {"auc": 0.90, "claim_x": True, "n": 4})}))

    def fake_run(nb, root, smoke=False):
        label = Path(root).name
        if label == "native-avx2":
            raise RuntimeError("Traceback …\nValueError: the model makes 0 positive and 120 negative decisions")
        out = Path(root) / nb.stem
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"auc": 0.87, "claim_x": True, "n": 5}))
        (out / runner.CONFIGURATION_FILE).write_text(json.dumps({"numeric_mode": "native"}))
        return out, 1.0

    monkeypatch.setattr(runner, "run_notebook", fake_run)
    chosen = {k: runner.TOLERANCE_CONFIGURATIONS[k] for k in ("native", "native-avx2")}
    runner.record_tolerances(tmp_path / "runs", [stem[:2]], chosen)
    tolerances = json.loads((tmp_path / "expected" / f"{stem}.json").read_text())["smoke"]["tolerances"]
    assert set(tolerances["configurations"]) == {"native"}
    assert tolerances["numbers"]["auc"] == pytest.approx(0.03) and tolerances["numbers"]["n"] == {"seen": [4, 5]}
    assert "claim_x" not in tolerances["numbers"]                                      # did not move: stays exact
    assert tolerances["failed"] == {"native-avx2": "ValueError: the model makes 0 positive and 120 negative decisions"}


def test_a_runs_code_is_the_notebook_and_the_helpers_modules_it_reaches(tmp_path):
    modules = {nb.stem[:2]: set(runner.helpers_modules(nb)) for nb in NOTEBOOKS}
    assert "helpers.simulate.histology" in modules["01"] and "helpers.simulate.histology" not in modules["07"]
    assert "helpers.methods.sarcoidosis.registration" in modules["07"] and not any(
        m.startswith("helpers.methods.sarcoidosis") for m in modules["02"])
    assert {"helpers", "helpers.env", "helpers.report"} <= modules["05"]
    # reached through another module, not imported by the notebook itself: the caches and the pixel convention
    nb = {"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n", "from helpers.simulate import ct\n"]}]}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    reached = set(runner.helpers_modules(path))
    assert {"helpers", "helpers.simulate", "helpers.simulate.ct"} <= reached
    assert "helpers.simulate.histology" not in reached and "helpers.runner" not in reached
    nb["cells"][0]["source"].append("def broken(:\n")
    path.write_text(json.dumps(nb))
    with pytest.raises(ValueError, match="a.ipynb does not parse"):
        runner.helpers_modules(path)


def test_code_fingerprint_follows_cell_sources_not_outputs(tmp_path):
    nb = json.loads(NOTEBOOKS[0].read_text())
    first = tmp_path / "a.ipynb"
    first.write_text(json.dumps(nb))
    fingerprint = runner.code_fingerprint(first)
    assert fingerprint == runner.code_fingerprint(NOTEBOOKS[0])
    code_cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code_cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["ran\n"]}]
    code_cell["execution_count"] = 3
    first.write_text(json.dumps(nb))
    assert runner.code_fingerprint(first) == fingerprint                 # outputs do not make other code
    code_cell["source"] = list(code_cell["source"]) + ["\n# changed"]
    first.write_text(json.dumps(nb))
    changed = runner.code_fingerprint(first)
    assert changed["notebook"] != fingerprint["notebook"] and changed["helpers"] == fingerprint["helpers"]
    # a finished run of this code in this configuration is current; of other code it is not
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / runner.CONFIGURATION_FILE).write_text(json.dumps(runner.env.configuration()))
    (out / runner.CODE_FILE).write_text(json.dumps(changed))
    assert runner.is_current_run(out, first) and not runner.is_current_run(out, NOTEBOOKS[0])


def test_runner_keeps_seed_runs_named_by_seeds_not_by_seed(capsys):
    with pytest.raises(SystemExit):
        runner.main(["--keep-seed-runs", "--seed", "1"])
    assert "--seeds" in capsys.readouterr().err


def test_runner_refuses_a_negative_seed(capsys):
    with pytest.raises(SystemExit):
        runner.main(["--seed", "-1"])
    assert "negative" in capsys.readouterr().err


def test_default_checks_read_nested_lists_element_by_element():
    """A confusion matrix recorded as evidence: each cell against its own seed range."""
    default = {"key_numbers": {"confusion": [[[8, 10], [0, 2]], [[1, 3], [5, 9]]]}}
    assert runner.check_default_run({"confusion": [[9, 1], [2, 7]]}, default) == []
    problems = runner.check_default_run({"confusion": [[9, 1], [4, 7]]}, default)
    assert len(problems) == 1 and problems[0].startswith("confusion = ")
    assert runner.check_default_run({"confusion": [[9, 1]]}, default)          # a missing row is a problem too


def test_smoke_and_other_seed_runs_never_default_to_the_default_runs_folder():
    outputs = runner.ROOT / "outputs"
    assert runner.default_output_root() == outputs
    assert runner.default_output_root(seed=0) == outputs
    assert runner.default_output_root(smoke=True) == outputs / "smoke"
    assert runner.default_output_root(seed=2) == outputs / "seeds" / "seed2"
    assert runner.default_output_root(smoke=True, seed=1) == outputs / "smoke" / "seeds" / "seed1"
    assert runner.default_output_root(seed=1, record_seeds=True) == outputs     # the study reads every seed from there
