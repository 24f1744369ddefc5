"""Deep clustering (helpers.methods.sarcoidosis.dec) and CLAM (helpers.methods.sarcoidosis.clam), checked against scikit-learn, scipy and
pytorch-grad-cam on the same inputs, plus the bad inputs they must refuse."""
import numpy as np
import pytest
import torch

from helpers import features, models
from helpers.simulate import ct
from helpers.methods.sarcoidosis import clam, dec


def small_cluster_model(k=3, input_shape=(1, 16, 16), seed=0):
    ae = dec.ConvAutoencoder(input_shape, channels=(4, 6, 8), latent_dim=5, seed=seed)
    centres = np.random.default_rng(seed).normal(size=(k, 5))
    return dec.ClusterModel(ae, centres).eval()


def test_autoencoder_shapes_2d_and_3d():
    ae2 = dec.ConvAutoencoder((1, 64, 64))
    x = torch.zeros(2, 1, 64, 64)
    recon, z = ae2(x)
    assert recon.shape == x.shape and z.shape == (2, 60)
    assert dict(ae2.named_modules())["encoder.conv2.1"].stride == (1, 1)     # the paper's conv(64, stride 1)
    assert ae2.encoder[:4](x).shape == (2, 64, 32, 32)
    ae3 = dec.ConvAutoencoder((1, 16, 16, 16), channels=(4, 8, 16), latent_dim=7)
    recon3, z3 = ae3(torch.zeros(1, 1, 16, 16, 16))
    assert recon3.shape == (1, 1, 16, 16, 16) and z3.shape == (1, 7) and ae3.feature_shape == (16, 2, 2, 2)
    with pytest.raises(dec.ClusteringError, match="not divisible"):
        dec.ConvAutoencoder((1, 30, 30))


def test_same_seed_same_weights():
    a, b = (dec.ConvAutoencoder((1, 16, 16), channels=(4, 6, 8), seed=3) for _ in range(2))
    torch.manual_seed(123)      # global state must not matter
    c = dec.ConvAutoencoder((1, 16, 16), channels=(4, 6, 8), seed=3)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb) and torch.equal(pa, pc)


def test_soft_assignment_and_target_distribution_match_the_equations():
    rng = np.random.default_rng(0)
    z, mu = rng.normal(size=(7, 3)), rng.normal(size=(4, 3))
    q = dec.soft_assignment(torch.tensor(z), torch.tensor(mu)).numpy()
    d2 = ((z[:, None] - mu[None]) ** 2).sum(-1)
    ref = 1 / (1 + d2)
    np.testing.assert_allclose(q, ref / ref.sum(1, keepdims=True), rtol=1e-6)
    p = dec.target_distribution(torch.tensor(q)).numpy()
    w = q ** 2 / q.sum(0)
    np.testing.assert_allclose(p, w / w.sum(1, keepdims=True), rtol=1e-6)
    assert p.max(1).mean() > q.max(1).mean()          # P sharpens Q


def test_cluster_accuracy_equals_bruteforce_over_permutations():
    from itertools import permutations

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 60)
    pred = np.where(rng.random(60) < 0.7, (y + 2) % 4, rng.integers(0, 4, 60))
    best = max(np.mean(np.array(perm)[pred] == y) for perm in permutations(range(4)))
    assert dec.cluster_accuracy(y, pred) == pytest.approx(best)
    assert dec.cluster_accuracy(y, (y + 1) % 4) == 1.0
    # more clusters than classes: unmatched clusters count as errors
    assert dec.cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5


def test_choose_k_equals_sklearn_silhouette():
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    from sklearn.metrics import silhouette_score

    x, _ = make_blobs(n_samples=150, centers=4, cluster_std=0.5, random_state=0)
    best, scores = dec.choose_k(x, range(2, 7))
    assert best == 4
    ref = silhouette_score(x, KMeans(3, n_init=20, random_state=0).fit(x).labels_)
    assert scores[3] == pytest.approx(ref)


