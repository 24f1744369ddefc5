import numpy as np
import pytest

from helpers.data import formats
from helpers.simulate import histology


def _count(inst):
    return len(np.unique(inst)) - 1


def test_same_seed_same_slide_other_seed_other_slide():
    a = histology.render_slide(5, size=256)
    b = histology.render_slide(5, size=256)
    c = histology.render_slide(6, size=256)
    assert np.array_equal(a.scene.rgb, b.scene.rgb)
    assert np.array_equal(a.scene.nuclei_instances, b.scene.nuclei_instances)
    assert not np.array_equal(a.scene.rgb, c.scene.rgb)


@pytest.mark.parametrize("grade", formats.GRADES)
def test_every_nucleus_is_in_the_instance_mask(grade):
    for seed in range(3):
        sc = histology.render_grade_patch(seed, grade, size=96)
        assert sc.n_nuclei == _count(sc.nuclei_instances) > 0
        # types agree with the instance mask
        assert np.array_equal(sc.nuclei_types > 0, sc.nuclei_instances > 0)


def test_slide_ground_truth_is_consistent():
    slide = histology.render_slide(11, size=512, positive=True, n_tumours=2)
    sc = slide.scene
    tumour, tissue = sc.masks["tumour"], sc.masks["tissue"]
    assert slide.label == 1 and len(slide.annotations) == 2 and tumour.any()
    assert not (tumour & ~tissue).any()
    # neoplastic nuclei (their centres) lie inside the tumour polygons
    from skimage.draw import polygon

    annotated = np.zeros_like(tumour)
    for poly in slide.annotations:
        rr, cc = polygon(poly[:, 0], poly[:, 1], annotated.shape)
        annotated[rr, cc] = True
    neo = sc.nuclei["type"] == 1
    cy, cx = np.rint(sc.nuclei["y"][neo]).astype(int), np.rint(sc.nuclei["x"][neo]).astype(int)
    assert neo.sum() > 50 and annotated[cy, cx].mean() > 0.99
    assert (sc.nuclei_types[tumour] == 1).any() and not (sc.nuclei_types[~tissue] > 0).any()
    assert not (sc.masks["lumen"] & ~sc.masks["glands"]).any()
    assert sc.masks["edge"].any() and not (sc.masks["edge"] & ~tissue).any()
    # background is bright glass, nuclei are dark
    assert sc.rgb[~tissue].mean() > 225 and sc.rgb[sc.nuclei_instances > 0].mean() < sc.rgb[tissue].mean() - 30
    neg = histology.render_slide(12, size=512, positive=False)
    assert neg.label == 0 and not neg.scene.masks["tumour"].any() and not (neg.scene.nuclei_types == 1).any()


def test_grades_move_morphology_but_neighbours_overlap():
    from scipy.stats import spearmanr

    frac = {g: [] for g in formats.GRADES[2:]}
    lumen = {g: [] for g in formats.GRADES[2:]}
    for g in frac:
        for seed in range(12):
            sc = histology.render_grade_patch(100 + seed, g, size=96)
            frac[g].append((sc.nuclei_instances > 0).mean())
            lumen[g].append(sc.masks["lumen"].mean())
    grade = np.repeat(np.arange(5), 12)
    assert spearmanr(grade, np.concatenate(list(frac.values())))[0] > 0.6     # more nuclear area with grade
    assert spearmanr(grade, np.concatenate(list(lumen.values())))[0] < -0.6   # fewer, smaller lumina
    r2, r3 = np.array(frac["R2"]), np.array(frac["R3"])
    assert r2.max() > r3.min()                                                # neighbours overlap


def test_unknown_grade_is_named():
    with pytest.raises(ValueError, match="R1"):
        formats.grade_index("R7")
    with pytest.raises(ValueError, match="out of range"):
        histology.render_grade_patch(0, 9)
    assert formats.grade_index(" r3 ") == 4


def test_regression_targets_follow_the_tissue():
    params = histology.regression_sample_params(16, seed=0)
    rows = [histology.render_regression_patch(i, params, i % 16, size=64)[1] for i in range(64)]
    nf = np.array([r["nuclear_fraction"] for r in rows])
    coh = np.array([r["coherence"] for r in rows])
    md = np.array([r["md"] for r in rows])
    fa = np.array([r["fa"] for r in rows])
    assert np.corrcoef(nf, md)[0, 1] < -0.8
    assert np.corrcoef(coh, fa)[0, 1] > 0.8
    md_, fa_ = histology.md_fa_from_tissue(0.2, 0.5)
    assert md_ == pytest.approx(1.45 - 2.2 * 0.2) and fa_ == pytest.approx(0.08 + 0.55 * 0.5)


