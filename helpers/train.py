"""One training loop for every model of the collection, and the cached, validated checkpoints later notebooks use.

:func:`fit` trains with a progress bar, validates every epoch, stops early on the validation loss, keeps the
best weights and returns the history; a non-finite loss stops it with a message. :func:`ensure_model` loads a
checkpoint from ``DATA_DIR/cache/models/<name>-<config hash>/`` when its configuration and checksum match, and
trains it otherwise; the ``ensure_*`` functions below are the models of notebook 02 that notebooks 03–05 explain.
"""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cache, data, models
from .env import seed_everything, select_device

CHECKPOINT = "model.pt"
INFO = "info.json"


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
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} differ in shape; Dice compares masks pixel by "
                         "pixel, so give both at the same size.")
    denom = pred.sum() + truth.sum()
    return 1.0 if denom == 0 else float(2 * (pred & truth).sum() / denom)


# ---------------------------------------------------------------------------------- cached checkpoints
def models_root(data_dir) -> Path:
    root = data.check_data_dir(data_dir) / "models"
    root.mkdir(exist_ok=True)
    return root


def save_checkpoint(folder, model, config: dict, info: dict) -> Path:
    """Write ``model.pt`` and ``info.json`` (config, sha256 of the weights, metrics, history) atomically."""
    with cache.building(folder) as tmp:
        torch.save(model.state_dict(), tmp / CHECKPOINT)
        record = {"config": cache._canonical(config), "sha256": cache.sha256_file(tmp / CHECKPOINT),
                  "architecture": type(model).__name__, **cache._canonical(info)}
        (tmp / INFO).write_text(json.dumps(record, indent=1, sort_keys=True))
    return Path(folder)


def load_checkpoint(folder, model, config: dict | None = None) -> dict:
    """Load weights into ``model`` after checking the config, the checksum and the architecture; returns info."""
    folder = Path(folder)
    info_path, weights = folder / INFO, folder / CHECKPOINT
    if not info_path.exists() or not weights.exists():
        raise cache.CacheError(f"checkpoint {folder} is incomplete (missing {INFO} or {CHECKPOINT})")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as err:      # truncated or edited by hand: retrain rather than stop
        raise cache.CacheError(f"checkpoint {folder}: {INFO} is not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise cache.CacheError(f"checkpoint {folder}: {INFO} is not a checkpoint record")
    if config is not None and info.get("config") != cache._canonical(config):
        raise cache.CacheError(f"checkpoint {folder} is stale: it was trained with another configuration")
    if cache.sha256_file(weights) != info.get("sha256"):
        raise cache.CacheError(f"checkpoint {folder} is corrupted: checksum mismatch in {CHECKPOINT}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"checkpoint {folder} holds a {info.get('architecture')} whose tensors do not fit this "
                         f"{type(model).__name__} ({first[1].strip() if len(first) > 1 else first[0]}); build the "
                         f"model with the checkpoint's configuration {info.get('config', {}).get('model')} or "
                         f"retrain it.") from None
    return info


def ensure_model(name: str, data_dir, config: dict, build_model, train, verbose: bool = True):
    """Load ``name``'s checkpoint if valid for ``config``; otherwise ``train(model) → info`` and save it.

    Returns (model in eval mode on the CPU, info with config, test metrics and history). The config is extended
    with a fingerprint of the code that builds and trains models, so a checkpoint trained by other code is
    retrained rather than reused."""
    config = {**config, "code": cache.source_fingerprint(models, sys.modules[__name__], data)}
    folder = models_root(data_dir) / f"{name}-{cache.config_key(config)}"
    seed_everything(int(config.get("seed", 0)))   # the initial weights depend only on the configuration
    model = build_model()
    if folder.exists():
        try:
            info = load_checkpoint(folder, model, config)
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
    save_checkpoint(folder, model, config, info)
    if verbose:
        print(f"trained {name} in {info['train_seconds']:.0f} s → {folder}")
    return model, json.loads((folder / INFO).read_text())


# -------------------------------------------------------------------------------- the models of notebook 02
TRAINING_PRESETS = {
    # paper 000: VGG-16 + global max pool + FC; the paper's tiles are 512 px (stride 256, centre 256) at full width
    "tile_classifier": {
        "default": dict(width=0.125, batch_norm=True, tile=128, stride=64, centre=64, min_tissue=0.5, epochs=4, lr=1e-3,
                        batch_size=32, patience=3, max_negatives_per_positive=3.0),
        "smoke": dict(width=0.125, batch_norm=True, tile=128, stride=64, centre=64, min_tissue=0.5, epochs=10, lr=1e-3,
                      batch_size=32, patience=10, max_negatives_per_positive=3.0),
    },
    # paper 001 §3.3: the grading CNN, cross-entropy, Adam lr 1e-3, batch 64, up to 50 epochs
    "grading_cnn": {
        "default": dict(arch="paper", epochs=22, lr=1e-3, batch_size=64, patience=5, augment=True),
        "smoke": dict(arch="paper", epochs=40, lr=1e-3, batch_size=16, patience=8, augment=True),
    },
    # paper 001 §3.6: U-Net, BCE + Dice, Adam lr 1e-4 (124 epochs at batch 1 in the paper)
    "unet": {
        "default": dict(base=16, depth=3, epochs=15, lr=1e-3, batch_size=16, patience=3, val_fraction=0.2),
        "smoke": dict(base=8, depth=3, epochs=30, lr=3e-3, batch_size=8, patience=6, val_fraction=0.25),
    },
    # paper 002: SimCLR on the data set's own patches (ResNet-18 in the paper; a quarter-width one-block-per-stage
    # ResNet at 64 px here). Patches: 128 px at stride 64 (the notebook's tiling), per_slide random ones per slide
    "simclr": {
        "default": dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), projection_dim=64, input_size=64, patch=128,
                        stride=64, per_slide=64, epochs=8, batch_size=128, lr=1e-3, temperature=0.2),
        "smoke": dict(widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), projection_dim=64, input_size=64, patch=128,
                      stride=64, per_slide=24, epochs=2, batch_size=64, lr=1e-3, temperature=0.2),
    },
}