def test_standardise_latent_keeps_reconstruction():
    ae = dec.ConvAutoencoder((1, 16, 16), channels=(4, 6, 8), latent_dim=5, seed=0)
    x = torch.rand(10, 1, 16, 16)
    with torch.no_grad():
        before = ae(x)[0]
    z = dec.embed(ae, x.numpy(), device="cpu")
    dec.standardise_latent(ae, z)
    with torch.no_grad():
        after, z2 = ae(x)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)
    assert abs(float(z2.mean())) < 1e-4 and float(z2.std(0, unbiased=False).mean()) == pytest.approx(1.0, rel=1e-3)


def test_dec_keeps_well_separated_clusters_and_refuses_bad_k():
    sim = ct.simulate_ct_scenario("location", 3, n=30, seed=0)
    x = sim.unit
    ae = dec.ConvAutoencoder(x.shape[1:], channels=(4, 8, 8), latent_dim=8, seed=0)
    dec.pretrain(ae, x, epochs=25, batch_size=8, device="cpu")
    result = dec.fit_dec(ae, x, 3, epochs=3, batch_size=8, device="cpu")
    assert dec.cluster_accuracy(sim.labels, result.labels) >= dec.cluster_accuracy(
        sim.labels, result.initial_labels) - 0.05
    assert result.q.shape == (30, 3) and np.allclose(result.q.sum(1), 1, atol=1e-5)
    # the divergence guard restarts with a 10× smaller rate (forced here: every first update "diverges")
    guarded = dec.fit_dec(ae, x, 3, epochs=2, batch_size=8, device="cpu", lr=1e-3, max_first_change=-1.0,
                                 max_restarts=2)
    assert guarded.history["restarts"] == 2 and guarded.history["lr"] == pytest.approx(1e-5)
    # stopping rules: tol = 0 never stops on labels, "epochs" runs them all, "loss" stops once the epoch loss settles
    untied = dec.fit_dec(ae, x, 3, epochs=4, batch_size=8, device="cpu", stop="labels", tol=0.0)
    assert len(untied.history["epoch_loss"]) == 4 and untied.history["stopped"] == "epochs"
    plateau = dec.fit_dec(ae, x, 3, epochs=40, batch_size=8, device="cpu", stop="loss", loss_tol=0.5, patience=1)
    assert len(plateau.history["epoch_loss"]) < 40 and plateau.history["stopped"].startswith("loss")
    assert dec.loss_settled([1.0, 0.5, 0.499], 0.01, 1) and not dec.loss_settled([1.0, 0.5, 0.4], 0.01, 1)
    # a loss that rises beyond the tolerance has not settled (it used to count as settled); a rise within it has
    assert not dec.loss_settled([1.0, 0.5, 0.6], 0.01, 1) and not dec.loss_settled([1.0, 0.5, 0.9, 0.9], 0.01, 2)
    assert dec.loss_settled([1.0, 0.5, 0.503], 0.01, 1)
    with pytest.raises(dec.ClusteringError, match="stop = 'never'"):
        dec.fit_dec(ae, x, 3, epochs=1, device="cpu", stop="never")
    with pytest.raises(dec.ClusteringError, match="choose 'sgd' or 'adam'"):
        dec.fit_dec(ae, x, 3, epochs=1, device="cpu", optimizer="lbfgs")
    with pytest.raises(dec.ClusteringError, match="at least 2"):
        dec.fit_dec(ae, x, 1, epochs=1, device="cpu")
    with pytest.raises(dec.ClusteringError, match="larger than the number of images"):
        dec.fit_dec(ae, x[:4], 5, epochs=1, device="cpu")
    with pytest.raises(dec.ClusteringError, match="built for"):
        dec.fit_dec(ae, np.zeros((4, 1, 32, 32), np.float32), 2, epochs=1, device="cpu")
    with pytest.raises(dec.ClusteringError, match="NaN"):
        dec.pretrain(ae, np.full((4, 1, 64, 64), np.nan, np.float32), epochs=1, device="cpu")


