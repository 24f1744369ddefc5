import numpy as np
import pytest

from helpers.data import bundled, formats
from helpers.simulate import ct
from helpers.methods.sarcoidosis import registration


def test_nifti_roundtrip_keeps_affine_and_spacing(tmp_path):
    vol = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 1.5, 1.0])
    affine[:3, 3] = [10, -4, 2]
    path = formats.save_nifti(tmp_path / "v.nii.gz", vol, affine)
    data, aff, spacing = formats.load_nifti(path, ndim=3)
    np.testing.assert_allclose(data, vol)
    np.testing.assert_allclose(aff, affine)
    assert spacing == (2.0, 3.0, 1.5)
    with pytest.raises(FileExistsError, match="overwrite"):
        formats.save_nifti(path, vol, affine)


def test_nifti_bad_inputs(tmp_path):
    p4 = formats.save_nifti(tmp_path / "v4.nii.gz", np.zeros((3, 3, 3, 2), np.float32))
    with pytest.raises(ValueError, match="expected a 3-D volume"):
        formats.load_nifti(p4, ndim=3)
    vol = np.zeros((4, 4, 4), np.float32)
    vol[1, 1, 1] = np.nan
    pn = formats.save_nifti(tmp_path / "nan.nii.gz", vol)
    with pytest.raises(ValueError, match="non-finite"):
        formats.load_nifti(pn)
    (tmp_path / "junk.nii").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="not a readable NIfTI"):
        formats.load_nifti(tmp_path / "junk.nii")


def test_dicom_slice_and_series(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    hu = bundled.ct_small_slice()
    assert hu.shape == (128, 128) and hu.min() < -500 and hu.max() > 500   # air and bone in HU
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder = tmp_path / "series"
    folder.mkdir()
    for i, z in enumerate([30.0, 10.0, 20.0]):      # written out of order on purpose
        ds = src.copy()
        ds.ImagePositionPatient = [0, 0, z]
        arr = ds.pixel_array.copy()
        arr[0, 0] = i
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"s{i}.dcm")
    vol, spacing = formats.load_dicom_series(folder)
    assert vol.shape == (3, 128, 128) and spacing[0] == 10.0
    # the affine carries the patient's orientation: index (z, y, x) → RAS mm, from ImagePositionPatient and
    # ImageOrientationPatient (DICOM's LPS with x and y negated)
    _, _, affine = formats.load_dicom_series(folder, return_affine=True)
    row, column = (float(v) for v in src.PixelSpacing)
    direction = np.asarray(src.ImageOrientationPatient, float)
    lps = np.array([0, 0, 10.0]) + 2 * 10.0 * np.cross(direction[:3], direction[3:]) + 5 * row * direction[3:] \
        + 7 * column * direction[:3]                            # slice 2 (z = 30 mm), row 5, column 7
    np.testing.assert_allclose(affine @ [2, 5, 7, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-9)
    slope, inter = float(src.RescaleSlope), float(src.RescaleIntercept)
    assert [vol[k, 0, 0] for k in range(3)] == [1 * slope + inter, 2 * slope + inter, 0 * slope + inter]
    with pytest.raises(FileNotFoundError, match="no DICOM"):
        formats.load_dicom_series(tmp_path / "empty")


def _series(folder, positions, uids=None, orientation=None):
    import pydicom
    from pydicom.data import get_testdata_file

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    folder.mkdir()
    for i, pos in enumerate(positions):
        ds = src.copy()
        ds.ImagePositionPatient = list(pos)
        if orientation is not None:
            ds.ImageOrientationPatient = list(orientation)
        if uids is not None:
            ds.SeriesInstanceUID = uids[i]
        arr = ds.pixel_array.copy()
        arr[0, 0] = i
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"s{i}.dcm")
    return folder


