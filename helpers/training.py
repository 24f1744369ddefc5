"""One training loop for every model of the collection, its losses, and the train-once rule.

:func:`fit` trains with a progress bar, validates every epoch, stops early on the validation loss, keeps the
best weights and returns the history; a non-finite loss stops it with a message. :func:`ensure_model` loads a
checkpoint from ``DATA_DIR/cache/models/<name>-<config hash>/`` (:mod:`helpers.cache`) when its configuration and
checksum match, and trains it otherwise. The models themselves and their data are in :mod:`helpers.recipes`.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn

from . import cache, models
from .arrays import numeric
from .data import tensors
from .env import seed_everything, select_device


class TrainingError(RuntimeError):
    """Training cannot go on: a non-finite loss, an empty split, labels that do not fit the model."""


# ------------------------------------------------------------------------------------------------- loop
def _loader(dataset, batch_size, shuffle, seed):
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                       num_workers=0)


def fit(model, train_set, val_set, loss_fn, *, epochs: int, lr: float, batch_size: int = 32, patience: int = 3,
        weight_decay: float = 0.0, optimizer: str = "adam", warmup_epochs: int = 0, cosine: bool = False,
        device="auto", seed: int = 0, augment=None, desc: str = "training"):
    """Train ``model`` with Adam (or AdamW); validation loss every epoch; early stopping after ``patience`` epochs
    without improvement; the best weights are loaded back at the end. ``warmup_epochs`` ramps the learning rate up
    linearly, ``cosine`` then decays it to zero over the remaining epochs. Returns the history (lists per epoch)."""
    from tqdm.auto import tqdm

    for name, ds in (("training", train_set), ("validation", val_set)):
        if len(ds) == 0:
            raise TrainingError(f"the {name} split is empty; give it at least one sample (check the split sizes).")
    if epochs < 1:
        raise ValueError(f"epochs={epochs}: train for at least one epoch.")
    seed_everything(seed)
    dev = select_device(device)
    # channels-last convolutions are up to 1.5× faster on CPU for these networks (another memory layout: results
    # differ from the default layout only by floating-point rounding)
    model.to(dev, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'adam' or 'adamw'.")
    optimiser = (torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam)(params, lr=lr, weight_decay=weight_decay)

    def lr_factor(epoch_index):   # epoch_index counts from 0
        if epoch_index < warmup_epochs:
            return (epoch_index + 1) / (warmup_epochs + 1)
        if cosine:
            span = max(1, epochs - warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * (epoch_index - warmup_epochs) / span))
        return 1.0

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)
    train_loader = _loader(train_set, batch_size, True, seed)
    val_loader = _loader(val_set, batch_size, False, seed)
    history = {"epoch": [], "train_loss": [], "val_loss": [], "seconds": [], "lr": []}
    best, best_state, waited = math.inf, copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(1, epochs + 1), desc=desc, leave=False)
    for epoch in bar:
        started = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for x, y in train_loader:
            x, y = x.to(dev), y.to(dev)
            if augment is not None:
                x, y = augment(x, y)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise TrainingError(f"{desc}: the loss became {loss.item()} in epoch {epoch}; lower the learning "
                                    f"rate (now {lr}) or check the inputs for NaN/inf.")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, count = total + loss.item() * len(x), count + len(x)
        history["lr"].append(optimiser.param_groups[0]["lr"])
        scheduler.step()
        val_loss = evaluate_loss(model, val_loader, loss_fn, dev)
        history["epoch"].append(epoch)
        history["train_loss"].append(total / count)
        history["val_loss"].append(val_loss)
        history["seconds"].append(time.perf_counter() - started)
        bar.set_postfix(train=f"{total / count:.3f}", val=f"{val_loss:.3f}")
        if val_loss < best - 1e-6:
            best, best_state, waited = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    history["best_epoch"] = int(history["epoch"][int(np.argmin(history["val_loss"]))])
    return history


@torch.no_grad()
def evaluate_loss(model, loader, loss_fn, device) -> float:
    model.eval()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
        total += loss_fn(model(x), y).item() * len(x)
        count += len(x)
    value = total / count
    if not math.isfinite(value):
        raise TrainingError(f"the validation loss is {value}; check the validation inputs for NaN/inf.")
    return value


@torch.inference_mode()
def predict(model, images, batch_size: int = 32, device="auto", desc: str | None = None):
    """Model outputs (logits) for N×H×W×3 uint8 images or a dataset yielding (x, y); returns a CPU tensor.
    Runs a channels-last copy of the model (the layout training uses; about twice as fast on CPU as the default
    layout) in batches of 32, small enough for the activations to stay in the CPU's cache."""
    from tqdm.auto import tqdm

    from .features import iter_batches
    from .models import channels_last_copy

    dev = select_device(device)
    fast, layout = channels_last_copy(model.to(dev).eval())
    batches = iter_batches(images, batch_size)
    outs = [fast(x.to(dev).contiguous(memory_format=layout)).cpu()
            for x in tqdm(batches, total=math.ceil(len(images) / batch_size), desc=desc, leave=False,
                          disable=desc is None)]
    return torch.cat(outs)


