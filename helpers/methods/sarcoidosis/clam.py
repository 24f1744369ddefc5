"""Cluster activation mapping (CLAM), paper 004 §3 (Ryan et al.), for 2-D and 3-D deep-clustering models.

For an image x and its cluster k, with A_h the channels of the last encoder convolution:
  A'_h  = channel h upsampled to the input size and min-max normalised to [0, 1]   (a smooth mask)
  α_h   = q_k(x ∘ A'_h)          the cluster-k probability of the masked image     (eq. 8, no baseline)
  M_k   = minmax(ReLU(Σ_h α_h A_h)), shown at the input resolution                  (eq. 9)
Score-CAM differs only in its weights: softmax over channels of the (baseline-free) scores; the tests check
that swapping the weights reproduces pytorch-grad-cam's ``ScoreCAM`` on the same model and input.

Every (image, channel) masked copy goes through the model in large batches (:func:`channel_scores`);
:func:`channel_scores_loop` is the one-channel-at-a-time reference the benchmark compares against.
Group maps: :func:`cluster_average` (eq. 10, as a mean so maps stay on [0, 1]) and :func:`population_average`
(eq. 11); :func:`activated_area` counts the pixels (voxels) at or above a threshold.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...arrays import labels as check_labels, numeric
from ...env import select_device
from ...features import layer_activations
from ...models import channels_last_copy

DEFAULT_LAYER = "autoencoder.encoder.act3"   # last encoder convolution after its activation (ClusterModel)
_BLOCK_VALUES = 2 ** 25                       # masked-copy values built per block in channel_scores


def _check(images, model):
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if x.ndim not in (4, 5):
        raise ValueError(f"images of shape {tuple(x.shape)}: expected N×C×H×W or N×C×D×H×W.")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or inf; clean them before computing CLAMs.")
    expected = getattr(getattr(model, "autoencoder", None), "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(f"images are {tuple(x.shape[1:])} but the model was built for {tuple(expected)}.")
    return x


def _activations(model, x, layer, dev):
    """The layer's activations for the (checked) input tensor, as a CPU tensor."""
    return torch.from_numpy(layer_activations(model, layer, x, batch_size=128, device=dev))


def _interp_mode(ndim):
    return "bilinear" if ndim == 2 else "trilinear"


