"""Every attribution method of helpers.explain equals its library called directly on the same input; LIME's
batched perturbations give lime_image's own explanation."""
import numpy as np
import pytest
import torch

from helpers import explain, models


@pytest.fixture(scope="module")
def grading_cnn():
    torch.manual_seed(0)
    return models.GradingCNN(7, input_size=64).eval()


@pytest.fixture(scope="module")
def tiles():
    torch.manual_seed(1)
    return torch.rand(3, 3, 64, 64)


@pytest.mark.parametrize("name, cls", [("gradcampp", "GradCAMPlusPlus"), ("layercam", "LayerCAM"),
                                       ("scorecam", "ScoreCAM")])
def test_cam_family_equals_pytorch_grad_cam(grading_cnn, tiles, name, cls):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ours = explain.explain(grading_cnn, tiles, name, target=2, layer="relu3", batch_size=2)
    with getattr(pgc, cls)(model=grading_cnn, target_layers=[grading_cnn.relu3]) as cam:
        ref = cam(input_tensor=tiles, targets=[ClassifierOutputTarget(2)] * len(tiles))
    assert ours.shape == (3, 64, 64)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_ig_noise_tunnel_and_occlusion_equal_captum(grading_cnn, tiles):
    import captum.attr as ca

    ours = explain.explain(grading_cnn, tiles, "ig_nt", target=5, stdev=0.1, n_samples=3, steps=6, batch_size=3,
                           seed=3)
    torch.manual_seed(3)       # captum's noise comes from the global generator, ours from one seeded per call
    ref = ca.NoiseTunnel(ca.IntegratedGradients(grading_cnn)).attribute(
        tiles, nt_type="smoothgrad", nt_samples=3, stdevs=0.1 * float(tiles.max() - tiles.min()),
        baselines=tiles * 0, target=5, n_steps=6)
    np.testing.assert_allclose(ours, ref.sum(1).detach().numpy(), rtol=1e-4, atol=1e-6)
    ours = explain.explain(grading_cnn, tiles, "occlusion", target=1, window=16, stride=8)
    ref = ca.Occlusion(grading_cnn).attribute(tiles, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8),
                                              baselines=0.0, target=1)
    np.testing.assert_allclose(ours, ref.sum(1).numpy(), rtol=1e-4, atol=1e-6)


def test_smoothgrad_of_absolute_gradients_equals_captum_and_differs_from_the_absolute_mean(grading_cnn, tiles):
    import captum.attr as ca

    sigma = 0.2 * float(tiles.max() - tiles.min())
    ours = explain.explain(grading_cnn, tiles, "smoothgrad", target=2, stdev=0.2, n_samples=4, batch_size=3, seed=5,
                           abs=True)
    torch.manual_seed(5)
    # |gradient| of every noisy sample, averaged (captum's Saliency default abs=True), then the channel maximum
    ref = ca.NoiseTunnel(ca.Saliency(grading_cnn)).attribute(tiles, nt_type="smoothgrad", nt_samples=4,
                                                             nt_samples_batch_size=4, stdevs=sigma, target=2, abs=True)
    np.testing.assert_allclose(ours, ref.amax(1).detach().numpy(), rtol=1e-4, atol=1e-7)
    signed_mean = explain.explain(grading_cnn, tiles, "smoothgrad", target=2, stdev=0.2, n_samples=4, batch_size=3,
                                  seed=5)
    assert (ours >= signed_mean - 1e-7).all() and not np.allclose(ours, signed_mean)   # mean |g| ≥ |mean g|
    with pytest.raises(ValueError, match="only saliency and smoothgrad"):
        explain.explain(grading_cnn, tiles, "ig", target=2, abs=True)