@pytest.mark.parametrize("positions, uids, match", [
    ([(0, 0, 10.0), (0, 0, 20.0), (0, 0, 20.0)], None, "same position"),
    ([(0, 0, 10.0), (0, 0, 20.0), (0, 0, 40.0)], None, "uneven slice spacing"),
    ([(0, 0, 10.0), (0, 0, 20.0), (0, 0, 30.0)], ["1.2.3", "1.2.3", "1.2.4"], "mixes 2 values of SeriesInstanceUID"),
])
def test_dicom_series_refuses_what_would_stack_wrongly(tmp_path, positions, uids, match):
    folder = _series(tmp_path / "series", positions, uids)
    with pytest.raises(ValueError, match=match):
        formats.load_dicom_series(folder)


def test_dicom_series_never_stacks_slices_of_two_patients(tmp_path):
    """Without SeriesInstanceUID the other identity tags (PatientID, StudyInstanceUID, FrameOfReferenceUID), the
    orientation and the geometry still tell two scans apart."""
    def series(name, change):
        folder = _series(tmp_path / name, [(0, 0, 10.0), (0, 0, 20.0), (0, 0, 30.0)])
        import pydicom

        for i, path in enumerate(sorted(folder.iterdir())):
            ds = pydicom.dcmread(path)
            if "SeriesInstanceUID" in ds:
                del ds.SeriesInstanceUID
            change(i, ds)
            ds.save_as(path)
        return folder

    def set_tag(tag, values):
        return lambda i, ds: setattr(ds, tag, values[i])

    def drop(tag, index):
        return lambda i, ds: delattr(ds, tag) if i == index and tag in ds else None

    refused = {
        "two patients": (set_tag("PatientID", ["A", "A", "B"]), "mixes 2 values of PatientID"),
        "two studies": (set_tag("StudyInstanceUID", ["1.1", "1.2", "1.2"]), "StudyInstanceUID"),
        "a slice without the patient's id": (drop("PatientID", 1), "no PatientID"),
        "another orientation": (lambda i, ds: setattr(ds, "ImageOrientationPatient", [0, 1, 0, 0, 0, -1])
                                if i == 2 else None, "ImageOrientationPatient"),
        "shifted in the plane": (lambda i, ds: setattr(ds, "ImagePositionPatient", [40.0, 0, 30.0])
                                 if i == 2 else None, "shifted"),
    }
    for k, (name, (change, match)) in enumerate(refused.items()):
        with pytest.raises(ValueError, match=match):
            formats.load_dicom_series(series(f"case{k}", change))
    volume, _ = formats.load_dicom_series(series("one_patient", set_tag("PatientID", ["A", "A", "A"])))
    assert volume.shape[0] == 3


