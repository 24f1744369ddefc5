import numpy as np
import pytest
import torch

from helpers import explain, models, recipes, training, xai_metrics
from helpers.data import bundled, tensors
from helpers.methods.dti import diffusion, explorer


# ------------------------------------------------------------------------------------------------ DTI
def test_md_fa_equal_dipy_on_real_data():
    data, bvals, bvecs = bundled.load_dwi("small_25")
    fit = diffusion.fit_tensor(data, bvals, bvecs)
    ok = (fit.evals > 0).all(-1)
    md, fa = diffusion.md_fa(fit.evals[ok])
    assert ok.mean() > 0.5
    np.testing.assert_allclose(md, fit.md[ok], rtol=1e-6)
    np.testing.assert_allclose(fa, fit.fa[ok], atol=1e-6)


def test_md_fa_by_hand():
    md, fa = diffusion.md_fa(np.array([[1.0, 1.0, 1.0], [3.0, 0.0001, 0.0001]]))
    assert md[0] == pytest.approx(1.0) and fa[0] == pytest.approx(0.0)
    assert fa[1] == pytest.approx(1.0, abs=1e-3)               # a stick: FA → 1


def test_bad_dti_inputs_are_named():
    data, bvals, bvecs = bundled.load_dwi("small_25")
    with pytest.raises(ValueError, match="must match one to one"):
        diffusion.fit_tensor(data, bvals[:-1], bvecs[:-1])
    with pytest.raises(ValueError, match="non-positive eigenvalues"):
        diffusion.md_fa(np.array([[1.0, 0.5, -0.1]]))
    with pytest.raises(ValueError, match="unknown dipy data set"):
        bundled.load_dwi("hardi")


def _synthetic_shells(shells, kurtosis=0.0, evals=(1.7e-3, 0.3e-3, 0.3e-3), n_directions=30):
    """Noise-free signals of one tensor on a few shells (S0 = 1) on a 2 × 1 × 1 grid, with an isotropic kurtosis term
    (exp(−bD + b²D²K/6) along each direction)."""
    from dipy.core.sphere import HemiSphere, disperse_charges

    rng = np.random.default_rng(0)
    theta, phi = np.arccos(rng.uniform(-1, 1, n_directions)), rng.uniform(0, 2 * np.pi, n_directions)
    directions = disperse_charges(HemiSphere(theta=theta, phi=phi), 2000)[0].vertices
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    tensor = rotation @ np.diag(evals) @ rotation.T
    bvals = np.concatenate([[0.0, 0.0]] + [np.full(n_directions, b) for b in shells])
    bvecs = np.vstack([np.zeros((2, 3))] + [directions] * len(shells))
    adc = np.einsum("ni,ij,nj->n", bvecs, tensor, bvecs)
    signal = np.exp(-bvals * adc + bvals ** 2 * adc ** 2 * kurtosis / 6)
    return np.tile(signal, (2, 1, 1, 1)), bvals, bvecs


def test_single_shell_fits_agree_for_gaussian_diffusion_and_name_bad_shells():
    data, bvals, bvecs = _synthetic_shells([1000, 2000])
    mask = np.ones(data.shape[:3], bool)
    expected_md, expected_fa = diffusion.md_fa(np.array([[1.7e-3, 0.3e-3, 0.3e-3]]))
    for shell in (1000, 2000):
        fit = diffusion.fit_tensor_shell(data, bvals, bvecs, shell, mask=mask)
        np.testing.assert_allclose(fit.md, expected_md[0], rtol=1e-4)
        np.testing.assert_allclose(fit.fa, expected_fa[0], atol=1e-4)
    assert diffusion.shell_volumes(bvals, 1000).sum() == 2 + 30
    with pytest.raises(ValueError, match=r"shells \[1000.0, 2000.0\]"):
        diffusion.shell_volumes(bvals, 3000)
    few = np.r_[np.ones(2, bool), np.arange(60) < 4]
    with pytest.raises(ValueError, match="fewer than 6 distinct"):
        diffusion.fit_tensor_shell(data[..., few], bvals[few], bvecs[few], 1000)