def channel_masks(acts, size):
    """A'_h: each channel upsampled to ``size`` (align_corners=True, as Score-CAM) and min-max normalised;
    acts N×H×(spatial) → N×H×(size)."""
    up = F.interpolate(acts, size=tuple(size), mode=_interp_mode(len(size)), align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.min(-1).values, flat.max(-1).values
    shape = lo.shape + (1,) * len(size)
    return (up - lo.view(shape)) / (hi - lo + 1e-8).view(shape)


def _targets(model, x, clusters, batch_size, dev):
    if clusters is None:
        q = torch.cat([model(x[s:s + batch_size].to(dev)).cpu() for s in range(0, len(x), batch_size)])
        return q.argmax(1)
    clusters = torch.as_tensor(np.broadcast_to(np.asarray(clusters), (len(x),)).copy(), dtype=torch.long)
    k = getattr(model, "k", None)
    if k is not None and (clusters.min() < 0 or clusters.max() >= k):
        raise ValueError(f"cluster indices must lie in 0…{k - 1}; got {clusters.min().item()}…"
                         f"{clusters.max().item()}.")
    return clusters


@torch.no_grad()
def channel_scores(model, images, clusters=None, layer: str = DEFAULT_LAYER, batch_size: int = 64,
                   device="auto", acts=None, bfloat16: bool = False):
    """α (N×H): the cluster probability of every image masked by every one of its channels (eq. 8), the
    masked copies pushed through the model ``batch_size`` at a time across images and channels.
    ``clusters``: one index per image (or one for all); default the image's own cluster (argmax q).
    ``bfloat16``: run the masked forward passes in bfloat16 autocast (several times faster on CPUs with
    AVX-512 BF16 or AMX; scores to about 3 significant digits — check the maps against float32 first)."""
    dev = select_device(device)
    x = _check(images, model)
    model.to(dev).eval()
    acts = _activations(model, x, layer, dev) if acts is None else acts
    clusters = _targets(model, x, clusters, batch_size, dev)
    # same arithmetic, 2–3× faster convolutions on CPU
    fast, layout = channels_last_copy(model, x.ndim - 2, inplace_activations=True)
    n, n_channels = acts.shape[:2]
    scores = torch.empty(n, n_channels)
    # whole images per block, their masks and masked copies built at once (about 32 M values, 128 MB)
    per_block = max(1, min(n, _BLOCK_VALUES // (n_channels * x[0].numel())))
    for start in range(0, n, per_block):
        block = slice(start, min(start + per_block, n))
        masks = channel_masks(acts[block], x.shape[2:])                      # b×H×spatial
        masked = (x[block].unsqueeze(1) * masks.unsqueeze(2)).flatten(0, 1)   # (b·H)×C×spatial
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bfloat16):
            q = torch.cat([fast(masked[i:i + batch_size].to(dev).contiguous(memory_format=layout)).float().cpu()
                           for i in range(0, len(masked), batch_size)])
        k = clusters[block].repeat_interleave(n_channels)
        scores[block] = q[torch.arange(len(q)), k].view(-1, n_channels)
    return scores.view(n, n_channels)


@torch.no_grad()
def channel_scores_loop(model, images, clusters=None, layer: str = DEFAULT_LAYER, device="auto"):
    """The same α, one forward pass per (image, channel): the slow reference for tests and benchmarks."""
    dev = select_device(device)
    x = _check(images, model)
    model.to(dev).eval()
    acts = _activations(model, x, layer, dev)
    clusters = _targets(model, x, clusters, 64, dev)
    out = torch.empty(acts.shape[:2])
    for i in range(len(x)):
        masks = channel_masks(acts[i:i + 1], x.shape[2:])[0]
        for h in range(acts.shape[1]):
            out[i, h] = model((x[i] * masks[h]).unsqueeze(0).to(dev))[0, clusters[i]].cpu()
    return out


def _minmax(maps):
    """Per map: subtract the minimum, divide by the maximum (+1e-7, as pytorch-grad-cam)."""
    view = (-1,) + (1,) * (maps.ndim - 1)
    maps = maps - maps.flatten(1).min(1).values.view(view)
    return maps / (maps.flatten(1).max(1).values.view(view) + 1e-7)


def combine(acts, weights, size):
    """minmax(ReLU(Σ_h w_h A_h)) per image at the layer's resolution, upsampled to ``size`` and min-max
    normalised again there (so the most influential pixel is 1 at the input resolution, as Score-CAM does)."""
    cam = _minmax(torch.relu((weights[(...,) + (None,) * (acts.ndim - 2)] * acts).sum(1)))
    up = F.interpolate(cam.unsqueeze(1), size=tuple(size), mode=_interp_mode(len(size)), align_corners=False)
    return _minmax(up[:, 0])


def _input_and_activations(model, images, layer, device):
    """The checked input, the device and the layer's activations, shared by every channel-weighted map."""
    x = _check(images, model)
    dev = select_device(device)
    model.to(dev).eval()
    return x, dev, _activations(model, x, layer, dev)


def _scored(model, images, clusters, layer, batch_size, device, bfloat16=False):
    """The checked input, the layer's activations and every channel's score (eq. 8), shared by CLAM and Score-CAM."""
    x, dev, acts = _input_and_activations(model, images, layer, device)
    alpha = channel_scores(model, x, clusters, layer, batch_size, dev, acts=acts, bfloat16=bfloat16)
    return x, acts, alpha


def clam(model, images, clusters=None, layer: str = DEFAULT_LAYER, batch_size: int = 64, device="auto",
         return_scores: bool = False, bfloat16: bool = False):
    """CLAMs (N×spatial, values in [0, 1]) of the images for their clusters (default: their own)."""
    x, acts, alpha = _scored(model, images, clusters, layer, batch_size, device, bfloat16)
    maps = combine(acts, alpha, x.shape[2:]).numpy()
    return (maps, alpha.numpy()) if return_scores else maps


def uniform_map(model, images, layer: str = DEFAULT_LAYER, device="auto"):
    """The sanity baseline of :func:`clam`: the same channels with every weight 1, minmax(ReLU(Σ_h A_h)) — the map
    CLAM would give if the cluster probabilities carried no information. No cluster enters it, so it is the same
    map whichever cluster is asked about; a CLAM that is cluster-specific must beat it."""
    x, _, acts = _input_and_activations(model, images, layer, device)
    return combine(acts, torch.ones(acts.shape[:2]), x.shape[2:]).numpy()


def score_cam(model, images, clusters=None, layer: str = DEFAULT_LAYER, batch_size: int = 64, device="auto"):
    """Score-CAM's maps for the same images and clusters, for comparison with :func:`clam`: the same masked copies
    and scores, weighted by a softmax over channels instead of the raw probabilities (a baseline subtracted from
    every channel's score would not change a softmax). Equal to pytorch-grad-cam's ``ScoreCAM`` (tested)."""
    x, acts, alpha = _scored(model, images, clusters, layer, batch_size, device)
    return combine(acts, torch.softmax(alpha, dim=1), x.shape[2:]).numpy()


def cluster_average(maps, labels, k: int | None = None):
    """Mean map per cluster (eq. 10 as a mean): K×spatial; NaN for a cluster without images."""
    maps = numeric(maps, "maps", ndim=(3, 4), layout="N × H × W (or N × D × H × W)", dtype=None)
    labels = check_labels(labels, "labels", fix="Give each image's cluster, 0 … K − 1.")
    if len(maps) != len(labels):
        raise ValueError(f"{len(maps)} maps but {len(labels)} labels.")
    if labels.min() < 0:
        raise ValueError(f"labels hold {labels.min()}; clusters are numbered 0 … K − 1.")
    k = int(labels.max()) + 1 if k is None else int(k)
    out = np.full((k,) + maps.shape[1:], np.nan, np.float32)
    for c in range(k):
        if (labels == c).any():
            out[c] = maps[labels == c].mean(0)
    return out


def population_average(maps, labels, k: int | None = None, weighting: str = "images"):
    """Eq. 11, M̃ = (1/K) Σ_k Σ_{x_i ∈ C_k} M_k(x_i): every image's map counts once, so as a mean (to stay on [0, 1])
    it is the mean over all images (``weighting="images"``, the paper's equation). ``weighting="clusters"`` is the
    mean of the cluster averages instead (each cluster counts once, whatever its size; not the paper's)."""
    if weighting == "images":
        maps = numeric(maps, "maps", ndim=(3, 4), layout="N × H × W (or N × D × H × W)", dtype=None)
        labels = check_labels(labels, "labels", fix="Give each image's cluster, 0 … K − 1.")
        if len(maps) != len(labels):
            raise ValueError(f"{len(maps)} maps but {len(labels)} labels.")
        return maps.mean(0).astype(np.float32)
    if weighting == "clusters":
        return np.nanmean(cluster_average(maps, labels, k), axis=0)
    raise ValueError(f"weighting={weighting!r}: use 'images' (eq. 11) or 'clusters' (each cluster counts once).")


def activated_area(maps, threshold: float = 0.5, mask=None) -> np.ndarray:
    """Pixels (voxels) per map at or above ``threshold``, optionally only inside ``mask``."""
    # a NaN pixel is never at or above the threshold: refused rather than counted as inactive
    maps = numeric(maps, "maps", ndim=(3, 4), layout="a batch N × H × W (or N × D × H × W)", dtype=None)
    on = maps >= threshold
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape not in (maps.shape, maps.shape[1:]):
            raise ValueError(f"mask {mask.shape} fits neither one map {maps.shape[1:]} nor all maps {maps.shape}; "
                             "give one mask for every map or one per map.")
        on = on & mask
    return on.reshape(len(maps), -1).sum(1)


def peak_inside(maps, masks) -> np.ndarray:
    """For each map, whether its maximum lies inside the matching mask (e.g. a cluster's true abnormality)."""
    maps = numeric(maps, "maps", ndim=(3, 4), layout="N × H × W (or N × D × H × W)", dtype=None,
                   fix="A map without values has no peak.")
    masks = numeric(masks, "masks", dtype=bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape.")
    flat = maps.reshape(len(maps), -1)
    peaks = np.nanargmax(flat, axis=1)
    return masks.reshape(len(masks), -1)[np.arange(len(maps)), peaks]