def test_dicom_series_sorts_along_the_slice_normal(tmp_path):
    """Sagittal slices: z is the same for all; the normal (row y × column −z = −x) orders them."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder = _series(tmp_path / "series", [(25.0, 0, 5.0), (5.0, 0, 5.0), (15.0, 0, 5.0)],
                     orientation=(0, 1, 0, 0, 0, -1))
    vol, spacing = formats.load_dicom_series(folder)
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    markers = [round((float(v) - float(src.RescaleIntercept)) / float(src.RescaleSlope)) for v in vol[:, 0, 0]]
    assert spacing[0] == pytest.approx(10.0) and markers == [0, 2, 1]     # x = 25, 15, 5 along −x


# ------------------------------------------------------------------ cohorts, templates, registration (paper 004)
def small_cohort(n=6, shape=(16, 16, 16)):
    return ct.simulate_cohort(n, shape, seed=0, progress=False)


def test_cohort_roundtrip_and_refusals(tmp_path):
    vols, lungs, table = small_cohort()
    folder = formats.write_cohort(tmp_path / "cohort", vols, table, (6.0, 5.0, 4.0))
    back, table_back, spacing = formats.load_cohort(folder)
    np.testing.assert_allclose(back, vols)
    assert spacing == (6.0, 5.0, 4.0) and list(table_back["subject"]) == list(table["subject"])
    _, affine, nifti_spacing = formats.load_nifti(folder / "sub-001.nii.gz", ndim=3)
    assert nifti_spacing == (4.0, 5.0, 6.0)                      # NIfTI stores x, y, z
    with pytest.raises(FileExistsError, match="already holds a cohort"):
        formats.write_cohort(folder, vols, table)
    # a 4-D file and a file with NaN in the cohort are named
    formats.save_nifti(folder / "sub-002.nii.gz", np.zeros((16, 16, 16, 2), np.float32), overwrite=True)
    with pytest.raises(ValueError, match="sub-002.*expected a 3-D volume"):
        formats.load_cohort(folder)
    bad = vols[1].copy()
    bad[3, 3, 3] = np.nan
    formats.save_nifti(folder / "sub-002.nii.gz", formats.to_nifti_axes(bad), overwrite=True)
    with pytest.raises(ValueError, match="non-finite"):
        formats.load_cohort(folder)
    with pytest.raises(FileNotFoundError, match="participants.csv"):
        formats.load_cohort(tmp_path / "nowhere")


def test_template_registration_improves_alignment_and_refuses_other_shapes(capsys):
    from scipy import ndimage

    vols, lungs, _, landmarks = ct.simulate_cohort(5, (24, 24, 24), seed=0, progress=False, return_landmarks=True)
    drive = np.stack([ndimage.gaussian_filter(m.astype(np.float32), 1.0) for m in lungs])
    capsys.readouterr()
    template, idx, changes = registration.build_template(drive, (6.0,) * 3, sample_fraction=0.5, iterations=1,
                                                         min_subjects=2)
    assert capsys.readouterr().out == ""     # antspyx prints its transform lists; a notebook should not show them
    assert template.shape == vols.shape[1:] and len(idx) == 2 and len(changes) == 1 and 0 < changes[0] < 1
    warped, warped_lungs, warped_points = registration.register_to_template(
        vols, template, (6.0,) * 3, extra=drive, drive=drive, progress=False, points=landmarks)
    before = registration.alignment_correlation(drive, template).mean()
    after = registration.alignment_correlation(warped_lungs, template).mean()
    assert after > before + 0.02
    # the simulator's landmarks, which the registration never saw, come closer together (measured 2.6 → 1.0 voxels)
    assert np.isfinite(warped_points).all()
    spread_before, spread_after = registration.landmark_spread(landmarks), registration.landmark_spread(warped_points)
    assert spread_after.mean() < 0.8 * spread_before.mean()
    with pytest.raises(ValueError, match="N × L × 3 voxel indices"):
        registration.register_to_template(vols, template, (6.0,) * 3, progress=False, points=landmarks[:, :, :2])
    with pytest.raises(ValueError, match="template is .* but the volumes are"):
        registration.register_to_template(vols, np.zeros((8, 8, 8), np.float32), (6.0,) * 3, progress=False)


def test_template_rounds_equal_antspyx_and_stop_at_the_tolerance():
    """build_template's rounds one call at a time give antspyx's own template of that many iterations, the relative
    change per round shrinks, and the convergence criterion stops the rounds once a change falls below it."""
    import ants
    from scipy import ndimage

    _, lungs, _ = ct.simulate_cohort(4, (20, 20, 20), seed=1, progress=False)
    drive = np.stack([ndimage.gaussian_filter(m.astype(np.float32), 1.0) for m in lungs])
    template, idx, changes = registration.build_template(drive, (6.0,) * 3, sample_fraction=1.0, iterations=3,
                                                         min_subjects=4, seed=0)
    assert len(changes) == 3 and changes[1] < changes[0]
    with registration._AntsSeed(0):     # the same seeding of ANTs as build_template's
        library = ants.build_template(image_list=[ants.from_numpy(drive[i], spacing=(6.0,) * 3) for i in idx],
                                      iterations=3, type_of_transform="SyN").numpy()
    np.testing.assert_allclose(template, library, rtol=0, atol=1e-5)
    # a tolerance between the first and the second round's change stops after the second; one below every change
    # runs all the rounds allowed
    _, _, early = registration.build_template(drive, (6.0,) * 3, sample_fraction=1.0, iterations=3, min_subjects=4,
                                              tolerance=(changes[0] + changes[1]) / 2)
    assert early == pytest.approx(changes[:2])
    _, _, every = registration.build_template(drive, (6.0,) * 3, sample_fraction=1.0, iterations=3, min_subjects=4,
                                              tolerance=min(changes) / 2)
    assert every == pytest.approx(changes)
    with pytest.raises(ValueError, match="tolerance = 0"):
        registration.build_template(drive, (6.0,) * 3, tolerance=0)
    with pytest.raises(ValueError, match="iterations = 0"):
        registration.build_template(drive, (6.0,) * 3, iterations=0)


def test_outcome_association_equals_two_sample_t_test():
    import pandas as pd
    from scipy import stats

    from helpers.methods.sarcoidosis import cohort

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    table = pd.DataFrame({"y": rng.normal(0, 1, 60) + 0.8 * labels, "noise": rng.normal(0, 1, 60)})
    result = cohort.outcome_associations(table, labels, ["y", "noise"], covariates=())
    assert result.loc["y", "p"] == pytest.approx(stats.ttest_ind(table.y[labels == 0], table.y[labels == 1]).pvalue)
    assert result.loc["y", "p"] < 0.01 and result.loc["noise", "p"] > 0.05
    demo = cohort.demographics_by_cluster(table.assign(age=table.y, bmi=table.y, height_in=table.y, male=labels,
                                                       white=1, scanner="a"), labels)
    assert demo.loc["age mean (sd)", "p"] == pytest.approx(stats.f_oneway(table.y[labels == 0],
                                                                         table.y[labels == 1]).pvalue)
    with pytest.raises(ValueError, match="one cluster"):
        cohort.outcome_associations(table, np.zeros(60, int), ["y"])
    # an existing classification beside the clusters: the same OLS with it instead (here a copy of the clusters)
    staged = table.assign(stage=labels)
    both = cohort.outcome_associations(staged, labels, ["y"], covariates=(), compare_with="stage")
    assert both.loc["y", "r2_with_stage"] == pytest.approx(both.loc["y", "r2_with_cluster"])
    with pytest.raises(ValueError, match="not a column"):
        cohort.outcome_associations(table, labels, ["y"], compare_with="scadding")
    # the adjusted R² is statsmodels', and a permutation p-value follows the F-test: small for y, not for noise
    import statsmodels.formula.api as smf

    covariate_table = table.assign(age=rng.normal(50, 10, 60))
    permuted = cohort.outcome_associations(covariate_table, labels, ["y", "noise"], covariates=("age",),
                                           n_permutations=199, seed=0)
    direct = smf.ols("y ~ C(cluster) + age", covariate_table.assign(cluster=labels)).fit()
    assert permuted.loc["y", "r2_adjusted_with_cluster"] == pytest.approx(direct.rsquared_adj)
    assert permuted.loc["y", "p_permutation"] == pytest.approx(1 / 200)
    assert permuted.loc["noise", "p_permutation"] > 0.05
    # the permutation F equals statsmodels' F for the cluster term
    base_x = np.column_stack([np.ones(60), covariate_table["age"]])
    assert cohort._cluster_f(covariate_table["y"].to_numpy(), base_x, labels) == pytest.approx(
        float(direct.f_test("C(cluster)[T.1] = 0").fvalue))
    with pytest.raises(ValueError, match="not in the table"):
        cohort.demographics_by_cluster(table, labels, continuous=("age",))


def test_scadding_stage_follows_pattern_and_burden():
    rng = np.random.default_rng(0)
    pattern = np.array(["hilar"] * 300 + ["upper"] * 300)
    burden = np.tile(np.linspace(0, 1, 300), 2)
    exact = ct.scadding_stage(pattern, burden, rng, misread=0.0)
    assert set(exact[:300]) == {0, 1, 2} and set(exact[300:]) == {2, 3, 4}
    assert np.all(np.diff(exact[300:]) >= 0)                       # more burden, higher stage
    noisy = ct.scadding_stage(pattern, burden, np.random.default_rng(1), misread=0.25)
    assert 0.15 < np.mean(noisy != exact) < 0.35 and noisy.min() >= 0 and noisy.max() <= 4


def test_registration_gives_the_same_numbers_twice():
    """ANTs SyN with a seed on one ITK thread (set by helpers.methods.sarcoidosis.registration) is bit-reproducible; seed 0 must not fall back to
    ANTs' clock seed."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    base = ndimage.gaussian_filter(rng.random((20, 20, 20)).astype(np.float32), 2)
    vols = np.stack([ndimage.shift(base, (i * 0.7, -i * 0.5, i * 0.3), order=1) for i in range(3)])
    first, _ = registration.register_to_template(vols, base, (2.0,) * 3, progress=False, seed=0)
    second, _ = registration.register_to_template(vols, base, (2.0,) * 3, progress=False, seed=0)
    assert np.array_equal(first, second)
    assert registration.ITK_THREADS == "1"