# ----------------------------------------------------------------------------------------- augmentations
def flips_and_rotations(x, y):
    """Random 90° rotations and flips of a batch (histology has no up or down); masks follow the images."""
    k = int(torch.randint(0, 4, (1,)))
    flip = bool(torch.randint(0, 2, (1,)))
    x = torch.rot90(x, k, dims=(-2, -1))
    if flip:
        x = torch.flip(x, dims=(-1,))
    if y.ndim == x.ndim:  # segmentation target: transform the same way
        y = torch.rot90(y, k, dims=(-2, -1))
        if flip:
            y = torch.flip(y, dims=(-1,))
    return x, y


# -------------------------------------------------------------------------------------------- losses
class BCEDiceLoss(nn.Module):
    """Paper 001's U-Net loss: binary cross-entropy plus Dice loss (1 − soft Dice), averaged over the masks."""

    def __init__(self, smooth: float = 1.0):
        super().__init__()
        self.smooth = smooth
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits, target):
        if logits.shape != target.shape:
            raise ValueError(f"U-Net output {tuple(logits.shape)} and target masks {tuple(target.shape)} differ.")
        prob = torch.sigmoid(logits)
        dims = (0, 2, 3)
        inter = (prob * target).sum(dims)
        dice = (2 * inter + self.smooth) / (prob.sum(dims) + target.sum(dims) + self.smooth)
        return self.bce(logits, target) + (1 - dice).mean()


def dice_score(pred, truth) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    # a NaN cast to bool is True: refuse it rather than count it as foreground
    pred = numeric(pred, "pred", dtype=bool, fix="Give a boolean mask (e.g. probabilities >= 0.5).")
    truth = numeric(truth, "truth", dtype=bool, fix="Give a boolean mask.")
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape; Dice compares masks pixel by "
                         "pixel, so give both at the same size.")
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2 * (pred & truth).sum() / denom)


def soft_iou(logits, targets, smooth: float = 1.0) -> np.ndarray:
    """Paper 001's U-Net "accuracy" (its ``Iou`` module): sigmoid of the logits, then (Σ p·t + 1) / (Σ p + Σ t −
    Σ p·t + 1) over all pixels of both masks of one image — a soft IoU with smoothing, not a Dice. One value per
    image (the thesis validated with batches of one image)."""
    for name, values in (("logits", logits), ("targets", targets)):
        numeric(values.detach().cpu() if torch.is_tensor(values) else values, name, dtype=None)
    logits, targets = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(targets, dtype=torch.float32)
    if logits.shape != targets.shape or logits.ndim < 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}: give one N × C × H × W "
                         "array of each, of the same shape.")
    prob = torch.sigmoid(logits).reshape(len(logits), -1)
    t = targets.reshape(len(targets), -1)
    inter = (prob * t).sum(1)
    union = (prob + t).sum(1) - inter
    return ((inter + smooth) / (union + smooth)).numpy().astype(np.float64)


def ensure_model(name: str, data_dir, config: dict, build_model, train, verbose: bool = True):
    """Load ``name``'s checkpoint if valid for ``config``; otherwise ``train(model) → info`` and save it.

    Returns (model in eval mode on the CPU, info with config, test metrics and history). The config is extended
    with a fingerprint of the code that builds and trains models, so a checkpoint trained by other code is
    retrained rather than reused."""
    code = {m.__name__: m for m in (models, tensors, sys.modules[__name__], sys.modules[build_model.__module__],
                                     sys.modules[train.__module__])}
    config = {**config, "code": cache.source_fingerprint(*(code[name] for name in sorted(code)))}
    folder = cache.models_root(data_dir) / f"{name}-{cache.config_key(config)}"
    seed_everything(int(config.get("seed", 0)))   # the initial weights depend only on the configuration
    model = build_model()
    if folder.exists():
        try:
            info = cache.load_checkpoint(folder, model, config)
            if verbose:
                print(f"loaded {name} from {folder}")
            return model.eval(), info
        except cache.CacheError as err:
            if verbose:
                print(f"{err}; training it again.")
    started = time.perf_counter()
    info = train(model)
    info["train_seconds"] = time.perf_counter() - started
    model.cpu().eval()
    cache.save_checkpoint(folder, model, config, info)
    if verbose:
        print(f"trained {name} in {info['train_seconds']:.0f} s → {folder}")
    return model, json.loads((folder / cache.INFO).read_text())