def training_preset(name: str, smoke: bool = False, **overrides) -> dict:
    """The training configuration of one of the collection's models (``default`` or ``smoke``) with overrides."""
    return data.choose_preset(TRAINING_PRESETS, name, smoke, overrides, what="model")


def _bce_logit_loss(logits, y):
    return nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), y.float())


def _check_labels(labels, n_classes: int, what: str):
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{what}: labels run from {labels.min()} to {labels.max()} but the model has {n_classes} "
                         f"outputs; the class count of the model must match the data.")


# paper 000's tile classifier ----------------------------------------------------------------------------
def tile_split(index, seed: int, val_fraction: float = 0.15, max_negatives_per_positive: float | None = None):
    """Train / validation / test tile indices: test = tiles of test slides; validation = a random share of the
    training slides' tiles; negatives in training optionally subsampled to at most ``ratio`` × positives."""
    rng = np.random.default_rng(seed)
    test = np.flatnonzero(index["is_test"])
    pool = rng.permutation(np.flatnonzero(~index["is_test"]))
    n_val = max(1, int(round(val_fraction * len(pool))))
    val, train = np.sort(pool[:n_val]), pool[n_val:]
    if max_negatives_per_positive:
        pos, neg = train[index["label"][train] == 1], train[index["label"][train] == 0]
        keep = int(max(1, len(pos)) * max_negatives_per_positive)
        train = np.concatenate([pos, neg[:keep]])
    return np.sort(train), val, test