def test_write_cohort_never_touches_files_it_did_not_write(tmp_path):
    vols, _, table = small_cohort()
    user = tmp_path / "my_scans"
    user.mkdir()
    (user / "sub-001.nii.gz").write_bytes(b"the user's own scan")
    with pytest.raises(FileExistsError, match="not written by helpers"):
        formats.write_cohort(user, vols, table, overwrite=True)
    assert (user / "sub-001.nii.gz").read_bytes() == b"the user's own scan"
    assert sorted(p.name for p in user.iterdir()) == ["sub-001.nii.gz"]
    # a folder of the user's that looks exactly like a cohort (participants.csv + one NIfTI per row) is not ours
    look_alike = formats.write_cohort(tmp_path / "look_alike", vols, table)
    (look_alike / ".written-by-helpers").unlink()
    before = {p.name: p.read_bytes() for p in look_alike.iterdir()}
    with pytest.raises(FileExistsError, match="not written by helpers"):
        formats.write_cohort(look_alike, vols[::-1].copy(), table, overwrite=True)
    assert {p.name: p.read_bytes() for p in look_alike.iterdir()} == before
    # its own cohort it may replace, and only when asked
    folder = formats.write_cohort(tmp_path / "cohort", vols, table)
    formats.write_cohort(folder, vols[::-1].copy(), table, overwrite=True)
    np.testing.assert_allclose(formats.load_cohort(folder)[0], vols[::-1])


