"""Deep clustering as in paper 004 (Ryan et al., §2 and §4.1): a convolutional autoencoder (CAE) pre-trained on
reconstruction, then a DEC clustering layer (Xie et al. 2016) trained jointly with the reconstruction loss.

- :class:`ConvAutoencoder` — conv(32, stride 2) → conv(64, stride 1) → conv(128, stride 2) → FC(60), 4×4 kernels,
  leaky ReLU, mirrored decoder; 2-D or 3-D from the input shape (3-D: the paper's second stride is 2). Widths
  and latent size are parameters so the CPU defaults can be narrower than the paper's.
- :func:`pretrain` — MSE reconstruction (phase 1).
- :func:`fit_dec` — clustering layer with Student-t soft assignment (α = 1), centres from k-means on the
  embedding, target distribution P recomputed on the WHOLE data set every ``update_interval`` batches, loss
  Lr + γ·KL(P‖Q), until the loss settles (paper 004) or, as DEC, until fewer than ``tol`` of the images change
  cluster between two updates (phase 2).
- :func:`choose_k` — average silhouette over K, on the pre-trained embedding (k-means labels) or after the
  clustering phase (DEC labels); :func:`cluster_accuracy` — accuracy under the best one-to-one matching
  (Hungarian algorithm).
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ...arrays import labels as check_labels, numeric
from ...env import select_device


class ClusteringError(ValueError):
    """Bad input to the clustering helpers, with what to change."""


# ------------------------------------------------------------------------------------------- the network
class ConvAutoencoder(nn.Module):
    """Paper 004's CAE for 2-D (C×H×W) or 3-D (C×D×H×W) inputs.

    ``strides`` default to the paper's (2, 1, 2) in 2-D and (2, 2, 2) in 3-D; every spatial size must be
    divisible by the product of the strides. Encoder layers are named ``encoder.conv1`` … ``encoder.act3``;
    ``encoder.act3`` (the last convolution after its activation) is where CLAM reads its channels."""

    def __init__(self, input_shape, channels=(32, 64, 128), latent_dim: int = 60, strides=None,
                 kernel: int = 4, negative_slope: float = 0.01, seed: int | None = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            if seed is not None:   # same seed → same initial weights, whatever ran before
                torch.manual_seed(seed)
            self._build(input_shape, channels, latent_dim, strides, kernel, negative_slope)

    def _build(self, input_shape, channels, latent_dim, strides, kernel, negative_slope):
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) not in (3, 4):
            raise ClusteringError(f"input_shape {input_shape}: give C×H×W (2-D) or C×D×H×W (3-D).")
        spatial = input_shape[1:]
        ndim = len(spatial)
        strides = tuple(strides or ((2, 1, 2) if ndim == 2 else (2, 2, 2)))
        if len(strides) != len(channels):
            raise ClusteringError(f"{len(channels)} conv layers but {len(strides)} strides.")
        factor = int(np.prod(strides))
        if any(s % factor for s in spatial):
            raise ClusteringError(f"spatial size {spatial} is not divisible by {factor} (the product of the strides "
                                  f"{strides}); pad or resample the images.")
        self.input_shape, self.ndim, self.strides = input_shape, ndim, strides
        self.channels, self.latent_dim, self.kernel = tuple(channels), int(latent_dim), int(kernel)
        Conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        ConvT = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d

        Pad = nn.ZeroPad2d if ndim == 2 else nn.ZeroPad3d

        def conv(c_in, c_out, stride):
            if stride == 2:
                return Conv(c_in, c_out, kernel, stride=2, padding=(kernel - 2) // 2)
            # "same" output size with an even kernel: pad explicitly (one more on the far side)
            return nn.Sequential(Pad((kernel // 2 - 1, kernel // 2) * ndim), Conv(c_in, c_out, kernel))

        layers, c_in = OrderedDict(), input_shape[0]
        for i, (c_out, s) in enumerate(zip(channels, strides), start=1):
            layers[f"conv{i}"] = conv(c_in, c_out, s)
            layers[f"act{i}"] = nn.LeakyReLU(negative_slope)
            c_in = c_out
        self.encoder = nn.Sequential(layers)
        self.feature_shape = (channels[-1],) + tuple(s // factor for s in spatial)
        n_features = int(np.prod(self.feature_shape))
        self.embed = nn.Linear(n_features, latent_dim)
        self.unembed = nn.Sequential(nn.Linear(latent_dim, n_features), nn.LeakyReLU(negative_slope))
        dec, outs = OrderedDict(), list(channels[:-1])[::-1] + [input_shape[0]]
        c_in = channels[-1]
        for i, (c_out, s) in enumerate(zip(outs, strides[::-1]), start=1):
            if s == 2:
                dec[f"deconv{i}"] = ConvT(c_in, c_out, kernel, stride=2, padding=(kernel - 2) // 2)
            else:
                dec[f"deconv{i}"] = conv(c_in, c_out, 1)
            if i < len(outs):
                dec[f"act{i}"] = nn.LeakyReLU(negative_slope)
            c_in = c_out
        self.decoder = nn.Sequential(dec)
        # the data set's mean image, subtracted on the way in and added on the way out (see set_input_mean)
        self.register_buffer("input_mean", torch.zeros(input_shape))

    def set_input_mean(self, images):
        """Centre the network on the mean image of ``images`` (N×C×…): the encoder then sees only what varies
        between images. Without it the shared anatomy dominates the latent (every image within ~0.1 % of the
        others) and the clustering phase's first steps move all embeddings further than clusters are apart."""
        with torch.no_grad():
            self.input_mean.copy_(torch.as_tensor(np.asarray(images, np.float32).mean(0)))

    def encode(self, x):
        return self.embed(self.encoder(x - self.input_mean).flatten(1))

    def decode(self, z):
        return self.decoder(self.unembed(z).view(-1, *self.feature_shape)) + self.input_mean

    def forward(self, x):
        z = self.encode(x)
        return self.decode(z), z