def test_lime_equals_lime_image(grading_cnn, tiles):
    from lime import lime_image

    def classifier_fn(batch):                       # lime's contract: N × H × W × 3 numpy → probabilities
        x = torch.as_tensor(batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(grading_cnn(x), 1).double().numpy()

    # a random network on noise may give no positive weight at all: compare every selected segment
    ours = explain.explain(grading_cnn, tiles[:2], "lime", target=3, num_samples=300, num_features=3, seed=7,
                           positive_only=False)
    for i in range(2):
        image = tiles[i].permute(1, 2, 0).numpy().astype(np.float64)
        ref = lime_image.LimeImageExplainer(random_state=7).explain_instance(
            image, classifier_fn, labels=(3,), top_labels=None, num_features=3, num_samples=300,
            segmentation_fn=explain.lime_segmentation(7), random_seed=7)
        top = ref.local_exp[3][:3]
        expected = np.zeros((64, 64))
        for f, w in top:
            expected[ref.segments == f] = w
        assert len(top) == 3
        np.testing.assert_allclose(ours[i], expected, rtol=1e-4, atol=1e-7)
        # the same top segments (the paper's mask) and nothing else
        assert set(np.unique(ref.segments[ours[i] != 0])) == {f for f, _ in top}



def test_lime_on_all_segments_equals_the_thesis_code_and_scaled_segments_are_smaller(grading_cnn, tiles):
    """Paper 001's code: explain_instance with lime's default num_features (every segment in the surrogate), then
    get_image_and_mask(positive_only=False, num_features=3), in absolute value."""
    from lime import lime_image

    def classifier_fn(batch):
        x = torch.as_tensor(batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(grading_cnn(x), 1).double().numpy()

    segments = []
    ours = explain.explain(grading_cnn, tiles[:1], "lime", target=3, num_samples=200, num_features=3, seed=4,
                           positive_only=False, binary=True, all_segments=True, segment_scale=0.5,
                           segments_out=segments)
    image = tiles[0].permute(1, 2, 0).numpy().astype(np.float64)
    ref = lime_image.LimeImageExplainer(random_state=4).explain_instance(
        image, classifier_fn, labels=(3,), top_labels=None, num_samples=200,
        segmentation_fn=explain.lime_segmentation(4, scale=0.5), random_seed=4)
    _, mask = ref.get_image_and_mask(3, positive_only=False, num_features=3, hide_rest=False)
    np.testing.assert_array_equal(ours[0], np.abs(mask).astype(np.float32))
    np.testing.assert_array_equal(segments[0], ref.segments)
    default_segments = explain.lime_segmentation(4)(image)
    assert len(np.unique(segments[0])) > len(np.unique(default_segments))     # half the kernel: smaller segments
    with pytest.raises(ValueError, match="scale=0"):
        explain.lime_segmentation(4, scale=0)


def test_paper_001_settings_equal_the_thesis_code(grading_cnn, tiles):
    """Paper 001's appendix: NoiseTunnel(IG) with nt_samples=5, nt_type='smoothgrad_sq' and captum's default σ;
    IG maps reduced by its process_img (per-channel |a| min-max, summed, min-max); LIME's map is
    get_image_and_mask(positive_only=False, num_features=3) in absolute value."""
    import captum.attr as ca
    from lime import lime_image

    ours = explain.explain(grading_cnn, tiles, "ig_nt", target=4, stdev=None, nt_type="smoothgrad_sq", n_samples=5,
                           steps=5, reduce="abs_minmax_sum", seed=11)
    torch.manual_seed(11)
    attr = ca.NoiseTunnel(ca.IntegratedGradients(grading_cnn)).attribute(
        tiles, nt_samples=5, nt_type="smoothgrad_sq", target=4, n_steps=5).detach().numpy()

    def process_img(img):                    # the thesis's function, verbatim in behaviour
        img = abs(img)
        channels = [(img[i] - np.min(img[i])) / (np.max(img[i]) - np.min(img[i])) for i in range(3)]
        summed = np.sum(np.dstack(channels), axis=2)
        return (summed - np.min(summed)) / (np.max(summed) - np.min(summed))

    np.testing.assert_allclose(ours, np.stack([process_img(a) for a in attr]), atol=1e-5)

    def classifier_fn(batch):
        x = torch.as_tensor(batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(grading_cnn(x), 1).double().numpy()

    lime_map = explain.explain(grading_cnn, tiles[:1], "lime", target=3, num_samples=200, num_features=3, seed=5,
                               positive_only=False, binary=True)[0]
    image = tiles[0].permute(1, 2, 0).numpy().astype(np.float64)
    ref = lime_image.LimeImageExplainer(random_state=5).explain_instance(
        image, classifier_fn, labels=(3,), top_labels=None, num_features=3, num_samples=200,
        segmentation_fn=explain.lime_segmentation(5), random_seed=5)
    _, mask = ref.get_image_and_mask(3, positive_only=False, num_features=3, hide_rest=False)
    np.testing.assert_array_equal(lime_map, np.abs(mask))
    assert set(np.unique(lime_map)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="nt_type"):
        explain.explain(grading_cnn, tiles, "ig_nt", nt_type="smooth")
    with pytest.raises(ValueError, match="reduce"):
        explain.explain(grading_cnn, tiles, "ig", reduce="mean")

def test_vectorised_forward_selection_equals_lime():
    from lime import lime_base

    lime = lime_base.LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2)), random_state=0)
    rng = np.random.default_rng(0)
    for _ in range(60):
        n_segments, n_samples = int(rng.integers(2, 16)), int(rng.integers(20, 600))
        data = rng.integers(0, 2, (n_samples, n_segments))
        data[0] = 1
        weights = rng.random(n_samples)
        labels = data @ rng.normal(size=n_segments) * rng.random() + rng.normal(size=n_samples) * rng.random()
        k = int(rng.integers(1, 7))
        expected = lime.forward_selection(data, labels, weights, k)
        assert np.array_equal(explain.forward_selection(data, labels, weights, k), expected)
    # a duplicated segment column (collinear): the same choice as lime's least squares
    data = np.concatenate([data, data[:, :1]], 1)
    assert np.array_equal(explain.forward_selection(data, labels, weights, 4),
                          lime.forward_selection(data, labels, weights, 4))
    # constant labels (a saturated probability): R² is undefined, lime's own loop must decide
    assert explain.forward_selection(data, np.full(len(data), 0.7), weights, 3) is None