def test_batched_channel_scores_equal_the_per_channel_loop():
    model = small_cluster_model()
    x = torch.rand(3, 1, 16, 16).numpy()
    batched = clam.channel_scores(model, x, batch_size=5, device="cpu")     # batches straddle images
    loop = clam.channel_scores_loop(model, x, device="cpu")
    torch.testing.assert_close(batched, loop, atol=1e-6, rtol=1e-5)


def test_clam_with_softmax_weights_equals_pytorch_grad_cam_scorecam():
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = small_cluster_model(k=3)
    x = torch.rand(2, 1, 16, 16)
    clusters = [0, 2]
    layer = models.get_layer(model, clam.DEFAULT_LAYER)
    with ScoreCAM(model=model, target_layers=[layer]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in clusters])
    acts = torch.from_numpy(features.layer_activations(model, clam.DEFAULT_LAYER, x, device="cpu"))
    alpha = clam.channel_scores(model, x.numpy(), clusters, device="cpu")
    ours = clam.combine(acts, torch.softmax(alpha, dim=1), (16, 16)).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    np.testing.assert_allclose(clam.score_cam(model, x.numpy(), clusters, device="cpu"), ref, atol=2e-4)
    # CLAM itself weights by the raw probabilities (eq. 9), which is a different map
    maps = clam.clam(model, x.numpy(), clusters, device="cpu")
    assert maps.shape == (2, 16, 16) and maps.min() >= 0 and maps.max() == pytest.approx(1.0, abs=1e-5)


def test_uniform_map_is_clam_with_every_channel_weighted_alike():
    """The sanity baseline: Σ_h A_h, ReLU, min-max at the layer, bilinear upsampling, min-max again — computed by hand
    here — and any constant weight gives the same map (min-max removes the scale)."""
    model = small_cluster_model(k=3)
    x = np.random.default_rng(1).random((2, 1, 16, 16), dtype=np.float32)
    acts = features.layer_activations(model, clam.DEFAULT_LAYER, torch.from_numpy(x), device="cpu")
    summed = np.maximum(acts.sum(1), 0)
    low, high = summed.min((1, 2), keepdims=True), summed.max((1, 2), keepdims=True)
    layer_map = torch.from_numpy((summed - low) / (high - low + 1e-7))[:, None]     # pytorch-grad-cam's 1e-7
    up = torch.nn.functional.interpolate(layer_map, size=(16, 16), mode="bilinear", align_corners=False)[:, 0].numpy()
    low, high = up.min((1, 2), keepdims=True), up.max((1, 2), keepdims=True)
    expected = (up - low) / (high - low + 1e-7)
    ours = clam.uniform_map(model, x, device="cpu")
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    np.testing.assert_allclose(clam.combine(torch.from_numpy(acts), torch.full(acts.shape[:2], 0.3), (16, 16)).numpy(),
                               ours, atol=1e-6)


def test_clam_3d_and_group_maps():
    model = small_cluster_model(k=2, input_shape=(1, 8, 8, 8))
    x = np.random.default_rng(0).random((3, 1, 8, 8, 8), dtype=np.float32)
    maps = clam.clam(model, x, device="cpu")
    assert maps.shape == (3, 8, 8, 8) and np.isfinite(maps).all()
    labels = np.array([0, 1, 1])
    avg = clam.cluster_average(maps, labels, 3)
    np.testing.assert_allclose(avg[1], maps[1:].mean(0), rtol=1e-6)
    assert np.isnan(avg[2]).all()
    # eq. 11: (1/K) Σ_k Σ_{i in C_k} M(x_i), as a mean over the images (the K and N factors are constants)
    k = 2
    eq11 = sum(maps[labels == c].sum(0) for c in range(k)) / k
    np.testing.assert_allclose(clam.population_average(maps, labels, k), eq11 / (len(maps) / k), rtol=1e-6)
    # each cluster counted once is a different map when clusters differ in size, offered under its own name
    np.testing.assert_allclose(clam.population_average(maps, labels, k, weighting="clusters"),
                               (maps[0] + maps[1:].mean(0)) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="weighting="):
        clam.population_average(maps, labels, k, weighting="voxels")
    assert clam.activated_area(np.array([[[0.2, 0.6], [0.5, 1.0]]]), 0.5).tolist() == [3]


