"""The trained models of the notebooks, one recipe each: which data, which architecture, which loss and settings
(:data:`helpers.presets.TRAINING`), how it is evaluated; trained once by :func:`helpers.training.ensure_model` and
cached. Notebook 02 trains them; notebooks 03–06 load them.

- paper 000: :func:`ensure_tile_classifier` (VGG-16 + global max pool on tiles of simulated slides)
- paper 001: :func:`ensure_grading_model` (7-class grading CNN or ResNet-18), :func:`ensure_unet` (nuclei)
- paper 003: :func:`ensure_regression_model` (MD, FA, CC from H&E patches)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import models, presets
from .arrays import numeric
from .data import tensors
from .simulate import datasets
from .training import TrainingError, ensure_model, fit, flips_and_rotations, predict, BCEDiceLoss, dice_score, soft_iou


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
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: the validation share of the training tiles lies in (0, 1).")
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

    ds = tensors.TileDataset(slides["rgb"], index["slide"][test], index["coords"][test], index["label"][test],
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
    cfg = presets.training("tile_classifier", smoke, **overrides)
    slides, meta = datasets.ensure_tile_slides(data_dir, smoke=smoke, seed=seed)
    index = datasets.tile_dataset_index(slides, cfg["tile"], cfg["stride"], cfg["centre"], cfg["min_tissue"])
    index["tile"] = cfg["tile"]
    return slides, meta, index


def ensure_tile_classifier(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """Paper 000's VGG-16 tile classifier trained on the simulated slides (cached). Returns (model, info)."""
    cfg = presets.training("tile_classifier", smoke, **overrides)
    slides, _, index = tile_index(data_dir, smoke, seed, **overrides)
    config = {"model": {"arch": "VGG16TileClassifier", "width": cfg["width"], "batch_norm": cfg["batch_norm"]}, "train": cfg, "seed": int(seed),
              "data": datasets.dataset_config("tile_slides", smoke)}
    train_idx, val_idx, test_idx = tile_split(index, seed, max_negatives_per_positive=cfg["max_negatives_per_positive"])

    def tile_set(ids):
        return tensors.TileDataset(slides["rgb"], index["slide"][ids], index["coords"][ids], index["label"][ids],
                                cfg["tile"])

    def train(model):
        if index["label"][train_idx].sum() == 0:
            raise TrainingError("no positive tile in the training split; the slides hold no tumour tiles.")
        history = fit(model, tile_set(train_idx), tile_set(val_idx), _bce_logit_loss, epochs=cfg["epochs"],
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
    if arch == "thesis_code":
        return models.ThesisGradingCNN(n_classes, input_size)
    if arch == "resnet18":
        return models.resnet18_grading(n_classes)
    raise ValueError(f"unknown grading architecture {arch!r}; use 'paper' (paper 001's CNN from its text), "
                     "'thesis_code' (as its code appendix builds it) or 'resnet18'.")


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
    cfg = presets.training("grading_cnn", smoke, **overrides)
    grading, meta = datasets.ensure_grading_patches(data_dir, smoke=smoke, seed=seed)
    n_classes, size = len(meta["classes"]), int(grading["images"].shape[1])
    config = {"model": {"arch": cfg["arch"], "n_classes": n_classes, "input_size": size}, "train": cfg,
              "seed": int(seed), "data": datasets.dataset_config("grading", smoke)}
    split, labels = np.asarray(grading["split"]), np.asarray(grading["label"])

    def train(model):
        _check_labels(labels, n_classes, "grading patches")
        sets = [tensors.ArrayDataset(grading["images"], labels, np.flatnonzero(split == s)) for s in (0, 1)]
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
    types = numeric(types, "types", ndim=3, layout="N × H × W type maps (0 background, 1 neoplastic, 2 other)",
                    dtype=None)
    return np.stack([types == 1, types == 2], axis=1).astype(np.uint8)


class _MaskDataset(tensors.ArrayDataset):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x, y.float()


@torch.no_grad()
def segment_nuclei(model, images, device="auto", threshold: float = 0.5) -> np.ndarray:
    """U-Net masks for N×H×W×3 uint8 images: N×2×H×W bool (neoplastic, non-neoplastic)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold}: the U-Net gives probabilities, so a threshold lies in (0, 1).")
    return (torch.sigmoid(predict(model, images, batch_size=32, device=device)) > threshold).numpy()


def unet_split(n: int, seed: int, val_fraction: float):
    """The U-Net's training and validation indices of the n PanNuke-like patches (a seeded random share held out;
    PanNuke's third fold plays this part in paper 001). Returns (train, validation), each sorted."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction}: the held-out share lies between 0 and 1.")
    order = np.random.default_rng(seed).permutation(int(n))
    n_val = max(1, int(round(val_fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def unet_soft_iou(model, images, nuclei_types, device="auto") -> np.ndarray:
    """Paper 001's U-Net score (``training.soft_iou``, its sigmoid IoU over both masks) per image."""
    logits = predict(model, images, batch_size=32, device=device)
    return soft_iou(logits, nuclei_targets(nuclei_types))


def ensure_unet(data_dir, smoke: bool = False, seed: int = 0, device="auto", **overrides):
    """Paper 001's U-Net for neoplastic / non-neoplastic nuclei, trained on the PanNuke-like patches and scored
    (Dice) on the grading test patches, as the paper applies it to DiagSet (cached). Returns (model, info)."""
    cfg = presets.training("unet", smoke, **overrides)
    seg, _ = datasets.ensure_segmentation_patches(data_dir, smoke=smoke, seed=seed)
    grading, _ = datasets.ensure_grading_patches(data_dir, smoke=smoke, seed=seed)
    config = {"model": {"arch": "UNet", "base": cfg["base"], "depth": cfg["depth"]}, "train": cfg,
              "seed": int(seed), "data": [datasets.dataset_config("segmentation", smoke), datasets.dataset_config("grading", smoke)]}

    def train(model):
        targets = nuclei_targets(seg["nuclei_types"])
        sets = [_MaskDataset(seg["images"], targets, ids)
                for ids in unet_split(len(seg["images"]), seed, cfg["val_fraction"])]
        history = fit(model, *sets, BCEDiceLoss(), epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"],
                      patience=cfg["patience"], device=device, seed=seed, augment=flips_and_rotations, desc="U-Net")
        test = np.flatnonzero(np.asarray(grading["split"]) == 2)
        pred = segment_nuclei(model, np.asarray(grading["images"])[test], device)
        truth = nuclei_targets(np.asarray(grading["nuclei_types"])[test]).astype(bool)
        return {"history": history, "metrics": {"unet_dice_neoplastic": dice_score(pred[:, 0], truth[:, 0]),
                                                "unet_dice_nonneoplastic": dice_score(pred[:, 1], truth[:, 1])}}

    return ensure_model("unet", data_dir, config, lambda: models.UNet(2, cfg["base"], cfg["depth"]), train)


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
    if not isinstance(scale, dict) or not {"mean", "std"} <= set(scale):
        raise ValueError(f"scale has keys {sorted(scale) if isinstance(scale, dict) else type(scale).__name__}; it is "
                         "the model's info['scale'] (mean and std of the training targets) from ensure_regression_model.")
    symmetries = int(scale.get("symmetries", 1) if symmetries is None else symmetries)
    z = np.mean([predict(model, turned, batch_size=batch_size, device=device).numpy()
                 for turned in square_symmetries(images, symmetries)], axis=0)
    return z * np.asarray(scale["std"]) + np.asarray(scale["mean"])


R2_DEFINITIONS = ("sklearn", "thesis")


def r2_scores(y_true, y_pred, definition: str = "sklearn") -> list:
    """R² per target. ``definition="sklearn"``: 1 − SS_res / SS_tot (scikit-learn's ``r2_score``), which a constant
    offset of the predictions lowers. ``"thesis"``: 1 − var(Y − Ŷ) / var(Y), paper 003's equation 3.2 (Lank, §3.2),
    which ignores a constant offset; it is scikit-learn's ``explained_variance_score``."""
    from sklearn.metrics import explained_variance_score, r2_score

    if definition not in R2_DEFINITIONS:
        raise ValueError(f"definition={definition!r}: choose 'sklearn' (1 − SS_res/SS_tot) or 'thesis' "
                         "(1 − var(Y − Ŷ)/var(Y), paper 003's equation 3.2).")
    score = r2_score if definition == "sklearn" else explained_variance_score

    fix = "Give one row per patch and one column per target, without NaN."
    # dtype kept: scikit-learn computes float32 input in float32, as it always did here
    y_true = numeric(y_true, "y_true", ndim=(1, 2), layout="N or N × targets", min_size=2, dtype=None, fix=fix)
    y_pred = numeric(y_pred, "y_pred", ndim=(1, 2), layout="N or N × targets", min_size=2, dtype=None, fix=fix)
    y_true, y_pred = np.atleast_2d(y_true.T).T, np.atleast_2d(y_pred.T).T
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ; give one prediction per target "
                         "and patch (N × targets).")
    return [float(score(y_true[:, j], y_pred[:, j])) for j in range(y_true.shape[1])]


def ensure_regression_model(data_dir, targets=("md", "fa"), smoke: bool = False, seed: int = 0, device="auto",
                            **overrides):
    """Paper 003's regression network for ``targets`` (MD + FA multi-task by default; ``("cc",)`` for the
    single-task cell-count network): trained on the thesis's samples 3 and 4 (0-based 2 and 3), backbone frozen
    first and then fine-tuned with AdamW and a warm-up + cosine schedule (cached). Returns (model, info); info
    holds the target scaling, the split and the validation R² (score the test split yourself, once)."""
    cfg = presets.training("regression", smoke, **overrides)
    reg, _ = datasets.ensure_regression_patches(data_dir, smoke=smoke, seed=seed)
    targets = tuple(targets)
    y = regression_targets(reg, targets)
    samples = np.asarray(reg["sample"])
    train_idx, val_idx, test_idx = regression_split(samples, cfg["train_samples"], seed)
    mean, std = y[train_idx].mean(0), y[train_idx].std(0) + 1e-8
    z = (y - mean) / std
    config = {"model": {"arch": "RegressionNet", "backbone": cfg["backbone"], "targets": list(targets),
                        "dense": cfg["dense"], "feature_dense": cfg["feature_dense"], "dropout": cfg["dropout"],
                        "input_scale": cfg["input_scale"]},
              "train": cfg, "seed": int(seed), "data": datasets.dataset_config("regression", smoke)}

    def build():
        backbone, channels = models.regression_backbone(cfg["backbone"], data_dir, input_scale=cfg["input_scale"])
        return models.RegressionNet(backbone, channels, targets, cfg["dense"], cfg["feature_dense"], cfg["dropout"])

    def train(model):
        sets = [tensors.ArrayDataset(reg["images"], z, ids) for ids in (train_idx, val_idx)]
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
        # validation only: the test split is scored once, by the caller, with the settings chosen on validation
        # (notebook 06); predicting every patch here as well cost a fifth of the training time
        r2_val = r2_scores(y[val_idx], predict_regression(model, reg["images"][val_idx], scale, device))
        return {"history_frozen": frozen, "history": tuned, "scale": scale, "targets": list(targets),
                "split": {"train": train_idx.tolist(), "val": val_idx.tolist(), "test": test_idx.tolist()},
                "metrics": {"r2_val": r2_val}}

    return ensure_model(f"regression_{'_'.join(targets)}", data_dir, config, build, train)


# ------------------------------------------------------------------ paper 003: leave one sample out
def sample_folds(samples, seed: int, held_out=None):
    """Leave-one-sample-out folds: for each held-out sample (all of them by default), the thesis's 60 / 20 / 20 split
    (:func:`regression_split`) of the patches of every *other* sample. Yields (held_out, train_idx, val_idx,
    held_out_idx); the split's 20 % test part is left unused, because the held-out sample is the test."""
    samples = np.asarray(samples)
    present = np.unique(samples)
    if len(present) < 2:
        raise ValueError(f"samples holds {len(present)} distinct sample(s); leaving one out needs at least two.")
    chosen = present if held_out is None else np.asarray(list(held_out))
    missing = sorted(set(chosen.tolist()) - set(present.tolist()))
    if missing:
        raise ValueError(f"held_out names sample(s) {missing} that have no patches; the samples are "
                         f"{present.tolist()} (0-based).")
    for s in chosen:
        train_idx, val_idx, _ = regression_split(samples, [int(t) for t in present if t != s], seed)
        yield int(s), train_idx, val_idx, np.flatnonzero(samples == s)


@torch.inference_mode()
def backbone_features(data_dir, images, backbone: str = "efficientnet_lite0", input_scale: float = 1.0,
                      device="auto", batch_size: int = 32) -> np.ndarray:
    """The ImageNet backbone's globally average-pooled features (N × C float32) of N×H×W×3 patches: what the
    regression network's head sees while the backbone is frozen (thesis §3.2.5, the first stage)."""
    from .env import select_device
    from .features import iter_batches

    net, _ = models.regression_backbone(backbone, data_dir, input_scale=input_scale)
    dev = select_device(device)
    net = net.to(dev).eval()
    return torch.cat([net(x.to(dev)).mean((2, 3)).cpu() for x in iter_batches(images, batch_size)]).numpy()


def fit_frozen_head(features, y, train_idx, val_idx, targets=("md", "fa"), smoke: bool = False, seed: int = 0,
                    device="auto", **overrides) -> tuple[np.ndarray, dict]:
    """The regression network's head (dense → per target: feature dense → dropout → output) trained on
    :func:`backbone_features` of the training patches, the backbone kept frozen throughout: the thesis's first
    stage run to early stopping (``frozen_epochs + epochs`` epochs at ``frozen_lr``, AdamW, patience as preset),
    with no augmentation (the features are of the unturned patches). Returns every patch's predictions in the
    targets' units and the history. Seconds per fit, where the whole recipe takes minutes per network."""
    cfg = presets.training("regression", smoke, **overrides)
    features, y = np.asarray(features, np.float32), np.asarray(y, np.float32)
    if features.ndim != 2 or len(features) != len(y):
        raise ValueError(f"features has shape {features.shape} and y {y.shape}; give N × C features "
                         "(backbone_features) and N × T targets with the same N.")
    y = y.reshape(len(y), -1)
    mean, std = y[train_idx].mean(0), y[train_idx].std(0) + 1e-8
    z = (y - mean) / std
    as_maps = torch.from_numpy(features)[:, :, None, None]          # N × C × 1 × 1: the head's pooling is a no-op
    sets = [torch.utils.data.TensorDataset(as_maps[ids], torch.from_numpy(z[ids])) for ids in (train_idx, val_idx)]
    from .env import seed_everything

    seed_everything(seed)
    head = models.RegressionNet(nn.Identity(), features.shape[1], tuple(targets), cfg["dense"], cfg["feature_dense"],
                                cfg["dropout"])
    history = fit(head, *sets, nn.MSELoss(), epochs=cfg["frozen_epochs"] + cfg["epochs"], lr=cfg["frozen_lr"],
                  batch_size=cfg["batch_size"], patience=cfg["patience"], device=device, seed=seed, optimizer="adamw",
                  weight_decay=cfg["weight_decay"], desc=f"{'+'.join(targets)}: frozen head")
    z_pred = predict(head, as_maps, device=device).numpy()
    return z_pred * std + mean, history


def leave_one_sample_out(data_dir, targets=("md", "fa"), smoke: bool = False, seed: int = 0, device="auto",
                         fine_tune: bool = False, held_out=None, **overrides) -> dict:
    """Paper 003's network scored on each sample after training on all the others. ``fine_tune=False``: the head
    on the frozen backbone (:func:`fit_frozen_head`; the features are computed once, so 16 folds cost about one
    network); ``True``: the whole recipe per fold (:func:`ensure_regression_model`, cached: 16 networks, each on all
    the other samples' patches; for users with a GPU). Returns ``predictions`` (N × T: each patch of a held-out
    sample predicted by the fold that left it out; NaN for samples not held out), ``folds`` (held-out sample,
    training and validation patches, epochs), ``held_out`` and, without fine-tuning, ``features`` (the backbone's
    pooled features of every patch, for other heads on the same features)."""
    reg, _ = datasets.ensure_regression_patches(data_dir, smoke=smoke, seed=seed)
    targets = tuple(targets)
    y = regression_targets(reg, targets)
    samples = np.asarray(reg["sample"])
    cfg = presets.training("regression", smoke, **overrides)
    predictions = np.full(y.shape, np.nan)
    folds = []
    features = None if fine_tune else backbone_features(data_dir, reg["images"], cfg["backbone"], cfg["input_scale"],
                                                        device)
    from tqdm.auto import tqdm

    for s, train_idx, val_idx, test_idx in tqdm(list(sample_folds(samples, seed, held_out)), desc="held-out samples",
                                                leave=False):
        if fine_tune:
            others = tuple(int(t) for t in np.unique(samples) if t != s)
            model, info = ensure_regression_model(data_dir, targets, smoke=smoke, seed=seed, device=device,
                                                  **{**overrides, "train_samples": others})
            predictions[test_idx] = predict_regression(model, reg["images"][test_idx], info["scale"], device)
            epochs = len(info["history_frozen"]["epoch"]) + len(info["history"]["epoch"])
        else:
            pred, history = fit_frozen_head(features, y, train_idx, val_idx, targets, smoke, seed, device, **overrides)
            predictions[test_idx] = pred[test_idx]
            epochs = len(history["epoch"])
        folds.append({"held_out": s, "n_train": len(train_idx), "n_val": len(val_idx), "n_held_out": len(test_idx),
                      "epochs": epochs})
    return {"predictions": predictions, "folds": folds, "held_out": [f["held_out"] for f in folds],
            "targets": list(targets), "fine_tune": bool(fine_tune), "features": features}