@pytest.mark.parametrize("change, match", [
    (lambda v, t: (v[:-1], t), "volumes but .* table rows"),
    (lambda v, t: (v, t.assign(subject=["../escape"] + list(t["subject"][1:]))), "subject id"),
    (lambda v, t: (v, t.assign(subject=[t["subject"][0]] * len(t))), "repeat"),
    (lambda v, t: (v, t.drop(columns="subject")), "'subject' column"),
    (lambda v, t: (v[0], t), "subjects × z × y × x"),
    (lambda v, t: (np.where(np.arange(len(v))[:, None, None, None] == 1, np.nan, v), t), "NaN or inf"),
    (lambda v, t: (np.where(np.arange(len(v))[:, None, None, None] == 0, np.inf, v), t), "NaN or inf"),
])
def test_write_cohort_refuses_inconsistent_input(tmp_path, change, match):
    vols, _, table = small_cohort()
    v, t = change(vols, table.copy())
    with pytest.raises(ValueError, match=match):
        formats.write_cohort(tmp_path / "cohort", v, t)
    assert not (tmp_path / "cohort").exists()


def test_cohort_landmarks_follow_each_subjects_warp():
    shape = (24, 24, 24)
    vols, lungs, _, disease, landmarks = ct.simulate_cohort(4, shape, seed=0, progress=False, return_disease=True,
                                                           return_landmarks=True)
    assert landmarks.shape == (4, len(ct.COHORT_LANDMARKS), 3)
    # the same draws as without landmarks: asking for them changes nothing else
    np.testing.assert_array_equal(vols, ct.simulate_cohort(4, shape, seed=0, progress=False)[0])
    # near where the template's anatomy has them (the warps move them by a few voxels), and inside each lung
    canonical = np.array(list(ct.COHORT_LANDMARKS.values())) * (np.asarray(shape) - 1)
    assert np.abs(landmarks - canonical).max() < 7
    names = list(ct.COHORT_LANDMARKS)
    for i in range(4):
        for j in (names.index("right lung centre"), names.index("left lung centre")):
            assert lungs[i][tuple(landmarks[i, j])]
    assert registration.landmark_spread(landmarks).max() > 0.5       # the subjects differ
    assert registration.landmark_spread(np.repeat(landmarks[:1], 3, 0)).max() == 0