def soft_assignment(z, centres, alpha: float = 1.0):
    """Student-t similarity of embeddings to centres, normalised over clusters (paper 004 eq. 4)."""
    d2 = torch.cdist(z, centres).pow(2)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(dim=1, keepdim=True)


def target_distribution(q):
    """DEC's target P (paper 004 eq. 7): q² normalised by cluster frequency, then over clusters."""
    weight = q.pow(2) / q.sum(dim=0, keepdim=True)
    return weight / weight.sum(dim=1, keepdim=True)


class ClusterModel(nn.Module):
    """Encoder + clustering layer: image → Q (N×K soft assignments). The model CLAM explains (σ_k of eq. 8)."""

    def __init__(self, autoencoder: ConvAutoencoder, centres, alpha: float = 1.0):
        super().__init__()
        self.autoencoder = autoencoder
        self.centres = nn.Parameter(torch.as_tensor(np.asarray(centres), dtype=torch.float32).clone())
        self.alpha = float(alpha)

    @property
    def encoder(self):
        return self.autoencoder.encoder

    @property
    def k(self) -> int:
        return int(self.centres.shape[0])

    def forward(self, x):
        return soft_assignment(self.autoencoder.encode(x), self.centres, self.alpha)


# ------------------------------------------------------------------------------------------ input checks
def check_images(images, model: ConvAutoencoder | None = None) -> np.ndarray:
    """N×C×H×W or N×C×D×H×W float array, finite; the shape the model was built for."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim not in (4, 5):
        raise ClusteringError(f"images of shape {arr.shape}: expected N×C×H×W (2-D) or N×C×D×H×W (3-D); add the "
                              "channel axis with images[:, None].")
    if not np.isfinite(arr).all():
        raise ClusteringError("images contain NaN or inf; clean them (e.g. np.nan_to_num) before clustering.")
    if model is not None and arr.shape[1:] != model.input_shape:
        raise ClusteringError(f"images are {arr.shape[1:]} but the autoencoder was built for {model.input_shape}.")
    return arr


def check_k(k: int, n_images: int) -> int:
    k = int(k)
    if k < 2:
        raise ClusteringError(f"K = {k}: clustering needs at least 2 clusters.")
    if k > n_images:
        raise ClusteringError(f"K = {k} is larger than the number of images ({n_images}); lower K or add images.")
    return k


def _batches(n, batch_size, rng=None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


@torch.no_grad()
def embed(model: ConvAutoencoder, images, batch_size: int = 256, device="auto") -> np.ndarray:
    """Latent vectors (N×latent_dim) of images through the encoder."""
    dev = select_device(device)
    arr = check_images(images, model)
    model = model.to(dev).eval()
    out = [model.encode(torch.from_numpy(arr[idx]).to(dev)).cpu() for idx in _batches(len(arr), batch_size)]
    return torch.cat(out).numpy()


@torch.no_grad()
def predict_q(model: ClusterModel, images, batch_size: int = 256, device="auto") -> np.ndarray:
    dev = select_device(device)
    arr = check_images(images, model.autoencoder)
    model = model.to(dev).eval()
    return torch.cat([model(torch.from_numpy(arr[idx]).to(dev)).cpu()
                      for idx in _batches(len(arr), batch_size)]).numpy()


# ------------------------------------------------------------------------------------------ phase 1: CAE
def pretrain(model: ConvAutoencoder, images, epochs: int = 200, batch_size: int = 32, lr: float = 1e-3,
             seed: int = 0, device="auto", desc: str = "CAE pre-training", centre=False) -> list:
    """Train the autoencoder on MSE reconstruction with Adam (paper: 200 epochs); returns the loss per epoch.
    ``centre``: what the model subtracts from every input first (:meth:`ConvAutoencoder.set_input_mean`) —
    False (the default, as the paper): nothing; True: the training images' mean image; an array of reference
    images (N×C×…, e.g. healthy scans or a normal atlas): their mean image, so the encoder sees deviations from
    health."""
    from tqdm.auto import tqdm

    dev = select_device(device)
    arr = check_images(images, model)
    if epochs < 1:
        raise ClusteringError(f"epochs = {epochs}; pre-training needs at least one epoch.")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_all = torch.from_numpy(arr)
    if isinstance(centre, (bool, np.bool_)):
        if centre:
            model.set_input_mean(arr)
    else:
        reference = np.asarray(centre, np.float32)
        if reference.ndim != arr.ndim or reference.shape[1:] != arr.shape[1:]:
            raise ClusteringError(f"reference images {reference.shape} do not match the training images "
                                  f"{arr.shape}: centre on images of the same channel and spatial shape.")
        if not np.isfinite(reference).all():
            raise ClusteringError("the reference images contain NaN or inf; clean them before centring on them.")
        model.set_input_mean(reference)
    model = model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(epochs), desc=desc, leave=False):
        total = 0.0
        for idx in _batches(len(arr), batch_size, rng):
            x = x_all[idx].to(dev)
            loss = F.mse_loss(model(x)[0], x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(arr))
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------ phase 2: DEC
@torch.no_grad()
def standardise_latent(model: ConvAutoencoder, embedding) -> tuple[np.ndarray, float]:
    """Re-parametrise the bottleneck in place so the latent of ``embedding`` (N×latent, from this model) has
    zero mean and unit average standard deviation; the reconstruction is unchanged (the decoder's first layer
    absorbs the inverse). Why: DEC's Student-t kernel has no scale of its own, and a CAE of noisy CT slices
    keeps all images within ~0.01 of each other in its latent space, where every q is 1/K; Adam's first steps
    then move the embedding further than the clusters are apart and DEC collapses into one cluster.
    Returns (offset, scale) applied; k-means solutions are unchanged by it."""
    embedding = np.asarray(embedding, np.float64)
    offset = embedding.mean(0)
    scale = float(embedding.std(0).mean()) or 1.0
    dev = model.embed.weight.device
    off = torch.as_tensor(offset, dtype=torch.float32, device=dev)
    first = model.unembed[0]
    first.bias += first.weight @ off
    first.weight *= scale
    model.embed.bias -= off
    model.embed.bias /= scale
    model.embed.weight /= scale
    return offset, scale


@dataclass
class DECResult:
    model: ClusterModel
    labels: np.ndarray               # final hard assignment (argmax Q)
    q: np.ndarray                    # N×K soft assignments
    embedding: np.ndarray            # N×latent after the clustering phase (standardised latent)
    initial_labels: np.ndarray       # k-means on the pre-trained embedding (DEC's starting point)
    history: dict = field(default_factory=dict)   # loss, reconstruction, kl, changed fraction per update


def kmeans(embedding, k: int, seed: int = 0, n_init: int = 20):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=check_k(k, len(embedding)), n_init=n_init, random_state=seed).fit(embedding)
    return km.labels_, km.cluster_centers_


def bootstrap_stability(embedding, labels, k: int, n_boot: int = 50, seed: int = 0) -> np.ndarray:
    """How stable the clustering of an embedding is (Hennig's bootstrap, for the k-means step only: the network is
    not retrained): k-means at ``k`` on ``n_boot`` resamples of the subjects with replacement, each compared by the
    adjusted Rand index with ``labels`` on the distinct subjects it drew. 1: the same partition every time."""
    from sklearn.metrics import adjusted_rand_score

    embedding, labels = np.asarray(embedding, float), np.asarray(labels)
    if embedding.ndim != 2 or len(embedding) != len(labels):
        raise ValueError(f"embedding {embedding.shape} and labels {labels.shape}: one row of features per label.")
    rng = np.random.default_rng(seed)
    scores = []
    for b in range(int(n_boot)):
        drawn = rng.integers(0, len(labels), len(labels))
        fitted, _ = kmeans(embedding[drawn], k, seed=seed + b, n_init=10)
        first = np.unique(drawn, return_index=True)[1]            # each distinct subject once
        scores.append(adjusted_rand_score(labels[drawn[first]], fitted[first]))
    return np.asarray(scores)


def loss_settled(epoch_loss, loss_tol: float, patience: int) -> bool:
    """True when the mean of the last ``patience`` epoch losses lies within ``loss_tol`` (relative) of the best
    epoch loss before them, on either side: the loss neither falls nor rises any more. A loss that climbs beyond the
    tolerance has not settled (an earlier version counted any rise as settled, so a diverging phase stopped early)."""
    if len(epoch_loss) <= patience:
        return False
    best_before = min(epoch_loss[:-patience])
    recent = float(np.mean(epoch_loss[-patience:]))
    return abs(best_before - recent) <= loss_tol * abs(best_before)


def fit_dec(autoencoder: ConvAutoencoder, images, k: int, epochs: int = 500, batch_size: int = 32,
            gamma: float = 0.1, update_interval: int | None = None, tol: float = 0.001, lr: float = 1e-3,
            alpha: float = 1.0, seed: int = 0, device="auto", desc: str | None = None,
            optimizer: str = "adam", max_first_change: float = 0.5, max_restarts: int = 8, stop: str = "loss",
            loss_tol: float = 0.01, patience: int = 3) -> DECResult:
    """The clustering phase on a COPY of a pre-trained autoencoder (the original stays untouched, so one
    pre-training serves every K); the copy's latent is standardised first (:func:`standardise_latent`).

    ``update_interval`` (batches, default one epoch): how often P is recomputed from Q over all images.

    Stopping rule (``stop``), always at most ``epochs`` epochs:

    - "loss" (the default; paper 004 §2: train until the loss has settled — it judged the curve by eye, so
      ``loss_tol`` = 1 % over ``patience`` = 3 epochs is this collection's reading): when the mean loss of the last
      ``patience`` epochs lies within ``loss_tol`` (relative) of the best earlier epoch mean (:func:`loss_settled`;
      a rising loss is not settled);
    - "epochs": never early (paper 004's simulation study: 500 epochs for every K);
    - "labels" (DEC's rule, not the paper's): at the first update where fewer than ``tol`` of the images changed
      cluster (``tol=0`` never stops early).
    ``history["epoch_loss"]`` holds the mean loss per epoch and ``history["stopped"]`` why it stopped.

    Divergence guard: if more than ``max_first_change`` of the images change cluster by the first update, the
    phase restarts from the pre-trained weights with a ten times smaller learning rate (at most
    ``max_restarts`` times; ``history["lr"]`` says which rate ran). Measured on the CT slices: with the paper's
    widths (32, 64, 128) one SGD step at 1e-5 already moved every embedding into one cluster — the whole
    cloud shifts together while the centres stay — whereas 1e-7 (or Adam at 1e-6) kept all clusters.
    ``optimizer``: "adam" (default; as DCEC, which paper 004 builds on) or "sgd" (momentum 0.9, as DEC)."""
    from tqdm.auto import tqdm

    dev = select_device(device)
    arr = check_images(images, autoencoder)
    k = check_k(k, len(arr))
    if optimizer not in ("sgd", "adam"):
        raise ClusteringError(f"optimizer {optimizer!r}: choose 'sgd' or 'adam'.")
    if stop not in ("labels", "loss", "epochs"):
        raise ClusteringError(f"stop = {stop!r}: choose 'labels' (DEC's tolerance on label changes), 'loss' (paper "
                              "004: until the loss settles) or 'epochs' (run them all).")
    if tol < 0 or loss_tol < 0 or int(patience) < 1:
        raise ClusteringError(f"tol = {tol}, loss_tol = {loss_tol}, patience = {patience}: tolerances are ≥ 0 and "
                              "patience ≥ 1 epoch.")
    start_ae = copy.deepcopy(autoencoder).to(dev)
    standardise_latent(start_ae, embed(start_ae, arr, device=dev))
    z0 = embed(start_ae, arr, device=dev)
    initial_labels, centres = kmeans(z0, k, seed)
    x_all = torch.from_numpy(arr)
    steps_per_epoch = math.ceil(len(arr) / batch_size)
    update_interval = int(update_interval or steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    for attempt in range(max_restarts + 1):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = ClusterModel(copy.deepcopy(start_ae), centres, alpha).to(dev)
        if optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=lr)
        history = {"step": [], "loss": [], "reconstruction": [], "kl": [], "changed": [], "lr": lr,
                   "restarts": attempt, "epoch_loss": [], "stopped": "epochs"}
        previous = initial_labels
        p_all, step, done, diverged = None, 0, False, False
        bar = tqdm(total=total_steps, desc=desc or f"DEC K={k}", leave=False)
        while step < total_steps and not done:
            for idx in _batches(len(arr), batch_size, rng):
                if step % update_interval == 0:
                    q_all = torch.from_numpy(predict_q(model, arr, device=dev))
                    p_all = target_distribution(q_all)
                    labels = q_all.argmax(1).numpy()
                    changed = float((labels != previous).mean())
                    history["step"].append(step)
                    history["changed"].append(changed)
                    if step == update_interval and changed > max_first_change and attempt < max_restarts:
                        diverged = done = True
                        break
                    if stop == "labels" and step > 0 and changed < tol:
                        history["stopped"] = f"labels (fewer than {tol:g} changed)"
                        done = True
                        break
                    previous = labels
                    model.train()
                x = x_all[idx].to(dev)
                recon, z = model.autoencoder(x)
                q = soft_assignment(z, model.centres, alpha)
                rec = F.mse_loss(recon, x)
                kl = F.kl_div(q.clamp_min(1e-12).log(), p_all[idx].to(dev), reduction="batchmean")
                loss = rec + gamma * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                history["loss"].append(loss.item())
                history["reconstruction"].append(rec.item())
                history["kl"].append(kl.item())
                step += 1
                bar.update(1)
                if step % steps_per_epoch == 0:
                    history["epoch_loss"].append(float(np.mean(history["loss"][-steps_per_epoch:])))
                    if stop == "loss" and loss_settled(history["epoch_loss"], loss_tol, int(patience)):
                        history["stopped"] = f"loss (within {loss_tol:g} of its best over {patience} epochs)"
                        done = True
                        break
                if step >= total_steps:
                    break
        bar.close()
        if not diverged:
            break
        lr /= 10
    model.eval()
    q_final = predict_q(model, arr, device=dev)
    return DECResult(model=model, labels=q_final.argmax(1), q=q_final, embedding=embed(model.autoencoder, arr,
                     device=dev),
                     initial_labels=initial_labels, history=history)


# ------------------------------------------------------------------------------------ choosing K, scoring
def cluster_accuracy(y_true, y_pred) -> float:
    """Share of images whose cluster maps to their class under the best one-to-one matching of clusters to
    classes (Hungarian algorithm); clusters left unmatched count as errors."""
    from scipy.optimize import linear_sum_assignment

    y_true = check_labels(y_true, "y_true", fix="Give each image's class.")
    y_pred = check_labels(y_pred, "y_pred", fix="Give each image's cluster.")
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ClusteringError(f"labels of shapes {y_true.shape} and {y_pred.shape}: give two 1-D arrays of equal "
                              "length.")
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((len(clusters), len(classes)), np.int64)
    np.add.at(counts, (p, t), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(y_true))


def silhouette(embedding, labels) -> float:
    """Average silhouette width; NaN when the labels hold a single cluster."""
    from sklearn.metrics import silhouette_score

    embedding = numeric(embedding, "embedding", ndim=2, layout="images × latent dimensions", dtype=None)
    labels = check_labels(labels, "labels", fix="Give each image's cluster.")
    if len(labels) != len(embedding):
        raise ClusteringError(f"{len(embedding)} embedded images but {len(labels)} labels; give one label per image.")
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(silhouette_score(embedding, labels))


def choose_k(embedding, ks=range(2, 9), labels_by_k: dict | None = None, seed: int = 0):
    """Average-silhouette choice of K. Without ``labels_by_k`` the labels are k-means on ``embedding`` (the
    paper's choice before the clustering phase); with it (K → labels, e.g. DEC's) those labels are scored.
    ``embedding`` may also be a dict K → embedding (after the clustering phase every K has its own).
    Returns (best K, {K: silhouette})."""
    ks = [int(k) for k in ks]
    if not ks:
        raise ClusteringError("ks is empty; give the numbers of clusters to compare, e.g. range(2, 9).")
    n = len(next(iter(embedding.values()))) if isinstance(embedding, dict) else len(embedding)
    if min(ks) < 2 or max(ks) >= n:
        raise ClusteringError(f"ks={ks} for {n} embedded images: the silhouette is defined for 2 ≤ K ≤ {n - 1}; "
                              "fit fewer clusters or embed more images.")
    scores = {}
    for k in ks:
        emb = embedding[k] if isinstance(embedding, dict) else embedding
        labels = labels_by_k[k] if labels_by_k is not None else kmeans(emb, k, seed)[0]
        scores[int(k)] = silhouette(emb, labels)
    best = _best(scores)
    if best < 0:
        raise ClusteringError("no K gave two or more clusters; the embedding has collapsed.")
    return best, scores



def gap_statistic(embedding, ks=range(2, 9), n_refs: int = 10, seed: int = 0, n_init: int = 10):
    """Tibshirani, Walther & Hastie's Gap statistic (paper 004's sensitivity check of K): for each K, the log
    within-cluster dispersion of k-means on ``embedding`` against its expectation under ``n_refs`` uniform
    reference sets drawn in the box of the data's principal axes (their method b). Returns (K chosen by the
    1-standard-error rule — the smallest K with gap(K) ≥ gap(K+1) − s(K+1), else the largest gap — and
    {K: (gap, s)})."""
    from sklearn.cluster import KMeans

    x = np.asarray(embedding, np.float64)
    ks = sorted(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) >= len(x):
        raise ClusteringError(f"ks={ks} for {len(x)} embedded images: the Gap statistic needs 1 ≤ K < {len(x)}.")
    if int(n_refs) < 2:
        raise ClusteringError(f"n_refs = {n_refs}: the standard error of the reference dispersion needs ≥ 2 sets.")
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    rotated = centred @ vt.T
    low, high = rotated.min(0), rotated.max(0)
    rng = np.random.default_rng(seed)

    def log_dispersion(data, k):
        return float(np.log(KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(data).inertia_))

    references = [rng.uniform(low, high, rotated.shape) @ vt + x.mean(0) for _ in range(int(n_refs))]
    scores = {}
    for k in ks:
        ref = np.array([log_dispersion(r, k) for r in references])
        scores[k] = (float(ref.mean() - log_dispersion(x, k)), float(ref.std() * np.sqrt(1 + 1 / len(ref))))
    for k, k_next in zip(ks, ks[1:]):
        if k_next == k + 1 and scores[k][0] >= scores[k_next][0] - scores[k_next][1]:
            return k, scores
    return max(scores, key=lambda k: scores[k][0]), scores

# ----------------------------------------------------------------------------- paper 004's simulation study
@dataclass
class ScenarioResult:
    scenario: str
    k_true: int
    sim: object                      # helpers.simulate.ct.CTSlices
    autoencoder: ConvAutoencoder     # pre-trained
    embedding: np.ndarray            # pre-trained latent (standardised)
    dec: dict                        # K → DECResult
    silhouette_pre: dict             # K → silhouette of k-means on the pre-trained embedding
    silhouette_post: dict            # K → silhouette of DEC's labels on DEC's embedding
    accuracy: dict                   # K → cluster accuracy of DEC (Hungarian)
    pretrain_loss: list

    @property
    def k_pre(self) -> int:
        return _best(self.silhouette_pre)

    @property
    def k_post(self) -> int:
        return _best(self.silhouette_post)


def _best(scores):
    finite = {k: s for k, s in scores.items() if np.isfinite(s)}
    return max(finite, key=finite.get) if finite else -1


# what the CAE subtracts from its input in the simulation study: nothing (the paper), the data set's mean image,
# or healthy anatomy
CENTRES = ("none", "mean", "healthy")


def run_scenario(scenario: str, k_true: int, ks=range(2, 9), n: int = 300, channels=(32, 64, 128),
                 latent_dim: int = 60, pretrain_epochs: int = 200, dec_epochs: int = 500, batch_size: int = 16,
                 lr: float = 1e-3, gamma: float = 0.1, seed: int = 0, device="auto", lung_hu=None,
                 centre="none", stop: str = "epochs", tol: float = 0.001, loss_tol: float = 0.01,
                 patience: int = 3) -> ScenarioResult:
    """One of the 9 simulated data sets (paper 004 §4): simulate, pre-train the CAE, choose K by silhouette
    before the clustering phase, run DEC at every K in ``ks``, choose K again after it, score accuracy.

    The defaults are the paper's §4.1 settings: widths 32-64-128, a 60-d bottleneck, 200 pre-training epochs, the
    clustering phase for 500 epochs at every K (``stop="epochs"``), no input centring. The paper does not give its
    batch size or learning rate (16 and Adam's 1e-3 here). ``centre``: "none" (the paper), "mean" (the data set's
    own mean image, which already contains the average abnormality), "healthy" (simulated slices without
    abnormality, :func:`helpers.simulate.ct.healthy_ct_reference` — information the paper did not have), or
    anything :func:`pretrain` accepts. ``stop``, ``tol``, ``loss_tol``, ``patience``: the clustering phase's
    stopping rule (:func:`fit_dec`)."""
    from ...simulate import ct as ct_simulator

    if isinstance(centre, str) and centre not in CENTRES:
        raise ClusteringError(f"centre = {centre!r}: use one of {', '.join(map(repr, CENTRES))}, True, False or "
                              "reference images.")
    sim = ct_simulator.simulate_ct_scenario(scenario, k_true, n=n, seed=seed, lung_hu=lung_hu)
    x = sim.unit
    ae = ConvAutoencoder(x.shape[1:], channels=channels, latent_dim=latent_dim, seed=seed)
    if isinstance(centre, str):
        centre = (ct_simulator.healthy_ct_reference(100, seed=seed, lung_hu=lung_hu) if centre == "healthy"
                  else centre == "mean")
    losses = pretrain(ae, x, epochs=pretrain_epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      desc=f"CAE {scenario} K={k_true}", centre=centre)
    standardise_latent(ae, embed(ae, x, device=device))
    z = embed(ae, x, device=device)
    _, sil_pre = choose_k(z, ks, seed=seed)
    pretrained = ScenarioResult(scenario=scenario, k_true=k_true, sim=sim, autoencoder=ae, embedding=z, dec={},
                                silhouette_pre=sil_pre, silhouette_post={}, accuracy={}, pretrain_loss=losses)
    return rerun_clustering_phase(pretrained, ks, epochs=dec_epochs, batch_size=batch_size, gamma=gamma, lr=lr,
                                  seed=seed, device=device, stop=stop, tol=tol, loss_tol=loss_tol, patience=patience)


def rerun_clustering_phase(result: ScenarioResult, ks=None, **fit_options) -> ScenarioResult:
    """The clustering phase of a simulated data set run again from the same pre-trained autoencoder, e.g. under
    another stopping rule (``fit_options`` go to :func:`fit_dec`: ``stop``, ``tol``, ``epochs``, …). ``ks``: the
    K to fit (default: those of ``result``). Returns a new :class:`ScenarioResult` that shares the simulation,
    the pre-training and the silhouettes before the phase, with DEC, the silhouettes after it and the accuracy
    recomputed; ``result`` is not changed."""
    ks = list(result.silhouette_pre if ks is None else ks)
    if not ks:
        raise ClusteringError("ks is empty: give the numbers of clusters to fit, e.g. ks=[2, 3, 4].")
    x = result.sim.unit
    dec, sil_post, acc = {}, {}, {}
    for k in ks:
        res = fit_dec(result.autoencoder, x, k, desc=f"DEC {result.scenario} K={result.k_true} fit K={k}",
                      **fit_options)
        dec[k] = res
        sil_post[k] = silhouette(res.embedding, res.labels)
        acc[k] = cluster_accuracy(result.sim.labels, res.labels)
    return replace(result, dec=dec, silhouette_post=sil_post, accuracy=acc)


def dec_on_digits(channels=(32, 64, 128), latent_dim: int = 10, pretrain_epochs: int = 30, dec_epochs: int = 30,
                  batch_size: int = 64, n: int | None = None, seed: int = 0, device="auto") -> dict:
    """DEC checked on real data: scikit-learn's handwritten digits (1797 8×8 images, 10 classes). Accuracy
    (Hungarian) of k-means on raw pixels, of k-means on the pre-trained CAE embedding (DEC's starting point)
    and of DEC after the clustering phase."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, y = digits.images, digits.target
    if n is not None:
        keep = np.random.default_rng(seed).choice(len(y), n, replace=False)
        images, y = images[keep], y[keep]
    x = (images / 16.0).astype(np.float32)[:, None]
    raw_labels, _ = kmeans(x.reshape(len(x), -1), 10, seed)
    ae = ConvAutoencoder(x.shape[1:], channels=channels, latent_dim=latent_dim, seed=seed)
    pretrain(ae, x, epochs=pretrain_epochs, batch_size=batch_size, seed=seed, device=device, desc="CAE digits")
    # DEC's own protocol on DEC's own kind of data: its label-change rule (fewer than 0.1 % change)
    result = fit_dec(ae, x, 10, epochs=dec_epochs, batch_size=batch_size, seed=seed, device=device,
                     desc="DEC digits", stop="labels", tol=0.001)
    return {"kmeans_raw": cluster_accuracy(y, raw_labels),
            "kmeans_embedding": cluster_accuracy(y, result.initial_labels),
            "dec": cluster_accuracy(y, result.labels), "result": result, "labels": y, "images": x}