def test_clam_bad_inputs():
    model = small_cluster_model(k=3)
    x = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32)
    with pytest.raises(ValueError, match="no layer .encoder.conv9.*encoder.conv3"):
        clam.clam(model, x, layer="encoder.conv9", device="cpu")
    with pytest.raises(ValueError, match="cluster indices"):
        clam.clam(model, x, clusters=[0, 3], device="cpu")
    with pytest.raises(ValueError, match="built for"):
        clam.clam(model, np.zeros((2, 1, 8, 8), np.float32), device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        clam.clam(model, np.full((2, 1, 16, 16), np.nan, np.float32), device="cpu")


def test_ct_simulation_varies_one_factor_at_a_time():
    lung = ct.real_lung_hu()
    assert -1000 < np.median(lung) < -500
    for scenario, factor in (("intensity", "intensity"), ("location", "site"), ("size", "radius")):
        sim = ct.simulate_ct_scenario(scenario, 4, n=40, lung_hu=lung)
        assert sim.images.shape == (40, 64, 64) and np.bincount(sim.labels).tolist() == [10] * 4
        varied = getattr(sim, factor)
        assert len(np.unique(varied)) == 4
        assert all(len(np.unique(varied[sim.labels == c])) == 1 for c in range(4))
        for other in {"intensity", "site", "radius"} - {factor}:
            assert len(np.unique(getattr(sim, other))) == 1
        assert (sim.images[:, 0, 0] == ct.CT_BACKGROUND_HU).all()          # null padding
    inten = ct.simulate_ct_scenario("intensity", 5, n=50, lung_hu=lung)
    assert sorted(np.unique(inten.intensity)) == [0, 100, 200, 300, 400]     # the paper's five levels
    assert not inten.lesions[inten.intensity == 0].any()
    with pytest.raises(ValueError, match="unknown scenario"):
        ct.simulate_ct_scenario("texture", 3)
    with pytest.raises(ValueError, match="2 to 5"):
        ct.simulate_ct_scenario("size", 7)


def test_healthy_reference_has_no_abnormality_and_centres_the_cae():
    lung_hu = ct.real_lung_hu()
    reference = ct.healthy_ct_reference(40, seed=1, lung_hu=lung_hu)
    assert reference.shape == (40, 1, 64, 64) and reference.dtype == np.float32
    lung = ct.lung_slice_template(64)["lung"]
    site = ct.disc((64, 64), ct.CT_SITES[ct.CT_FIXED["site"]], 6) & lung
    mean_image = reference[:, 0].mean(0)
    # the abnormality's site looks like the rest of the lung in healthy slices, unlike in a size data set
    assert abs(mean_image[site].mean() - mean_image[lung & ~site].mean()) < 0.01
    sick = ct.simulate_ct_scenario("size", 3, n=30, lung_hu=lung_hu).unit[:, 0].mean(0)
    assert sick[site].mean() - sick[lung & ~site].mean() > 0.05
    np.testing.assert_array_equal(reference, ct.healthy_ct_reference(40, seed=1, lung_hu=lung_hu))

    ae = dec.ConvAutoencoder((1, 64, 64), channels=(4, 6, 8), latent_dim=5, seed=0)
    x = ct.simulate_ct_scenario("size", 3, n=12, lung_hu=lung_hu).unit
    dec.pretrain(ae, x, epochs=1, batch_size=6, device="cpu", centre=reference)
    np.testing.assert_allclose(ae.input_mean.numpy(), reference.mean(0), atol=1e-6)
    dec.pretrain(ae, x, epochs=1, batch_size=6, device="cpu", centre=True)
    np.testing.assert_allclose(ae.input_mean.numpy(), x.mean(0), atol=1e-6)
    with pytest.raises(dec.ClusteringError, match="do not match"):
        dec.pretrain(ae, x, epochs=1, device="cpu", centre=reference[:, :, :32, :32])
    with pytest.raises(dec.ClusteringError, match="NaN"):
        dec.pretrain(ae, x, epochs=1, device="cpu", centre=np.full_like(reference[:2], np.nan))
    with pytest.raises(dec.ClusteringError, match="'none', 'mean', 'healthy'"):
        dec.run_scenario("size", 3, ks=[3], n=12, channels=(4, 6, 8), pretrain_epochs=1, dec_epochs=1,
                                device="cpu", lung_hu=lung_hu, centre="atlas")


def test_cluster_site_masks_put_each_cluster_on_its_most_common_site():
    template = ct.lung_slice_template(64)
    sites = np.array([0, 0, 1, 1, 1, 0, 2])
    labels = np.array([1, 1, 0, 0, 2, 1, 2])      # cluster 0 → site 1, cluster 1 → site 0, cluster 2: tie → site 1
    masks = ct.cluster_site_masks(labels, sites, 4, template["lung"])
    assert masks.shape == (4, 64, 64) and masks.dtype == bool
    for cluster, site in ((0, 1), (1, 0), (2, 1), (3, 0)):        # cluster 3 is empty: site 0
        want = ct.disc((64, 64), ct.CT_SITES[site], ct.CT_FIXED["radius"]) & template["lung"]
        np.testing.assert_array_equal(masks[cluster], want)
    with pytest.raises(ValueError, match="every simulated slice"):
        ct.cluster_site_masks(labels[:-1], sites, 3, template["lung"])



def test_gap_statistic_finds_separated_blobs_and_one_cloud():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0, 0, 0, 0], [6, 0, 0, 0, 0], [0, 6, 0, 0, 0]], float)   # a triangle, not a line
    blobs = np.concatenate([rng.normal(c, 0.3, (40, 5)) for c in corners])
    k, scores = dec.gap_statistic(blobs, range(1, 7), n_refs=8, seed=0)
    assert k == 3 and set(scores) == set(range(1, 7))
    cloud = rng.normal(0, 1, (120, 5))
    assert dec.gap_statistic(cloud, range(1, 6), n_refs=8, seed=0)[0] == 1    # no structure: one cluster
    with pytest.raises(dec.ClusteringError, match="n_refs"):
        dec.gap_statistic(blobs, range(1, 4), n_refs=1)


