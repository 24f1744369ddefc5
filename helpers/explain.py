"""Attribution maps through the field's libraries (pytorch-grad-cam for the CAM family), with one output format:
N × H × W float32 maps at input resolution."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from .env import select_device
from .models import get_layer

CAM_METHODS = {
    "gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "hirescam": "HiResCAM", "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
}


class OutputTarget:
    """A scalar of the model output to explain: class ``index`` of a logit vector (classification), or the
    ``index``-th regression output (the prediction itself is the score). Callable on one sample's output, as
    pytorch-grad-cam expects."""

    def __init__(self, index: int = 0):
        self.index = int(index)

    def __call__(self, output):
        return output[..., self.index]


def _check_images(images):
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(f"images must be a batch N×3×H×W, got shape {tuple(x.shape)}.")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        raise ValueError(f"images look channels-last (N×H×W×3, shape {tuple(x.shape)}); pass N×3×H×W tensors "
                         f"(helpers.data.tensors.to_tensor_images converts uint8 arrays).")
    if x.dtype == torch.uint8:
        raise TypeError("images are uint8 (0–255); explanations take float images in [0, 1]: convert them with "
                        "helpers.data.tensors.to_tensor_images.")
    if not torch.isfinite(x).all():
        raise ValueError("images hold NaN or inf values.")
    if x.numel() and float(x.max()) > 1.0:
        raise ValueError(f"images reach {float(x.max()):.3g}; explanations take float images in [0, 1] (0–255 "
                         "values: divide by 255, or convert uint8 arrays with helpers.data.tensors.to_tensor_images).")
    return x.float()


def _prepare(model, images, target, device):
    """Checked images, the device, the model in eval mode on it, and one target index per image (``target`` is
    one index for all images or a sequence of N); refuses a target the model does not have."""
    x = _check_images(images)
    dev = select_device(device)
    model = model.to(dev).eval()
    with torch.no_grad():
        n_out = model(x[:1].to(dev)).shape[-1]
    targets = np.asarray(target).astype(int, copy=False) if np.ndim(target) else np.full(len(x), int(target))
    if targets.shape != (len(x),):
        raise ValueError(f"give one target for all images or one per image: got {targets.shape[0]} targets for "
                         f"{len(x)} images.")
    bad = targets[(targets < 0) | (targets >= n_out)]
    if len(bad):
        raise ValueError(f"target index {int(bad[0])} is out of range: the model has {n_out} output(s).")
    return x, dev, model, targets


def cam_maps(model, images, layer_name: str, method: str = "gradcam", target=0, batch_size: int = 32,
             device="auto", on_layer_grid: bool = False) -> np.ndarray:
    """CAM-family maps from pytorch-grad-cam for ``target`` (an output index, or one per image), N × H × W in
    [0, 1] (the library's per-image min-max scaling of the ReLU'd map, resized to the input).

    ``on_layer_grid=True`` returns the map before that scaling and resizing: ReLU(Σ_c α_c A_c) on the layer's own
    h × w grid, in the layer's units (the library's own ``get_cam_image`` of the same forward and backward pass; its
    positive cells are the CAM's region on that grid, which min-max scaling, resizing and averaging back would
    spread to neighbouring cells)."""
    import pytorch_grad_cam as pgc

    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}.")
    x, dev, model, targets = _prepare(model, images, target, device)
    layer = get_layer(model, layer_name)
    cam_class = getattr(pgc, CAM_METHODS[method])
    out = []
    with cam_class(model=model, target_layers=[layer]) as cam:
        if method == "scorecam":
            cam.batch_size = batch_size
        for start in range(0, len(x), batch_size):
            xb = x[start: start + batch_size].to(dev)
            batch_targets = [OutputTarget(t) for t in targets[start: start + len(xb)]]
            # ScoreCAM draws its own progress bar per batch of channels on stderr: silenced, run_methods shows one
            with contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext():
                scaled = cam(input_tensor=xb, targets=batch_targets)
            if on_layer_grid:       # the same pass's activations and gradients, before scale_cam_image
                acts = cam.activations_and_grads.activations[0].cpu().numpy()
                grads = cam.activations_and_grads.gradients[0].cpu().numpy() if cam.activations_and_grads.gradients \
                    else None
                grid = cam.get_cam_image(xb, layer, batch_targets, acts, grads, False)
                out.append(np.maximum(grid, 0).astype(np.float32))
            else:
                out.append(scaled.astype(np.float32))
    return np.concatenate(out)


def block_mean(maps, cell: int) -> np.ndarray:
    """Average N × H × W maps over cell × cell blocks (e.g. back to a layer's grid of stride ``cell``)."""
    maps = np.asarray(maps, np.float32)
    n, h, w = maps.shape
    if h % cell or w % cell:
        raise ValueError(f"maps of {h}×{w} px do not split into {cell}-px cells.")
    return maps.reshape(n, h // cell, cell, w // cell, cell).mean(axis=(2, 4))


# --------------------------------------------------------------------------------------- one call for all
CAPTUM_METHODS = ("saliency", "smoothgrad", "ig", "ig_nt", "occlusion")
METHODS = tuple(CAM_METHODS) + CAPTUM_METHODS + ("lime",)


# ------------------------------------------------------------------------------------------------ LIME
def forward_selection(data, labels, weights, num_features: int):
    """lime's ``LimeBase.forward_selection`` (greedy: add, one at a time, the feature whose weighted least-squares
    fit with intercept has the highest weighted R²), computed for all candidate features at once from one weighted
    Gram matrix instead of two scikit-learn calls (fit, score) per candidate and step. Same selections, in the same
    order, as lime's (tests/test_explain.py compares them). Returns None where the weighted variance of ``labels``
    is zero: R² is then undefined and lime's own loop decides (the caller falls back to it)."""
    data, labels, weights = (np.asarray(a, np.float64) for a in (data, labels, weights))
    total = weights.sum()
    centred = data - weights @ data / total
    centred_labels = labels - weights @ labels / total
    total_ss = weights @ centred_labels ** 2
    if not total_ss > 1e-12 * max(weights @ labels ** 2, 1e-300):
        return None
    gram = centred.T @ (weights[:, None] * centred)                     # S × S
    cross = centred.T @ (weights * centred_labels)                       # S
    used: list[int] = []
    for _ in range(min(num_features, data.shape[1])):
        candidates = np.array([f for f in range(data.shape[1]) if f not in used])
        subsets = np.concatenate([np.tile(used, (len(candidates), 1)), candidates[:, None]], 1).astype(int)
        sub_gram = gram[subsets[:, :, None], subsets[:, None, :]]        # C × k × k
        sub_cross = cross[subsets]                                       # C × k
        # least squares through the pseudo-inverse: the residual of lstsq also where features are collinear
        coef = np.einsum("cij,cj->ci", np.linalg.pinv(sub_gram, hermitian=True), sub_cross)
        scores = 1 - (total_ss - np.einsum("ci,ci->c", coef, sub_cross)) / total_ss
        used.append(int(candidates[np.argmax(scores)]))
    return np.array(used)


def _lime_explainer_class():
    from lime import lime_base, lime_image

    class VectorisedSelectionLimeBase(lime_base.LimeBase):
        """lime's surrogate fitting with :func:`forward_selection` in place of its per-candidate loop."""

        def forward_selection(self, data, labels, weights, num_features):
            selected = forward_selection(data, labels, weights, num_features)
            return super().forward_selection(data, labels, weights, num_features) if selected is None else selected

    class BatchedLimeImageExplainer(lime_image.LimeImageExplainer):
        """lime's image explainer with its perturbations run in large vectorised batches through a torch model.

        Everything else is lime's own: the quickshift segmentation, the random on/off draws (same random state,
        same order), the cosine-distance kernel and the ridge surrogate with its feature selection. Only
        ``data_labels`` changes: instead of copying the image and masking segment by segment in a Python loop,
        all perturbed images of a batch are built at once as where(on[segments], image, fudged), and each
        distinct on/off pattern goes through the model once (a small patch has few segments — 96 px patches
        get 5–15 from quickshift — so 1000 draws repeat patterns; the model's output for a repeat is the same).
        The greedy feature selection that precedes lime's ridge surrogate is computed for all candidates at once
        (:func:`forward_selection`, the same selections)."""

        def __init__(self, predict_tensor, batch_size: int = 32, **kwargs):
            super().__init__(**kwargs)
            self.predict_tensor, self.perturb_batch = predict_tensor, int(batch_size)
            self.base = VectorisedSelectionLimeBase(self.base.kernel_fn, self.base.verbose,
                                                    random_state=self.base.random_state)

        def data_labels(self, image, fudged_image, segments, classifier_fn, num_samples, batch_size=10):
            n_features = np.unique(segments).shape[0]
            data = self.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
            data[0, :] = 1
            img = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32).permute(2, 0, 1)
            fudged = torch.as_tensor(np.ascontiguousarray(fudged_image), dtype=torch.float32).permute(2, 0, 1)
            seg = torch.as_tensor(segments, dtype=torch.long)
            patterns, inverse = np.unique(data, axis=0, return_inverse=True)
            labels = []
            for start in range(0, len(patterns), self.perturb_batch):
                on = torch.as_tensor(patterns[start: start + self.perturb_batch], dtype=torch.bool)[:, seg]  # B×H×W
                batch = torch.where(on[:, None], img[None], fudged[None])
                labels.append(self.predict_tensor(batch))
            return data, np.concatenate(labels)[np.asarray(inverse).reshape(-1)]

    return BatchedLimeImageExplainer


def lime_segmentation(seed: int = 0, scale: float = 1.0):
    """lime's default segmentation (quickshift, kernel 4, max_dist 200, ratio 0.2) with a fixed seed. ``scale``
    multiplies the kernel size and the distance cut-off (both in pixels): to keep segments of the same size in µm²
    on images of another pixel size, give (the µm per pixel the defaults were used at) / (this image's µm per pixel),
    e.g. 0.5 for a 1 µm/px patch where a study used lime's defaults at 0.5 µm/px."""
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r}: the segmentation scale is a positive number (1.0: lime's defaults).")
    return SegmentationAlgorithm("quickshift", kernel_size=4 * scale, max_dist=200 * scale, ratio=0.2,
                                 random_seed=seed)


def lime_maps(model, images, target=0, num_samples: int = 1000, num_features: int = 3, seed: int = 0,
              batch_size: int = 32, device="auto", positive_only: bool = True, binary: bool = False,
              progress: bool = False, precision: str = "float32", segment_scale: float = 1.0,
              all_segments: bool = False, segments_out: list | None = None) -> np.ndarray:
    """LIME maps N × H × W: the ``num_features`` segments with the largest surrogate weights for ``target``
    (positive weights only by default, as lime's ``get_image_and_mask(positive_only=True)``), each filled with its
    weight (``binary=True``: filled with 1, as the mask of ``get_image_and_mask``); zero elsewhere. lime orders the
    segments by |weight|, so ``positive_only=False, binary=True`` is paper 001's map: its code takes
    ``get_image_and_mask(positive_only=False, num_features=3)`` and the absolute value (the top three segments by
    |weight|, each 1). Classification models are explained through their
    softmax probabilities (what lime's ``classifier_fn`` returns); single-output regression models through the
    output itself. ``precision="bfloat16"`` runs the perturbed images under bfloat16 autocast (several times
    faster on CPUs with bfloat16 units; probabilities change in the third digit, so check the top segments —
    benchmarks/lime_benchmark.py does). ``segment_scale``: see :func:`lime_segmentation`.

    Which surrogate: lime's ``explain_instance(num_features=k)`` lets lime choose its feature selection ("auto":
    forward selection for k ≤ 6, so the ridge surrogate is refitted on the k segments it picks). ``all_segments=True``
    fits the surrogate on every segment (``num_features`` left at lime's default of 100 000, so "auto" means the
    highest weights) and then keeps the ``num_features`` largest |weights| — what paper 001's code does (it passes
    ``num_features=3`` only to ``get_image_and_mask``). ``segments_out``, a list, receives each image's segmentation."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from .models import channels_last_copy

    if int(num_samples) < 1 or int(num_features) < 1:
        raise ValueError(f"num_samples={num_samples}, num_features={num_features}: LIME needs at least one perturbed "
                         "sample and one segment (LIME_SAMPLES, LIME_FEATURES ≥ 1).")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision={precision!r}; use 'float32' or 'bfloat16'.")

    x, dev, model, targets = _prepare(model, images, target, device)
    with torch.no_grad():
        n_out = model(x[:1].to(dev)).shape[-1]
    fast, layout = channels_last_copy(model, inplace_activations=True)

    @torch.inference_mode()
    def predict_tensor(batch):
        low = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()
        with low:
            out = fast(batch.to(dev).contiguous(memory_format=layout)).float()
        return (torch.softmax(out, 1) if n_out > 1 else out).double().cpu().numpy()

    explainer_class = _lime_explainer_class()
    images_hwc = [x[i].permute(1, 2, 0).numpy().astype(np.float64) for i in range(len(x))]
    maps = np.zeros((len(x), x.shape[2], x.shape[3]), np.float32)
    # lime's quickshift runs in C without the GIL: segmenting the next patches in a second thread overlaps it
    # with the model's forward passes on the current one (same segments as lime's serial call)
    with ThreadPoolExecutor(max_workers=2) as pool:
        segmentations = [pool.submit(lime_segmentation(seed, segment_scale), image) for image in images_hwc]
        for i in tqdm(range(len(x)), desc="LIME", disable=not progress, leave=False):
            explainer = explainer_class(predict_tensor, batch_size=batch_size, random_state=seed)
            label = int(targets[i])
            exp = explainer.explain_instance(images_hwc[i], None, labels=(label,), top_labels=None,
                                             num_features=100000 if all_segments else num_features,
                                             num_samples=num_samples,
                                             segmentation_fn=lambda _image, done=segmentations[i]: done.result(),
                                             random_seed=seed)
            # lime sorts local_exp by |weight|
            weights = [(f, w) for f, w in exp.local_exp[label] if (w > 0 or not positive_only)][:num_features]
            if segments_out is not None:
                segments_out.append(exp.segments)
            for f, w in weights:
                maps[i][exp.segments == f] = 1.0 if binary else w
    return maps


CHANNEL_REDUCTIONS = ("max_abs", "sum", "abs_minmax_sum")


def _min_max(a: torch.Tensor, dims) -> torch.Tensor:
    low = a.amin(dims, keepdim=True)
    span = a.amax(dims, keepdim=True) - low
    return torch.where(span > 0, (a - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(a))


def _reduce_channels(attr: torch.Tensor, how: str) -> np.ndarray:
    """N×3×H×W attributions → N×H×W maps: ``max_abs`` (max over colour channels of |a|, as saliency maps are
    usually shown), ``sum`` (signed sum over channels) or ``abs_minmax_sum`` (paper 001's code: |a| of each channel
    min-max scaled on its own, summed over channels, min-max scaled again)."""
    attr = attr.detach().float()
    if how == "max_abs":
        return attr.abs().amax(1).cpu().numpy()
    if how == "sum":
        return attr.sum(1).cpu().numpy()
    if how == "abs_minmax_sum":
        return _min_max(_min_max(attr.abs(), (2, 3)).sum(1), (1, 2)).cpu().numpy()
    raise ValueError(f"unknown channel reduction {how!r}; use one of {', '.join(CHANNEL_REDUCTIONS)}.")


def explain(model, images, method: str, target=0, layer: str | None = None, batch_size: int = 16,
            device="auto", **options) -> np.ndarray:
    """Attribution maps N × H × W for a batch of N × 3 × H × W images in [0, 1].

    ``target`` is a class index (classification) or an output index (regression: the score is the output
    itself; one index for all images or one per image), so higher predictions give higher attributions, as in paper 003). CAM methods need ``layer``; captum
    methods take: ``stdev`` (noise σ as a fraction of the input range, smoothgrad / ig_nt, default 0.15; None:
    captum's own default, σ = 1 in input units), ``nt_type`` (smoothgrad / ig_nt: captum's 'smoothgrad' by default,
    'smoothgrad_sq' averages squared attributions, 'vargrad'), ``n_samples`` (default 30; 8 for ig_nt), ``steps``
    (IG, default 32), ``window`` / ``stride`` (occlusion, default 8 / 4), ``reduce`` (one of CHANNEL_REDUCTIONS;
    'max_abs' for saliency and smoothgrad, 'sum' for the others, by default), ``abs`` (saliency / smoothgrad:
    False, the signed gradient, by default; True takes |gradient| of every noisy sample *before* SmoothGrad averages
    them — SmoothGrad's paper, captum's Saliency default and tf-keras-vis, which paper 003 used), ``seed`` (0: the
    noise of smoothgrad / ig_nt, drawn from its own generator). ``lime`` takes ``num_samples`` (1000), ``num_features`` (3),
    ``seed`` (0), ``positive_only`` (True), ``binary`` (False): see :func:`lime_maps`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: give at least 1 image per batch.")
    if method in CAM_METHODS:
        if layer is None:
            raise ValueError(f"{method} needs the name of a convolutional layer (layer=...).")
        return cam_maps(model, images, layer, method, target, batch_size, device)
    if method == "lime":
        keys = {"num_samples", "num_features", "seed", "positive_only", "binary", "progress", "precision",
                "segment_scale", "all_segments", "segments_out"}
        unknown = set(options) - keys
        if unknown:
            raise ValueError(f"lime does not take {sorted(unknown)}; it takes {sorted(keys)}.")
        return _finite(lime_maps(model, images, target, device=device, **options), method)
    unknown = set(options) - CAPTUM_OPTIONS
    if unknown:
        raise ValueError(f"{method} does not take {sorted(unknown)}; captum methods take {sorted(CAPTUM_OPTIONS)}.")
    x, dev, model, targets = _prepare(model, images, target, device)
    # the noise of SmoothGrad / NoiseTunnel comes from a generator seeded per call, not from the global one, so a
    # map does not depend on what ran before it (training a model or loading it from the cache)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(options.pop("seed", 0)))
        maps = _captum_maps(model, x, dev, targets, method, batch_size, options)
    return _finite(maps, method)