def test_simulated_cohort_can_return_its_true_disease_masks():
    vols, lungs, table, disease = ct.simulate_cohort(6, (16, 16, 16), seed=0, progress=False, return_disease=True)
    same_vols, same_lungs, same_table = ct.simulate_cohort(6, (16, 16, 16), seed=0, progress=False)
    np.testing.assert_array_equal(vols, same_vols)            # asking for the truth changes nothing else
    assert disease.shape == lungs.shape and disease.dtype == bool
    assert not (disease & ~lungs).any()                         # disease lies inside the lung
    assert disease.reshape(6, -1).any(1).all()                  # every subject carries some


def test_hard_cohort_keeps_the_papers_draws_and_adds_its_nuisances():
    shape = (24, 24, 24)
    vols, lungs, table, disease = ct.simulate_cohort(12, shape, seed=2, progress=False, return_disease=True)
    h_vols, h_lungs, h_table, h_disease = ct.simulate_cohort(12, shape, seed=2, progress=False, return_disease=True,
                                                             variant="hard")
    # the same patterns, burdens, demographics and unrelated outcomes; the nuisances on top
    for column in ["pattern", "burden", "age", "height_in", "bmi", "scanner", "dlco", "fas", "crp", "scadding"]:
        assert h_table[column].equals(table[column]), column
    assert {"lung_shift_hu", "air_trapping"} <= set(h_table.columns) and "air_trapping" not in table.columns
    # air trapping lowers FEV1 by 0.8 l per unit (the outcome the two patterns only partly carry)
    np.testing.assert_allclose(table["fev1"] - h_table["fev1"], 0.8 * h_table["air_trapping"], atol=1e-12)
    assert 30 < h_table["lung_shift_hu"].std() < 90
    # the nuisances come from a stream of their own, not from one subject's ([seed, 4004, i] renders subject i)
    for i in range(12):
        assert not np.allclose(h_table["air_trapping"], np.random.default_rng([2, 4004, i]).beta(2, 4, 12))
    # the disease stays the truth inside the lung, every subject still carries some, and its HU contrast is halved
    assert not (h_disease & ~h_lungs).any() and h_disease.reshape(12, -1).any(1).all()
    upper = np.flatnonzero(table["pattern"] == "upper")
    assert len(upper) and all(np.median(vols[i][disease[i]]) > np.median(h_vols[i][h_disease[i]]) for i in upper)
    with pytest.raises(ValueError, match="variant = 'harder'"):
        ct.simulate_cohort(4, shape, progress=False, variant="harder")