def test_direction_averaged_diffusivity_and_kurtosis_on_known_signals():
    shells = [1000, 2000, 3000]
    # Gaussian diffusion: the direction-averaged signal of an isotropic tensor decays with D at every b
    data, bvals, bvecs = _synthetic_shells(shells, evals=(0.8e-3,) * 3)
    mask = np.ones(data.shape[:3], bool)
    found, diffusivity, n = diffusion.direction_averaged_diffusivity(data, bvals, bvecs, mask)
    np.testing.assert_array_equal(found, shells)
    assert n.tolist() == [30, 30, 30]
    np.testing.assert_allclose(diffusivity, 0.8e-3, rtol=1e-9)
    # kurtosis 1: the apparent diffusivity falls with b, and dipy's MSDKI gives the kurtosis back
    data, bvals, bvecs = _synthetic_shells(shells, kurtosis=1.0, evals=(0.8e-3,) * 3)
    _, diffusivity, _ = diffusion.direction_averaged_diffusivity(data, bvals, bvecs, mask)
    assert (np.diff(diffusivity, axis=1) < 0).all()
    np.testing.assert_allclose(diffusivity[:, 0], 0.8e-3 - 1000 * 0.8e-3 ** 2 / 6, rtol=1e-9)   # D − bD²K/6
    msd, msk = diffusion.mean_signal_kurtosis(data, bvals, bvecs, mask)
    np.testing.assert_allclose(msd, 0.8e-3, rtol=1e-3)
    np.testing.assert_allclose(msk, 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="at least two shells"):
        diffusion.mean_signal_kurtosis(data, bvals, bvecs, mask, max_b=1000)


# ------------------------------------------------------------------------------------------ regression
def test_regression_targets_and_split():
    reg = {"md": np.array([1.0, 0.9, 0.8]), "fa": np.array([0.2, 0.3, 0.4]), "cc": np.array([3, 4, 5])}
    assert recipes.regression_targets(reg, ("md", "cc")).shape == (3, 2)
    with pytest.raises(ValueError, match="unknown target"):
        recipes.regression_targets(reg, ("adc",))
    reg["fa"] = np.array([0.2, np.nan, 0.4])
    with pytest.raises(ValueError, match="NaN"):
        recipes.regression_targets(reg, ("fa",))
    samples = np.repeat(np.arange(4), 25)
    tr, va, te = recipes.regression_split(samples, (2, 3), seed=0)
    assert len(tr) == 30 and len(va) == len(te) == 10
    assert set(samples[np.r_[tr, va, te]]) == {2, 3} and not set(tr) & set(va) | set(tr) & set(te)
    with pytest.raises(training.TrainingError, match="at least 5"):
        recipes.regression_split(samples, (7,), seed=0)


def test_regression_net_heads_and_frozen_backbone():
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    net = models.RegressionNet(backbone, 8, ("md", "fa"), dense=16, feature_dense=4)
    assert net(torch.rand(5, 3, 16, 16)).shape == (5, 2)
    net.set_backbone_trainable(False)
    net.train()
    assert not net.backbone.training and net.dense.training
    assert not any(p.requires_grad for p in net.backbone.parameters())
    r2 = recipes.r2_scores(np.array([[1.0, 2], [2, 4], [3, 6]]), np.array([[1.0, 2], [2, 4], [3, 5]]))
    assert r2[0] == pytest.approx(1.0) and r2[1] == pytest.approx(1 - 1 / 8)


def test_thesis_r2_ignores_a_constant_offset_that_sklearns_r2_counts():
    rng = np.random.default_rng(0)
    y = rng.normal(0.8, 0.1, (50, 2))
    pred = y + rng.normal(0, 0.03, (50, 2))
    shifted = pred + [0.2, 0.0]                      # the first target predicted 0.2 too high everywhere
    thesis, sklearn_r2 = recipes.r2_scores(y, shifted, "thesis"), recipes.r2_scores(y, shifted)
    # equation 3.2 by hand: 1 − var(Y − Ŷ) / var(Y)
    by_hand = [1 - np.var(y[:, j] - shifted[:, j]) / np.var(y[:, j]) for j in range(2)]
    assert thesis == pytest.approx(by_hand)
    assert thesis[0] == pytest.approx(recipes.r2_scores(y, pred, "thesis")[0]) and sklearn_r2[0] < 0 < thesis[0]
    assert thesis[1] == pytest.approx(sklearn_r2[1], abs=0.02)       # no offset: the two nearly agree
    with pytest.raises(ValueError, match="definition='adjusted'"):
        recipes.r2_scores(y, pred, "adjusted")