def test_lime_is_seeded_and_refuses_unknown_options(grading_cnn, tiles):
    a = explain.explain(grading_cnn, tiles[:1], "lime", target=0, num_samples=100, seed=1)
    b = explain.explain(grading_cnn, tiles[:1], "lime", target=0, num_samples=100, seed=1)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="lime does not take"):
        explain.explain(grading_cnn, tiles[:1], "lime", target=0, n_samples=100)
    with pytest.raises(ValueError, match="out of range"):
        explain.explain(grading_cnn, tiles[:1], "lime", target=7)
    with pytest.raises(ValueError, match="use 'float32' or 'bfloat16'"):
        explain.explain(grading_cnn, tiles[:1], "lime", target=0, precision="float16")
    # the fast path works on a channels-last copy: the caller's model keeps its layout
    assert all(p.is_contiguous() for p in grading_cnn.parameters())


@pytest.mark.parametrize("method, opts", [("gradcam", {"layer": "relu3"}), ("ig_nt", {"n_samples": 2, "steps": 4}),
                                          ("occlusion", {"window": 16, "stride": 16}),
                                          ("lime", {"num_samples": 60})])
def test_one_target_per_image_equals_separate_calls(grading_cnn, tiles, method, opts):
    targets = [0, 4, 6]
    torch.manual_seed(0)
    together = explain.explain(grading_cnn, tiles, method, target=targets, **opts)
    for i, t in enumerate(targets):
        torch.manual_seed(0)
        alone = explain.explain(grading_cnn, tiles[i: i + 1], method, target=t, **opts)
        if method != "ig_nt":            # noise draws differ between a batch of 3 and of 1
            np.testing.assert_allclose(together[i], alone[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        explain.explain(grading_cnn, tiles, method, target=[0, 1], **opts)
    with pytest.raises(ValueError, match="out of range"):
        explain.explain(grading_cnn, tiles, method, target=[0, 1, 9], **opts)


def test_non_finite_attributions_are_refused(tiles):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * torch.tensor(float("nan"))

    with pytest.raises(ValueError, match="non-finite"):
        explain.explain(Broken(), tiles[:1], "saliency", target=0)


def test_captum_methods_refuse_unknown_options(grading_cnn, tiles):
    """A typo such as step=4 (IG takes steps) must not be ignored silently."""
    with pytest.raises(ValueError, match=r"does not take \['step'\]"):
        explain.explain(grading_cnn, tiles[:1], "ig", target=0, step=4)


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "hirescam", "layercam"])
def test_cam_on_the_layer_grid_is_the_librarys_map_before_scaling_and_resizing(method):
    from pytorch_grad_cam.utils.image import scale_cam_image

    model = models.VGG16TileClassifier(width=0.125, batch_norm=False).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    grid = explain.cam_maps(model, x, "features.relu5_3", method, target=0, device="cpu", on_layer_grid=True)
    assert grid.shape == (3, 4, 4) and grid.min() >= 0        # ReLU(Σ α A) on the 4 × 4 grid of a 64 px input
    resized = explain.cam_maps(model, x, "features.relu5_3", method, target=0, device="cpu")
    # the library's output is exactly this grid, min-max scaled per image and resized to the input (then scaled once
    # more when the layers are aggregated, BaseCAM.aggregate_multi_layers)
    np.testing.assert_allclose(scale_cam_image(scale_cam_image(grid, (64, 64))), resized, atol=1e-5)
    # and averaging the resized map back does not give the grid's region: it spreads positive cells
    back = explain.block_mean(resized, 16)
    assert ((back > 0).sum() >= (grid > 0).sum())