def test_middle_cohort_is_the_hard_one_at_lower_strength():
    shape = (24, 24, 24)
    _, _, table = ct.simulate_cohort(8, shape, seed=3, progress=False)
    _, _, h_table = ct.simulate_cohort(8, shape, seed=3, progress=False, variant="hard")
    m_vols, m_lungs, m_table, m_disease = ct.simulate_cohort(8, shape, seed=3, progress=False, return_disease=True,
                                                             variant="middle")
    for column in ["pattern", "burden", "age", "scanner", "dlco", "crp", "scadding"]:
        assert m_table[column].equals(table[column]), column
    # the same nuisance draws, scaled, and the outcomes they move moved in proportion
    strength = ct.COHORT_NUISANCE["middle"]
    assert 0 < strength < 1
    np.testing.assert_allclose(m_table["air_trapping"], strength * h_table["air_trapping"], atol=1e-12)
    np.testing.assert_allclose(m_table["lung_shift_hu"], strength * h_table["lung_shift_hu"], atol=1e-12)
    np.testing.assert_allclose(table["fev1"] - m_table["fev1"], strength * (table["fev1"] - h_table["fev1"]),
                               atol=1e-12)
    assert not (m_disease & ~m_lungs).any() and m_disease.reshape(8, -1).any(1).all()
    # a strength given directly: 1 is the hard variant, 0 the paper one
    _, _, one = ct.simulate_cohort(8, shape, seed=3, progress=False, nuisance=1.0)
    assert one.equals(h_table)
    zero_vols, _, _ = ct.simulate_cohort(8, shape, seed=3, progress=False, nuisance=0.0)
    np.testing.assert_array_equal(zero_vols, ct.simulate_cohort(8, shape, seed=3, progress=False)[0])
    with pytest.raises(ValueError, match="nuisance = 1.5"):
        ct.simulate_cohort(4, shape, progress=False, nuisance=1.5)


@pytest.mark.parametrize("subject", ["../outside", "sub/dir", ".hidden", ""])
def test_load_cohort_reads_nothing_outside_its_folder(tmp_path, subject):
    vols, _, table = small_cohort()
    folder = formats.write_cohort(tmp_path / "cohort", vols, table)
    formats.save_nifti(tmp_path / "outside.nii.gz", np.zeros((4, 4, 4), np.float32))
    edited = table.copy()
    edited.loc[0, "subject"] = subject
    edited.to_csv(folder / "participants.csv", index=False)
    with pytest.raises(ValueError, match="subject id"):
        formats.load_cohort(folder)


# ------------------------------------------------------------------ a real chest CT onto the cohort's grid
def _phantom_chest(shape=(120, 100, 12), spacing=(2.0, 2.0, 5.0)):
    """Air around a soft-tissue body with two lung fields (−850 HU), a vessel inside the right one and a lesion
    against the pleura of the left one (soft tissue bulging into the lung from its outer wall)."""
    x, y = np.meshgrid(np.arange(shape[0]) * spacing[0], np.arange(shape[1]) * spacing[1], indexing="ij")
    body = ((x - 120) / 100) ** 2 + ((y - 100) / 80) ** 2 <= 1
    right = ((x - 60) / 33) ** 2 + ((y - 100) / 50) ** 2 <= 1          # 54 mm of mediastinum between the lungs
    left = ((x - 180) / 33) ** 2 + ((y - 100) / 50) ** 2 <= 1
    vessel = (x - 60) ** 2 + (y - 100) ** 2 <= 4 ** 2
    lesion = ((x - 213) ** 2 + (y - 100) ** 2 <= 12 ** 2) & left
    plane = np.where(body, 40.0, -1000.0)
    plane[right | left] = -850.0
    plane[vessel | lesion] = 40.0
    hu = np.repeat(plane[:, :, None], shape[2], 2).astype(np.float32)
    return hu, np.repeat((right | left)[:, :, None], shape[2], 2), np.repeat(lesion[:, :, None], shape[2], 2)