def test_test_time_symmetries_average_the_eight_turned_patches():
    torch.manual_seed(0)
    # a network that sees where things are (flatten, no pooling): its output changes when the patch is turned
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 2))
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    scale = {"mean": [1.0, -2.0], "std": [0.5, 3.0]}
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        turned = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
        by_hand = torch.stack([net(t) for t in turned + [torch.flip(t, dims=(3,)) for t in turned]]).mean(0)
    expected = by_hand.numpy() * np.array(scale["std"]) + np.array(scale["mean"])
    np.testing.assert_allclose(recipes.predict_regression(net, images, scale | {"symmetries": 8}), expected,
                               rtol=1e-5, atol=1e-5)
    plain = recipes.predict_regression(net, images, scale)                       # no "symmetries": one pass
    np.testing.assert_allclose(plain, net(x).detach().numpy() * np.array(scale["std"]) + np.array(scale["mean"]),
                               rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain, expected, atol=1e-3)                         # the average did change something
    with pytest.raises(ValueError, match="use 1 \\(none\\), 2, 4 or 8"):
        recipes.predict_regression(net, images, scale, symmetries=3)


# -------------------------------------------------------------------------------------- explanations
def _small_regressor():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()


def test_explain_equals_captum_called_directly():
    import captum.attr as ca

    model = _small_regressor()
    x = torch.rand(3, 3, 12, 12)
    ours = explain.explain(model, x, "saliency", target=1)
    ref = ca.Saliency(model).attribute(x.clone().requires_grad_(True), target=1, abs=True).amax(1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    ours = explain.explain(model, x, "smoothgrad", target=0, stdev=0.2, n_samples=5, batch_size=3, seed=1)
    torch.manual_seed(1)       # captum draws the noise from the global generator; ours seeds its own per call
    ref = ca.NoiseTunnel(ca.Saliency(model)).attribute(x.clone().requires_grad_(True), nt_type="smoothgrad",
                                                       nt_samples=5, nt_samples_batch_size=5,
                                                       stdevs=0.2 * float(x.max() - x.min()), target=0, abs=False)
    np.testing.assert_allclose(ours, ref.abs().amax(1).numpy(), rtol=1e-5, atol=1e-7)
    torch.manual_seed(123)     # whatever ran before, the same seed gives the same SmoothGrad map
    again = explain.explain(model, x, "smoothgrad", target=0, stdev=0.2, n_samples=5, batch_size=3, seed=1)
    np.testing.assert_array_equal(again, ours)
    ours = explain.explain(model, x, "ig", target=0, steps=8)
    ref = ca.IntegratedGradients(model).attribute(x, baselines=x * 0, target=0, n_steps=8).sum(1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6)


def test_explain_rejects_bad_calls():
    model = _small_regressor()
    x = torch.rand(2, 3, 12, 12)
    with pytest.raises(ValueError, match="unknown method"):
        explain.explain(model, x, "deeplift-ish")
    with pytest.raises(ValueError, match="out of range"):
        explain.explain(model, x, "saliency", target=2)
    with pytest.raises(ValueError, match="channels-last"):
        explain.explain(model, x.permute(0, 2, 3, 1), "saliency")
    with pytest.raises(ValueError, match="needs the name of a convolutional layer"):
        explain.explain(model, x, "gradcampp")


# ----------------------------------------------------------------------------------------- measures
def test_relevance_mass_and_map_correlation():
    maps = np.array([[[1.0, 3.0], [0.0, -2.0]]])
    mask = np.array([[[True, False], [False, True]]])
    assert xai_metrics.relevance_mass(maps, mask)[0] == pytest.approx(0.25)   # negatives do not count
    truth = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    assert xai_metrics.map_correlation(maps, truth)[0] == pytest.approx(np.corrcoef(maps.ravel(), truth.ravel())[0, 1])
    with pytest.raises(ValueError, match="differ in shape"):
        xai_metrics.relevance_mass(maps, mask[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        xai_metrics.map_correlation(maps * np.nan, truth)


# ------------------------------------------------------------------------------------------ explorer
def test_explorer_filters():
    y_true = np.array([[1.0, 0.2], [0.5, 0.4], [0.8, 0.6]])
    y_pred = np.array([[1.1, 0.2], [0.5, 0.5], [0.6, 0.6]])
    table = explorer.patch_table(y_true, y_pred, ("md", "fa"), ids=[10, 11, 12])
    assert table.loc[10, "md_delta"] == pytest.approx(0.1) and table.loc[10, "md_rdelta"] == pytest.approx(10.0)
    assert explorer.filter_patches(table, "md").tolist() == [10, 11, 12]
    assert explorer.filter_patches(table, "md", truth=(0.7, None)).tolist() == [10, 12]
    assert explorer.filter_patches(table, "md", delta=(None, 0.0)).tolist() == [11, 12]
    assert explorer.filter_patches(table, "fa", rdelta=(20, 30)).tolist() == [11]
    with pytest.raises(ValueError, match="unknown target 'cc'"):
        explorer.filter_patches(table, "cc")
    with pytest.raises(ValueError, match="empty"):
        explorer.filter_patches(table, "md", truth=(1.0, 0.5))
    with pytest.raises(ValueError, match="N × 2"):
        explorer.patch_table(y_true[:, :1], y_pred, ("md", "fa"))


def test_explorer_widget_builds_without_a_browser(capsys):
    import matplotlib

    matplotlib.use("Agg")
    images = np.zeros((3, 8, 8, 3), np.uint8)
    table = explorer.patch_table(np.ones((3, 1)), np.ones((3, 1)) * 1.1, ("cc",))
    box = explorer.build_explorer(images, {("saliency", "cc"): np.random.rand(3, 8, 8)}, table, ("cc",), draw_now=True)
    assert type(box).__name__ == "VBox"
    # without a kernel the Output widget passes its prints through to stdout
    assert "3 patches match" in capsys.readouterr().out                          # drawn at once
    lazy = explorer.build_explorer(images, {("saliency", "cc"): np.random.rand(3, 8, 8)}, table, ("cc",))
    assert "patches match" not in capsys.readouterr().out                        # not yet drawn
    show = lazy.children[0].children[2].children[2]
    show.click()
    assert "3 patches match" in capsys.readouterr().out                          # drawn on "show"


def test_handcrafted_features_measure_density_and_orientation():
    from helpers.methods.dti import histology_features as hf

    size = 64
    yy, xx = np.mgrid[:size, :size]
    stripes = 0.5 + 0.4 * np.sin(xx / 2.0)                                  # edges all vertical
    noise = np.random.default_rng(0).random((size, size))
    grey = np.stack([stripes, noise])
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    anisotropy = hf.image_anisotropy(rgb)
    assert anisotropy[0] > 0.9 and anisotropy[1] < 0.2
    # haematoxylin-blue discs on pink: more discs, higher density
    pink = np.array([0.95, 0.75, 0.85])
    blue = np.array([0.25, 0.2, 0.55])
    patches = np.tile(pink, (3, size, size, 1))
    for n, patch in zip((2, 6, 12), patches):
        for k in range(n):
            cy, cx = 8 + (k * 13) % 48, 8 + (k * 29) % 48
            patch[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] = blue
    threshold = hf.nuclei_threshold(patches)
    density = hf.cell_density(patches, threshold)
    assert density[0] < density[1] < density[2]
    x = hf.features(patches, threshold)
    model = hf.fit_regression(x, 3 * density + 1, degree=1)
    np.testing.assert_allclose(model.predict(x), 3 * density + 1, atol=1e-9)
    with pytest.raises(ValueError, match="N × H × W × 3"):
        hf.cell_density(patches[0], threshold)
    with pytest.raises(ValueError, match="degree"):
        hf.fit_regression(x, density, degree=0)


def test_erase_paints_only_the_masked_objects():
    from helpers.methods.dti import histology_features as hf

    images = np.full((2, 16, 16, 3), 200, np.uint8)
    images[:, 4:6, 4:6] = 20                                              # a dark "nucleus"
    masks = np.zeros((2, 16, 16), bool); masks[:, 4:6, 4:6] = True
    erased = hf.erase(images, masks, grow=0)
    assert (erased == 200).all() and (images[:, 4, 4] == 20).all()        # the input is not touched
    control = hf.shifted_masks(masks)
    assert control.sum() == masks.sum() and not (control & masks).any()
    with pytest.raises(ValueError, match="one N × H × W mask"):
        hf.erase(images, masks[:, :8])


def test_sample_folds_hold_every_sample_out_once():
    samples = np.repeat(np.arange(4), [10, 10, 30, 30])
    folds = list(recipes.sample_folds(samples, seed=0))
    assert [f[0] for f in folds] == [0, 1, 2, 3]
    for held, train_idx, val_idx, out_idx in folds:
        np.testing.assert_array_equal(out_idx, np.flatnonzero(samples == held))
        assert held not in set(samples[train_idx]) | set(samples[val_idx])
        assert not set(train_idx) & set(val_idx)
        # the thesis's 60 / 20 / 20 split of the other samples' patches (its test part unused)
        others = (samples != held).sum()
        assert len(val_idx) == round(0.2 * others) and len(train_idx) == others - 2 * round(0.2 * others)
    assert [f[0] for f in recipes.sample_folds(samples, 0, held_out=[3])] == [3]
    with pytest.raises(ValueError, match=r"held_out names sample\(s\) \[7\]"):
        list(recipes.sample_folds(samples, 0, held_out=[7]))
    with pytest.raises(ValueError, match="at least two"):
        list(recipes.sample_folds(np.zeros(20, int), 0))


def test_frozen_head_learns_a_target_made_of_the_features_and_repeats_itself():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(300, 12)).astype(np.float32)
    y = np.stack([features[:, :3].sum(1), features[:, 3] - 0.5 * features[:, 4]], 1) * 0.1 + [1.0, 0.3]
    train_idx, val_idx, test_idx = np.arange(180), np.arange(180, 240), np.arange(240, 300)
    options = dict(dense=32, feature_dense=16, dropout=0.0, frozen_epochs=20, epochs=20, frozen_lr=3e-3, batch_size=16,
                   patience=10)
    pred, history = recipes.fit_frozen_head(features, y, train_idx, val_idx, smoke=True, seed=1, **options)
    assert pred.shape == y.shape and len(history["epoch"]) <= 40
    r2 = recipes.r2_scores(y[test_idx], pred[test_idx])
    assert min(r2) > 0.9, r2                          # in the targets' own units, on patches it never saw
    again, _ = recipes.fit_frozen_head(features, y, train_idx, val_idx, smoke=True, seed=1, **options)
    np.testing.assert_array_equal(pred, again)
    with pytest.raises(ValueError, match="N × C features"):
        recipes.fit_frozen_head(features[:, :, None], y, train_idx, val_idx, smoke=True)
    with pytest.raises(ValueError, match="same N"):
        recipes.fit_frozen_head(features[:10], y, train_idx, val_idx, smoke=True)


def test_backbone_features_are_what_the_regression_network_pools(repo_data_dir):
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    pooled = recipes.backbone_features(repo_data_dir, images)
    backbone, channels = models.regression_backbone("efficientnet_lite0", repo_data_dir)
    net = models.RegressionNet(backbone, channels).eval()
    with torch.no_grad():
        expected = net.pool(net.backbone(tensors.to_tensor_images(images))).flatten(1)
    assert pooled.shape == (3, channels)
    np.testing.assert_allclose(pooled, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_handcrafted_degree_is_chosen_on_validation():
    from helpers.methods.dti import histology_features as hf

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (200, 2))
    quadratic = (x[:, 0] - 0.5) ** 2 + 0.01 * rng.normal(size=200)
    fitted, degree = hf.fit_on_validation(x[:100], quadratic[:100], x[100:], quadratic[100:])
    assert degree == 2 and recipes.r2_scores(quadratic[100:, None], fitted.predict(x[100:])[:, None])[0] > 0.9
    linear = 2 * x[:, 1] + 0.01 * rng.normal(size=200)
    assert hf.fit_on_validation(x[:100], linear[:100], x[100:], linear[100:], degrees=(1,))[1] == 1
    with pytest.raises(ValueError, match="degrees is empty"):
        hf.fit_on_validation(x[:100], linear[:100], x[100:], linear[100:], degrees=())