def test_unknown_artefact_is_named():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="blur"):
        histology.render_patch(rng, (32, 32), artefacts=("smudge",))


def test_a_slide_without_benign_glands_keeps_its_section_and_tumours():
    default = histology.render_slide(13, size=384, positive=True, n_tumours=1)
    glandless = histology.render_slide(13, size=384, positive=True, n_tumours=1, benign_glands=False)
    for name in ("tissue", "tumour", "fat"):
        assert np.array_equal(default.scene.masks[name], glandless.scene.masks[name]), name
    assert (default.scene.masks["glands"] & ~default.scene.masks["tumour"]).any()
    # glands remain only inside the tumour (its own neoplastic glands)
    assert not (glandless.scene.masks["glands"] & ~glandless.scene.masks["tumour"]).any()


def test_rendering_knobs_change_the_pixels_and_never_the_ground_truth():
    # every knob moved off its default at once, with artefacts drawn after the rendering
    moved = histology.Rendering(fibre_wavelength_um=16.0, fibre_length=0.05, looseness=0.1, bundle_sharpness=6.0,
                                cleft_eosin=0.0, bundle_eosin=0.3, stroma_hema=0.08, hema_follows_bundles=0.7,
                                cleft_clearing=0.8, epithelium_hema=0.15, chromatin_contrast=0.4,
                                chromatin_grain_um=1.0, rim_base=0.5, rim_gain=0.8, nuclear_stain=0.7,
                                stain_grain=0.05, stain_grain_um=1.5, residual_base=0.05, camera_noise=0.02,
                                optics_sigma_px=0.8, jpeg_quality=70)
    default = histology.render_slide(21, size=384, n_tumours=2, artefacts=["pen", "fold"])
    explicit = histology.render_slide(21, size=384, n_tumours=2, artefacts=["pen", "fold"],
                                      rendering=histology.Rendering())
    other = histology.render_slide(21, size=384, n_tumours=2, artefacts=["pen", "fold"], rendering=moved)
    assert np.array_equal(default.scene.rgb, explicit.scene.rgb)
    assert np.abs(default.scene.rgb.astype(int) - other.scene.rgb).mean() > 5
    assert np.array_equal(default.scene.nuclei_instances, other.scene.nuclei_instances)
    assert np.array_equal(default.scene.nuclei_types, other.scene.nuclei_types)
    for name in histology.MASK_NAMES:
        assert np.array_equal(default.scene.masks[name], other.scene.masks[name]), name
    assert all(np.array_equal(a, b) for a, b in zip(default.annotations, other.annotations))
    for key in default.scene.nuclei:
        assert np.array_equal(default.scene.nuclei[key], other.scene.nuclei[key]), key


def test_version_7_is_version_6_with_the_three_calibrated_knobs():
    import dataclasses

    old, new = dataclasses.asdict(histology.RENDERING_VERSION_6), dataclasses.asdict(histology.RENDERING)
    assert histology.SIMULATOR_VERSION == 7
    assert {k: (old[k], new[k]) for k in old if old[k] != new[k]} == {
        "stroma_hema": (0.17, 0.1), "epithelium_hema": (0.30, 0.12), "jpeg_quality": (0, 80)}


def test_the_jpeg_step_gives_the_same_pixels_on_every_simd_path():
    """libjpeg-turbo picks SIMD code by CPU; its integer DCT must give the same bytes without SIMD (JSIMD_FORCENONE),
    or a simulated tile would depend on the machine."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from helpers.simulate import histology; "
            "print(hashlib.sha256(histology.render_slide(5, size=256).scene.rgb.tobytes()).hexdigest())")
    digests = {}
    for force in ("", "JSIMD_FORCENONE", "JSIMD_FORCESSE2"):
        variables = {k: v for k, v in os.environ.items() if not k.startswith("JSIMD_")} | ({force: "1"} if force else {})
        digests[force or "default"] = subprocess.run([sys.executable, "-c", code], env=variables, check=True,
                                                     capture_output=True, text=True).stdout.strip()
    assert len(set(digests.values())) == 1, digests


def test_rendering_knobs_refuse_bad_values():
    with pytest.raises(ValueError, match="camera_noise"):
        histology.Rendering(camera_noise=-0.1)
    with pytest.raises(ValueError, match="fibre_length"):
        histology.Rendering(fibre_length=0.0)
    with pytest.raises(ValueError, match="hema_follows_bundles"):
        histology.Rendering(hema_follows_bundles=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        histology.Rendering(jpeg_quality=75.5)
    assert histology.Rendering(looseness=-0.3).looseness == -0.3      # an offset: negative is allowed
    with pytest.raises(TypeError, match="Rendering"):
        histology.render_patch(np.random.default_rng(0), (32, 32), rendering={"camera_noise": 0.0})