def test_lung_segmentation_takes_in_vessels_and_pleural_lesions_but_not_outside_air():
    hu, lungs, lesion = _phantom_chest()
    mask = registration.segment_lungs(hu, (2.0, 2.0, 5.0))
    assert mask[lungs & ~lesion].all()
    # the ball fills the lesion's notch in the lung but not its mouth at the pleura (measured 0.74 of it)
    assert mask[lesion].mean() > 0.7
    # nothing of the air around the body, and little soft tissue beyond the lungs (the closing's price)
    assert not mask[hu == -1000].any()
    assert mask.sum() < 1.05 * lungs.sum()
    # without the rolling ball the lesion against the pleura stays out; the vessel inside is filled either way
    no_ball = registration.segment_lungs(hu, (2.0, 2.0, 5.0), closing_mm=2.0)
    assert no_ball[lungs & ~lesion].all() and no_ball[lesion].mean() < 0.5
    with pytest.raises(ValueError, match="no air below"):
        registration.segment_lungs(np.full((20, 20, 3), 40.0), (1, 1, 1))
    with pytest.raises(ValueError, match="three voxel sizes"):
        registration.segment_lungs(hu, (2.0, 2.0))


def test_real_lung_ct_segmentation_holds_its_nodule(repo_data_dir):
    hu, lesion, affine, spacing = bundled.load_real_lung_ct(repo_data_dir, "lung1")
    mask = registration.segment_lungs(hu, spacing)
    # the same scan as Z×Y×X (a DICOM series' order) gives the same mask, transposed
    np.testing.assert_array_equal(registration.segment_lungs(hu.T, spacing[::-1], axial_axis=0), mask.T)
    assert mask[lesion].all()                              # an intrapulmonary nodule: inside the filled lung
    assert 0.10 < mask.mean() < 0.20                       # measured 0.153 of the scan
    assert not (mask & (hu < -900))[:, :5].any()           # no outside air at the scan's edge


def test_cohort_box_puts_the_apex_first_and_the_patients_right_first():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])                  # RAS, 2 mm voxels
    lung = np.zeros((40, 40, 40), bool)
    lung[10:30, 10:30, 10:30] = True
    box = registration.cohort_box(lung, affine, (8, 8, 8), 6.0)
    centre = np.append((np.asarray((8, 8, 8)) - 1) / 2, 1)
    np.testing.assert_allclose(box @ centre, [39.0, 39.0, 39.0, 1.0])      # the lung's centre in mm
    # one voxel along each box axis: inferior (−S), posterior (−A), towards the patient's left (−R), 6 mm each
    np.testing.assert_allclose(box[:3, :3], [[0, 0, -6], [0, -6, 0], [-6, 0, 0]])
    volume = np.zeros((40, 40, 40), np.float32)
    volume[30:40, 15:25, 15:25] = 1.0                      # a block on the patient's right (high RAS x)
    resampled = registration.resample_to_box(volume, affine, box, (8, 8, 8), order=0)
    assert resampled[:, :, :3].sum() > 0 and resampled[:, :, 5:].sum() == 0
    with pytest.raises(ValueError, match="empty"):
        registration.cohort_box(np.zeros((4, 4, 4), bool), affine, (8, 8, 8), 6.0)


def test_bootstrap_stability_is_high_for_separated_clusters_and_low_for_noise():
    from helpers.methods.sarcoidosis import dec

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    separated = rng.normal(0, 0.3, (60, 4)) + 5 * np.eye(4)[labels]
    assert dec.bootstrap_stability(separated, labels, 3, n_boot=10).min() == pytest.approx(1.0)
    noise = rng.normal(0, 1, (60, 4))
    noise_labels, _ = dec.kmeans(noise, 3)
    assert dec.bootstrap_stability(noise, noise_labels, 3, n_boot=10).mean() < 0.8
    with pytest.raises(ValueError, match="one row of features per label"):
        dec.bootstrap_stability(noise[:10], labels, 3)