@torch.no_grad()
def evaluate_tile_classifier(model, slides, index, test, device="auto") -> dict:
    """Tile AUC and accuracy on ``test`` tiles, and slide accuracy with paper 000's rule (a slide is positive
    when any of its tissue tiles is predicted positive). Returns metrics and the per-tile probabilities."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    ds = data.TileDataset(slides["rgb"], index["slide"][test], index["coords"][test], index["label"][test],
                          int(index["tile"]))
    prob = torch.sigmoid(predict(model, ds, device=device, desc="tile predictions")[:, 0]).numpy()
    label = index["label"][test]
    slide_ids = np.unique(index["slide"][test])
    slide_pred = np.array([prob[index["slide"][test] == s].max() > 0.5 for s in slide_ids])
    slide_true = np.asarray(slides["label"])[slide_ids] == 1
    auc = float(roc_auc_score(label, prob)) if 0 < label.sum() < len(label) else float("nan")
    return {"tile_auc_test": auc, "tile_accuracy_test": float(accuracy_score(label, prob > 0.5)),
            "slide_accuracy_test": float(np.mean(slide_pred == slide_true)), "n_test_slides": int(len(slide_ids)),
            "probabilities": prob, "labels": label, "slide_ids": slide_ids, "slide_predicted": slide_pred,
            "slide_true": slide_true}


def tile_index(data_dir, smoke: bool = False, seed: int = 0, **overrides):
    """Slides and their tile index for the tile classifier (the preset's tiling); returns (slides, meta, index)."""
    cfg = training_preset("tile_classifier", smoke, **overrides)
    slides, meta = data.ensure_tile_slides(data_dir, smoke=smoke, seed=seed)
    index = data.tile_dataset_index(slides, cfg["tile"], cfg["stride"], cfg["centre"], cfg["min_tissue"])
    index["tile"] = cfg["tile"]
    return slides, meta, index


def ensure_tile_classifier(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """Paper 000's VGG-16 tile classifier trained on the simulated slides (cached). Returns (model, info)."""
    cfg = training_preset("tile_classifier", smoke, **overrides)
    slides, _, index = tile_index(data_dir, smoke, seed, **overrides)
    config = {"model": {"arch": "VGG16TileClassifier", "width": cfg["width"], "batch_norm": cfg["batch_norm"]}, "train": cfg, "seed": int(seed),
              "data": data.preset("tile_slides", smoke)}
    train_idx, val_idx, test_idx = tile_split(index, seed, max_negatives_per_positive=cfg["max_negatives_per_positive"])

    def datasets(ids):
        return data.TileDataset(slides["rgb"], index["slide"][ids], index["coords"][ids], index["label"][ids],
                                cfg["tile"])

    def train(model):
        if index["label"][train_idx].sum() == 0:
            raise TrainingError("no positive tile in the training split; the slides hold no tumour tiles.")
        history = fit(model, datasets(train_idx), datasets(val_idx), _bce_logit_loss, epochs=cfg["epochs"],
                      lr=cfg["lr"], batch_size=cfg["batch_size"], patience=cfg["patience"], device=device,
                      seed=seed, augment=flips_and_rotations, desc="tile classifier")
        metrics = evaluate_tile_classifier(model, slides, index, test_idx, device)
        return {"history": history, "n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx),
                "metrics": {k: metrics[k] for k in ("tile_auc_test", "tile_accuracy_test", "slide_accuracy_test",
                                                    "n_test_slides")}}

    return ensure_model("tile_classifier", data_dir, config, lambda: models.VGG16TileClassifier(cfg["width"], cfg["batch_norm"]), train)


# paper 001's grading CNN ------------------------------------------------------------------------------
def _grading_model(arch: str, input_size: int, n_classes: int = 7):
    if arch == "paper":
        return models.GradingCNN(n_classes, input_size)
    if arch == "resnet18":
        return models.resnet18_grading(n_classes)
    raise ValueError(f"unknown grading architecture {arch!r}; use 'paper' (paper 001's CNN) or 'resnet18'.")


@torch.no_grad()
def evaluate_classifier(model, images, labels, n_classes: int, device="auto") -> dict:
    """Accuracy, per-class accuracy (recall), confusion matrix and softmax probabilities."""
    from sklearn.metrics import confusion_matrix

    _check_labels(labels, n_classes, "evaluation")
    prob = torch.softmax(predict(model, images, device=device, desc="predictions"), 1).numpy()
    pred = prob.argmax(1)
    cm = confusion_matrix(labels, pred, labels=list(range(n_classes)))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"accuracy": float((pred == np.asarray(labels)).mean()), "per_class_accuracy": per_class.tolist(),
            "confusion": cm, "probabilities": prob, "predicted": pred}


def ensure_grading_model(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """Paper 001's 7-class grading CNN (``arch="paper"``) or the ResNet-18 variant (``arch="resnet18"``),
    trained on the balanced simulated DiagSet-like splits (cached). Returns (model, info)."""
    cfg = training_preset("grading_cnn", smoke, **overrides)
    grading, meta = data.ensure_grading_patches(data_dir, smoke=smoke, seed=seed)
    n_classes, size = len(meta["classes"]), int(grading["images"].shape[1])
    config = {"model": {"arch": cfg["arch"], "n_classes": n_classes, "input_size": size}, "train": cfg,
              "seed": int(seed), "data": data.preset("grading", smoke)}
    split, labels = np.asarray(grading["split"]), np.asarray(grading["label"])

    def train(model):
        _check_labels(labels, n_classes, "grading patches")
        sets = [data.ArrayDataset(grading["images"], labels, np.flatnonzero(split == s)) for s in (0, 1)]
        history = fit(model, *sets, nn.CrossEntropyLoss(), epochs=cfg["epochs"], lr=cfg["lr"],
                      batch_size=cfg["batch_size"], patience=cfg["patience"], device=device, seed=seed,
                      augment=flips_and_rotations if cfg["augment"] else None, desc=f"grading {cfg['arch']}")
        test = np.flatnonzero(split == 2)
        ev = evaluate_classifier(model, np.asarray(grading["images"])[test], labels[test], n_classes, device)
        return {"history": history, "metrics": {"accuracy": ev["accuracy"], "per_class_accuracy":
                                                ev["per_class_accuracy"]}}

    return ensure_model(f"grading_{cfg['arch']}", data_dir, config,
                        lambda: _grading_model(cfg["arch"], size, n_classes), train)


# paper 001's U-Net -----------------------------------------------------------------------------------
def nuclei_targets(types) -> np.ndarray:
    """Type maps (0 background, 1 neoplastic, 2 non-neoplastic) → N×2×H×W uint8 masks (neoplastic, other)."""
    types = np.asarray(types)
    return np.stack([types == 1, types == 2], axis=1).astype(np.uint8)


class _MaskDataset(data.ArrayDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x, y.float()


@torch.no_grad()
def segment_nuclei(model, images, device="auto", threshold: float = 0.5) -> np.ndarray:
    """U-Net masks for N×H×W×3 uint8 images: N×2×H×W bool (neoplastic, non-neoplastic)."""
    return (torch.sigmoid(predict(model, images, batch_size=32, device=device)) > threshold).numpy()


def ensure_unet(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """Paper 001's U-Net for neoplastic / non-neoplastic nuclei, trained on the PanNuke-like patches and scored
    (Dice) on the grading test patches, as the paper applies it to DiagSet (cached). Returns (model, info)."""
    cfg = training_preset("unet", smoke, **overrides)
    seg, _ = data.ensure_segmentation_patches(data_dir, smoke=smoke, seed=seed)
    grading, _ = data.ensure_grading_patches(data_dir, smoke=smoke, seed=seed)
    config = {"model": {"arch": "UNet", "base": cfg["base"], "depth": cfg["depth"]}, "train": cfg,
              "seed": int(seed), "data": [data.preset("segmentation", smoke), data.preset("grading", smoke)]}

    def train(model):
        n = len(seg["images"])
        order = np.random.default_rng(seed).permutation(n)
        n_val = max(1, int(round(cfg["val_fraction"] * n)))
        targets = nuclei_targets(seg["nuclei_types"])
        sets = [_MaskDataset(seg["images"], targets, np.sort(ids)) for ids in (order[n_val:], order[:n_val])]
        history = fit(model, *sets, BCEDiceLoss(), epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                      patience=cfg["patience"], device=device, seed=seed, augment=flips_and_rotations, desc="U-Net")
        test = np.flatnonzero(np.asarray(grading["split"]) == 2)
        pred = segment_nuclei(model, np.asarray(grading["images"])[test], device)
        truth = nuclei_targets(np.asarray(grading["nuclei_types"])[test]).astype(bool)
        return {"history": history, "metrics": {"unet_dice_neoplastic": dice_score(pred[:, 0], truth[:, 0]),
                                                "unet_dice_nonneoplastic": dice_score(pred[:, 1], truth[:, 1])}}

    return ensure_model("unet", data_dir, config, lambda: models.UNet(2, cfg["base"], cfg["depth"]), train)


# paper 003's regression networks ---------------------------------------------------------------------
TRAINING_PRESETS["regression"] = {
    # thesis: EfficientNetV2-S, batch 16, AdamW (weight decay 0.008), cosine decay with warm-up, 100 epochs,
    # dropout 0.3, frozen backbone first, then fine-tuning; 360 px patches. Here 16 epochs on 96 px patches: with
    # dropout 0.3 and a fine-tuning rate of 5e-4 the network underfits FA (test R² 0.85, training 0.93); dropout 0.1
    # and 2e-3 give 0.89 / 0.95, and predictions averaged over 4 rotations 0.91 (notebook 06)
    "default": dict(backbone="efficientnet_lite0", input_scale=1.0, train_samples=(2, 3), dense=256,
                    feature_dense=64, dropout=0.1, frozen_epochs=5, frozen_lr=3e-3, epochs=16, lr=2e-3,
                    warmup_epochs=1, weight_decay=0.008, batch_size=16, patience=5, augment=True,
                    test_time_symmetries=4),
    "smoke": dict(backbone="efficientnet_lite0", input_scale=1.0, train_samples=(2, 3), dense=64,
                  feature_dense=16, dropout=0.3, frozen_epochs=3, frozen_lr=3e-3, epochs=2, lr=1e-3,
                  warmup_epochs=1, weight_decay=0.008, batch_size=8, patience=2, augment=True,
                  test_time_symmetries=4),
}
REGRESSION_TARGETS = ("md", "fa", "cc")


def regression_split(samples, train_samples, seed: int):
    """Thesis §3.2.1: patches of the training samples, shuffled, split 60 / 20 / 20 (train / validation / test)."""
    pool = np.flatnonzero(np.isin(np.asarray(samples), list(train_samples)))
    if len(pool) < 5:
        raise TrainingError(f"samples {list(train_samples)} hold {len(pool)} patches; at least 5 are needed for "
                            f"a 60/20/20 split.")
    pool = np.random.default_rng(seed).permutation(pool)
    n_val = n_test = max(1, int(round(0.2 * len(pool))))
    return np.sort(pool[n_val + n_test:]), np.sort(pool[:n_val]), np.sort(pool[n_val: n_val + n_test])


def regression_targets(reg, targets) -> np.ndarray:
    """N × T float32 array of the named targets (md, fa, cc); unknown names and NaN values are refused."""
    unknown = [t for t in targets if t not in REGRESSION_TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; the regression patches have {', '.join(REGRESSION_TARGETS)}.")
    y = np.stack([np.asarray(reg[t], np.float64) for t in targets], 1).astype(np.float32)
    if not np.isfinite(y).all():
        raise ValueError(f"regression targets {list(targets)} hold NaN or inf values; drop or fix those patches.")
    return y


def square_symmetries(images, count: int = 8):
    """The first ``count`` of the 8 symmetries of the square of N×H×W×C images, one array at a time (only one
    turned copy in memory): rotations by 0, 90, 180 and 270° (count 4 gives these), then the same four of the
    mirrored images (count 8)."""
    if count not in (1, 2, 4, 8):
        raise ValueError(f"symmetries={count}: use 1 (none), 2, 4 or 8.")
    arr = np.asarray(images)
    turns_and_flips = [(k, flip) for flip in (False, True) for k in range(4)][:count]
    return (np.ascontiguousarray(np.flip(np.rot90(arr, k, axes=(1, 2)), axis=2) if flip
                                 else np.rot90(arr, k, axes=(1, 2))) for k, flip in turns_and_flips)


def predict_regression(model, images, scale: dict, device="auto", batch_size: int = 32,
                       symmetries: int | None = None) -> np.ndarray:
    """Predictions in the targets' own units (the network works on standardised targets). ``symmetries`` > 1
    averages the predictions over that many rotations / flips of each patch (test-time augmentation: MD, FA and
    the cell count do not change under them); by default the number the model was evaluated with
    (``scale["symmetries"]``, 1 if absent)."""
    symmetries = int(scale.get("symmetries", 1) if symmetries is None else symmetries)
    z = np.mean([predict(model, turned, batch_size=batch_size, device=device).numpy()
                 for turned in square_symmetries(images, symmetries)], axis=0)
    return z * np.asarray(scale["std"]) + np.asarray(scale["mean"])


def r2_scores(y_true, y_pred) -> list:
    """R² per target (sklearn's definition: 1 − SS_res / SS_tot)."""
    from sklearn.metrics import r2_score

    y_true, y_pred = np.atleast_2d(np.asarray(y_true).T).T, np.atleast_2d(np.asarray(y_pred).T).T
    return [float(r2_score(y_true[:, j], y_pred[:, j])) for j in range(y_true.shape[1])]


def ensure_regression_model(data_dir, targets=("md", "fa"), smoke: bool = False, seed: int = 0, device="auto",
                            **overrides):
    """Paper 003's regression network for ``targets`` (MD + FA multi-task by default; ``("cc",)`` for the
    single-task cell-count network): trained on the thesis's samples 3 and 4 (0-based 2 and 3), backbone frozen
    first and then fine-tuned with AdamW and a warm-up + cosine schedule (cached). Returns (model, info); info
    holds the target scaling, the split and the R² of every split and every sample."""
    cfg = training_preset("regression", smoke, **overrides)
    reg, _ = data.ensure_regression_patches(data_dir, smoke=smoke, seed=seed)
    targets = tuple(targets)
    y = regression_targets(reg, targets)
    samples = np.asarray(reg["sample"])
    train_idx, val_idx, test_idx = regression_split(samples, cfg["train_samples"], seed)
    mean, std = y[train_idx].mean(0), y[train_idx].std(0) + 1e-8
    z = (y - mean) / std
    config = {"model": {"arch": "RegressionNet", "backbone": cfg["backbone"], "targets": list(targets),
                        "dense": cfg["dense"], "feature_dense": cfg["feature_dense"], "dropout": cfg["dropout"],
                        "input_scale": cfg["input_scale"]},
              "train": cfg, "seed": int(seed), "data": data.preset("regression", smoke)}

    def build():
        backbone, channels = models.regression_backbone(cfg["backbone"], data_dir, input_scale=cfg["input_scale"])
        return models.RegressionNet(backbone, channels, targets, cfg["dense"], cfg["feature_dense"], cfg["dropout"])

    def train(model):
        sets = [data.ArrayDataset(reg["images"], z, ids) for ids in (train_idx, val_idx)]
        common = dict(batch_size=cfg["batch_size"], patience=cfg["patience"], device=device, seed=seed,
                      # MD, FA and the cell count do not change under 90° rotations and flips of the patch
                      augment=flips_and_rotations if cfg["augment"] else None, optimizer="adamw",
                      weight_decay=cfg["weight_decay"])
        model.set_backbone_trainable(False)
        frozen = fit(model, *sets, nn.MSELoss(), epochs=cfg["frozen_epochs"], lr=cfg["frozen_lr"],
                     desc=f"{'+'.join(targets)}: head", **common)
        model.set_backbone_trainable(True)
        tuned = fit(model, *sets, nn.MSELoss(), epochs=cfg["epochs"], lr=cfg["lr"], warmup_epochs=cfg["warmup_epochs"],
                    cosine=True, desc=f"{'+'.join(targets)}: fine-tuning", **common)
        # predictions average rotations of each patch (test-time augmentation; 1 turns it off)
        scale = {"mean": mean.tolist(), "std": std.tolist(), "symmetries": cfg["test_time_symmetries"]}
        pred = predict_regression(model, reg["images"], scale, device)
        r2 = {name: r2_scores(y[ids], pred[ids]) for name, ids in (("train", train_idx), ("val", val_idx),
                                                                    ("test", test_idx))}
        per_sample = [r2_scores(y[samples == s], pred[samples == s]) for s in range(int(samples.max()) + 1)]
        return {"history_frozen": frozen, "history": tuned, "scale": scale, "targets": list(targets),
                "split": {"train": train_idx.tolist(), "val": val_idx.tolist(), "test": test_idx.tolist()},
                "metrics": {"r2": r2, "r2_per_sample": per_sample}}

    return ensure_model(f"regression_{'_'.join(targets)}", data_dir, config, build, train)