CAPTUM_OPTIONS = {"stdev", "nt_type", "n_samples", "steps", "window", "stride", "reduce", "seed", "abs"}
NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _captum_maps(model, x, dev, targets, method, batch_size, options) -> np.ndarray:
    import captum.attr as ca

    stdev_fraction = options.get("stdev", 0.15)
    # None: captum's default noise (σ = 1.0 in input units), as paper 001's NoiseTunnel call
    stdev = 1.0 if stdev_fraction is None else float(stdev_fraction) * float(x.max() - x.min() or 1.0)
    n_samples = int(options.get("n_samples", 30))
    nt_type = options.get("nt_type", "smoothgrad")
    if nt_type not in NT_TYPES:
        raise ValueError(f"nt_type={nt_type!r}; captum's NoiseTunnel takes one of {', '.join(NT_TYPES)}.")
    reduce = options.get("reduce", "max_abs" if method in ("saliency", "smoothgrad") else "sum")
    if reduce not in CHANNEL_REDUCTIONS:
        raise ValueError(f"reduce={reduce!r}; use one of {', '.join(CHANNEL_REDUCTIONS)}.")
    absolute = options.get("abs", False)
    if not isinstance(absolute, bool) or (absolute and method not in ("saliency", "smoothgrad")):
        raise ValueError(f"abs={absolute!r} with {method}: abs is True or False, and only saliency and smoothgrad take "
                         "it (True: |gradient| of each noisy sample before averaging).")
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start: start + batch_size].to(dev).requires_grad_(True)
        batch_targets = torch.as_tensor(targets[start: start + len(xb)], device=dev)
        if method == "saliency":
            attr = ca.Saliency(model).attribute(xb, target=batch_targets, abs=absolute)
        elif method == "smoothgrad":
            attr = ca.NoiseTunnel(ca.Saliency(model)).attribute(
                xb, nt_type=nt_type, nt_samples=n_samples, nt_samples_batch_size=n_samples, stdevs=stdev,
                target=batch_targets, abs=absolute)
        elif method == "ig":
            attr = ca.IntegratedGradients(model).attribute(xb, baselines=xb * 0, target=batch_targets,
                                                           n_steps=int(options.get("steps", 32)))
        elif method == "ig_nt":
            attr = ca.NoiseTunnel(ca.IntegratedGradients(model)).attribute(
                xb, nt_type=nt_type, nt_samples=int(options.get("n_samples", 8)), stdevs=stdev,
                baselines=xb * 0, target=batch_targets, n_steps=int(options.get("steps", 16)))
        else:  # occlusion
            w, s = int(options.get("window", 8)), int(options.get("stride", 4))
            attr = ca.Occlusion(model).attribute(xb, sliding_window_shapes=(3, w, w), strides=(3, s, s),
                                                 baselines=0.0, target=batch_targets)
        out.append(_reduce_channels(attr, reduce))
    return np.concatenate(out).astype(np.float32)