def test_rerun_clustering_phase_reproduces_run_scenario_and_keeps_the_pretraining():
    # run_scenario's defaults for the clustering phase are the paper's: every K runs all its epochs
    options = dict(epochs=3, batch_size=8, gamma=0.1, lr=1e-3, seed=0, device="cpu", stop="epochs", tol=0.001,
                   loss_tol=0.01, patience=3)
    first = dec.run_scenario("location", 3, ks=[2, 3], n=24, channels=(4, 6, 8), latent_dim=6, pretrain_epochs=2,
                             dec_epochs=3, batch_size=8, seed=0, device="cpu", centre="mean")
    again = dec.rerun_clustering_phase(first, **options)
    assert list(again.dec) == [2, 3] and again.silhouette_post == first.silhouette_post
    for k in (2, 3):
        np.testing.assert_array_equal(again.dec[k].labels, first.dec[k].labels)
    other = dec.rerun_clustering_phase(first, ks=[3], **{**options, "stop": "epochs", "epochs": 5})
    assert len(other.dec[3].history["epoch_loss"]) == 5 and list(other.silhouette_post) == [3]
    assert other.autoencoder is first.autoencoder and other.silhouette_pre == first.silhouette_pre
    assert len(first.dec[3].history["epoch_loss"]) == 3 and list(first.dec) == [2, 3]    # the original untouched
    with pytest.raises(dec.ClusteringError, match="ks is empty"):
        dec.rerun_clustering_phase(first, ks=[], **options)
