"""SimCLR (Chen et al. 2020) on histology patches, small enough to train on a CPU: a small ResNet backbone
(torchvision's ``BasicBlock``), a 2-layer projection head, batched random augmentations and the NT-Xent loss.

Paper 002 compared ImageNet ResNets with a ResNet-18 pre-trained with SimCLR on its own data set; this module
trains the same kind of encoder on simulated patches in a couple of minutes. The backbone's pooled output (not
the projection) is the embedding, as in SimCLR.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock


class SmallResNet(nn.Module):
    """ResNet with one ``BasicBlock`` per stage (ResNet-18 has two) and configurable widths.

    ``widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)`` is ResNet-18's layout (paper 002's SimCLR encoder);
    the CPU default is a quarter of the widths and one block per stage. ``forward`` returns the globally
    average-pooled features (n × widths[-1])."""

    def __init__(self, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {widths} and blocks {blocks} must list the same number (≥ 1) of stages.")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, in_ch = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or in_ch != width:
                down = nn.Sequential(nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))
            layers = [BasicBlock(in_ch, width, stride, down)] + [BasicBlock(width, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = in_ch

    def forward(self, x):
        return self.pool(self.stages(self.stem(x))).flatten(1)


class SimCLRModel(nn.Module):
    """Backbone + projection head g(h) = W2 ReLU(W1 h) (SimCLR's head); ``embed`` gives h."""

    def __init__(self, backbone: SmallResNet, projection_dim: int = 64):
        super().__init__()
        self.backbone = backbone
        d = backbone.out_features
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, projection_dim))

    def forward(self, x):
        return self.head(self.backbone(x))


def nt_xent_loss(z1, z2, temperature: float = 0.2):
    """SimCLR's normalised temperature-scaled cross-entropy over the 2N views of a batch: view i's positive is
    its twin, the other 2N − 2 views are negatives; the mean over all 2N anchors."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"the two views' projections must both be N×D, got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be positive.")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    twin = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, twin)


def augment(x, generator: torch.Generator, min_scale: float = 0.35, strength: float = 0.3):
    """One random view of every image of the batch x (N×3×H×W in [0, 1]), all on tensors at once:
    random resized crop (area ``min_scale``…1), horizontal flip and rotation by a multiple of 90° (tissue has no
    orientation) through one ``grid_sample``, then brightness, contrast and saturation jitter (± ``strength``)
    as stain and scanner variation."""
    n = len(x)
    u = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    scale = torch.sqrt(min_scale + (1 - min_scale) * u(n))            # side of the crop, fraction of the image
    angle = torch.randint(0, 4, (n,), generator=generator).float() * (math.pi / 2)
    flip = torch.where(u(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    shift = (1 - scale)[:, None] * (2 * u(n, 2) - 1)
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    view = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    jitter = lambda: 1 + strength * (2 * u(n, 1, 1, 1) - 1)  # noqa: E731
    view = view * jitter()                                             # brightness
    mean = view.mean(dim=(1, 2, 3), keepdim=True)
    view = (view - mean) * jitter() + mean                             # contrast
    grey = view.mean(dim=1, keepdim=True)
    view = (view - grey) * jitter() + grey                             # saturation
    return view.clamp(0, 1)


def to_input(images_uint8, size: int) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×size×size float in [0, 1] (area-averaged when shrinking)."""
    from ...data.tensors import to_tensor_images

    x = to_tensor_images(images_uint8)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x


def train_simclr(model: SimCLRModel, images, *, epochs: int, batch_size: int = 128, lr: float = 1e-3,
                 temperature: float = 0.2, input_size: int = 64, seed: int = 0, device="cpu") -> list[dict]:
    """Train ``model`` with SimCLR on N×H×W×3 uint8 patches (no labels). Adam with a cosine-decayed learning
    rate (SimCLR used LARS at batch 4096; a CPU batch of 128 trains well with Adam). Returns the loss history."""
    from tqdm.auto import tqdm

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"SimCLR needs N×H×W×3 uint8 patches, got {images.shape} {images.dtype}.")
    if len(images) < 2 * batch_size:
        raise ValueError(f"{len(images)} patches for batches of {batch_size}: give at least two batches' worth "
                         f"or lower batch_size.")
    x_all = to_input(images, input_size)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-6)
    steps_per_epoch = len(x_all) // batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps_per_epoch)
    history = []
    for epoch in tqdm(range(epochs), desc="SimCLR", leave=False):
        order = torch.randperm(len(x_all), generator=generator)
        losses = []
        for step in range(steps_per_epoch):
            batch = x_all[order[step * batch_size:(step + 1) * batch_size]]
            v1, v2 = augment(batch, generator), augment(batch, generator)
            loss = nt_xent_loss(model(v1.to(device)), model(v2.to(device)), temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses))})
        if not math.isfinite(history[-1]["loss"]):
            raise FloatingPointError(f"SimCLR loss became {history[-1]['loss']} in epoch {epoch + 1}; lower the "
                                     f"learning rate (lr={lr}).")
    model.cpu().eval()
    return history


def slide_patches(slides, patch: int, stride: int, per_slide: int, seed: int = 0, min_tissue: float = 0.5):
    """``per_slide`` random tissue patches (N×patch×patch×3 uint8) from every slide of slide arrays with ``rgb`` and
    packed ``masks`` (self-supervision sees no labels, as in paper 002)."""
    from ...data.tissue import tile_slide
    from ...simulate.datasets import unpack_mask

    rng = np.random.default_rng(seed)
    out = []
    for rgb, packed in zip(slides["rgb"], slides["masks"]):
        coords = tile_slide(unpack_mask(packed, "tissue"), patch, stride, min_tissue)["coords"]
        for y, x in coords[rng.choice(len(coords), min(per_slide, len(coords)), replace=False)]:
            out.append(np.asarray(rgb[y:y + patch, x:x + patch]))
    return np.stack(out)


def ensure_simclr_encoder(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """The SimCLR encoder of notebook 04, trained without labels on patches of the slides it clusters
    (:func:`helpers.simulate.datasets.ensure_sic_slides`, as paper 002 trained on its data set; cached like the
    models of notebook 02). Returns (SimCLRModel on the CPU, info with the loss history)."""
    from ... import cache, env, presets, training
    from ...simulate import datasets

    cfg = presets.training("simclr", smoke, **overrides)
    config = {"model": {"arch": "SimCLRModel", "widths": list(cfg["widths"]), "blocks": list(cfg["blocks"]),
                        "projection_dim": cfg["projection_dim"]}, "train": cfg, "seed": int(seed),
              "data": datasets.dataset_config("sic_slides", smoke), "simclr_code": cache.source_fingerprint(sys.modules[__name__])}

    def build():
        return SimCLRModel(SmallResNet(tuple(cfg["widths"]), tuple(cfg["blocks"])), cfg["projection_dim"])

    def fit(model):
        slides, _ = datasets.ensure_sic_slides(data_dir, smoke=smoke, seed=seed)
        patches = slide_patches(slides, cfg["patch"], cfg["stride"], cfg["per_slide"], seed)
        history = train_simclr(model, patches, epochs=cfg["epochs"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                               temperature=cfg["temperature"], input_size=cfg["input_size"], seed=seed,
                               device=env.select_device(device))
        return {"history": history, "n_patches": int(len(patches))}

    return training.ensure_model("simclr", data_dir, config, build, fit)