def _finite(maps, method):
    if not np.isfinite(maps).all():
        raise ValueError(f"{method} produced non-finite attributions; check the model for NaN outputs.")
    return maps


def run_methods(model, images, methods: dict, target=0, device="auto", batch_size: int = 16,
                progress: bool = True) -> tuple[dict, dict]:
    """Maps of several methods on the same images: ``methods`` maps a name to :func:`explain`'s keyword
    arguments (``method`` defaults to the name). Returns ({name: N × H × W maps}, {name: seconds per map})."""
    import time

    from tqdm.auto import tqdm

    maps, seconds = {}, {}
    bar = tqdm(methods.items(), desc="explanations", disable=not progress, leave=False)
    for name, options in bar:
        bar.set_postfix(method=name)
        if not isinstance(options, dict):
            raise TypeError(f"methods[{name!r}] is {options!r}; each method maps to a dict of explain()'s keyword "
                            "arguments, e.g. {'ig': {'steps': 32}}.")
        options = dict(options)
        method = options.pop("method", name)
        started = time.perf_counter()
        maps[name] = explain(model, images, method, target=target, device=device,
                             batch_size=options.pop("batch_size", batch_size), **options)
        seconds[name] = (time.perf_counter() - started) / max(len(maps[name]), 1)
    return maps, seconds
