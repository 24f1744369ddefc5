import numpy as np
import pytest
import torch
from torch import nn

from helpers import cache, models, presets, recipes, training
from helpers.data import tensors


# --------------------------------------------------------------------------------------------- architectures
def test_vgg16_tile_classifier_keeps_the_vgg16_layout():
    model = models.VGG16TileClassifier(width=0.125)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]
    assert models.VGG16TileClassifier(1.0).channels == 512          # width 1 is the real VGG-16
    # the last conv after ReLU is reachable by name and keeps stride 16 (paper 000: 512 px → 32×32)
    acts = {}
    models.get_layer(model, "features.relu5_3").register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    out = model(torch.rand(2, 3, 128, 128))
    assert out.shape == (2, 1) and acts["a"].shape == (2, 64, 8, 8) and (acts["a"] >= 0).all()
    with pytest.raises(KeyError, match="no layer 'features.relu6_1'"):
        models.get_layer(model, "features.relu6_1")


def test_grading_cnn_is_paper_001s_design():
    model = models.GradingCNN(7, input_size=96)
    convs = [model.conv1, model.conv2, model.conv3]
    assert [c.kernel_size for c in convs] == [(3, 3), (5, 5), (5, 5)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in (model.pool1, model.pool2, model.pool3))
    linear = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert len(linear) == 7 and linear[-1].out_features == 7
    assert sum(isinstance(m, nn.ReLU) for m in model.classifier) == 6   # ReLU between the linear layers
    assert model(torch.rand(3, 3, 96, 96)).shape == (3, 7)
    with pytest.raises(ValueError, match="input_size=64"):
        model(torch.rand(1, 3, 64, 64))


def test_thesis_grading_cnn_is_the_code_appendix_layer_by_layer():
    model = models.ThesisGradingCNN(7, input_size=96).eval()
    convs = [model.conv1, model.conv2, model.conv3]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 16, (3, 3), (0, 0)), (16, 32, (5, 5), (0, 0)), (32, 64, (5, 5), (0, 0))]
    # 96 → conv 94 → pool 46 → conv 42 → pool 20 → conv 16 → pool 7: 64 × 7 × 7 features into the first dense layer
    linear = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [
        (64 * 7 * 7, 2048), (2048, 1024), (1024, 512), (512, 256), (256, 128), (128, 64), (64, 7)]
    kinds = [type(m).__name__ for m in model.classifier]
    assert kinds[:5] == ["Linear", "ReLU", "BatchNorm1d", "ReLU", "Linear"]    # the appendix: relu(bn(relu(fc1)))
    assert isinstance(model.bn1, nn.BatchNorm2d) and model(torch.rand(2, 3, 96, 96)).shape == (2, 7)
    with pytest.raises(ValueError, match="at least 43 px"):
        models.ThesisGradingCNN(7, input_size=32)


def test_unet_shapes_and_bad_sizes():
    unet = models.UNet(2, base=4, depth=3)
    assert unet(torch.rand(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="divisible by 8"):
        unet(torch.rand(1, 3, 60, 60))


# -------------------------------------------------------------------------------------------------- losses
def test_bce_dice_loss_and_dice_score_against_references():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(3, 2, 8, 8)), dtype=torch.float32)
    target = torch.tensor(rng.random((3, 2, 8, 8)) > 0.6, dtype=torch.float32)
    p = torch.sigmoid(logits)
    dice = [(2 * (p[:, c] * target[:, c]).sum() + 1) / (p[:, c].sum() + target[:, c].sum() + 1) for c in range(2)]
    expected = nn.functional.binary_cross_entropy(p, target) + 1 - torch.stack(dice).mean()
    assert float(training.BCEDiceLoss()(logits, target)) == pytest.approx(float(expected), rel=1e-5)
    a, b = rng.random((50, 50)) > 0.5, rng.random((50, 50)) > 0.4
    assert training.dice_score(a, b) == pytest.approx(f1_score(b.ravel(), a.ravel()))    # Dice is F1 on pixels
    assert training.dice_score(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    with pytest.raises(ValueError, match="differ"):
        training.BCEDiceLoss()(logits, target[:, :1])


# ------------------------------------------------------------------------------------------------ the loop
def _blobs(n=64, seed=0):
    """Bright vs dark 8×8 images: an easy, learnable problem."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.normal(0.3 + 0.4 * y[:, None, None, None], 0.1, (n, 8, 8, 3)).clip(0, 1) * 255).astype(np.uint8)
    return x, y


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_fit_learns_keeps_the_best_epoch_and_is_deterministic():
    x, y = _blobs()
    sets = [tensors.ArrayDataset(x, y, np.arange(0, 48)), tensors.ArrayDataset(x, y, np.arange(48, 64))]
    weights = []
    for _ in range(2):
        model = _tiny()
        torch.manual_seed(0)
        for p in model.parameters():
            nn.init.normal_(p, 0, 0.3)
        history = training.fit(model, *sets, nn.CrossEntropyLoss(), epochs=15, lr=0.05, batch_size=16, patience=20,
                            device="cpu", seed=3)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert history["val_loss"][-1] < history["val_loss"][0]
    best = int(np.argmin(history["val_loss"]))
    assert history["best_epoch"] == history["epoch"][best]
    ev = recipes.evaluate_classifier(model, x[48:], y[48:], 2, "cpu")
    assert ev["accuracy"] > 0.9
    # the weights kept are the best epoch's: their validation loss equals the recorded minimum
    loss = training.evaluate_loss(model, training._loader(sets[1], 16, False, 0), nn.CrossEntropyLoss(), torch.device("cpu"))
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-5)
    assert torch.equal(weights[0], weights[1])                   # same seed → same weights


def test_early_stopping_stops():
    x, y = _blobs()
    sets = [tensors.ArrayDataset(x, y, np.arange(48)), tensors.ArrayDataset(x, 1 - y, np.arange(48, 64))]  # val flipped
    history = training.fit(_tiny(), *sets, nn.CrossEntropyLoss(), epochs=30, lr=0.05, patience=2, device="cpu")
    assert len(history["epoch"]) < 30


def test_nan_loss_and_empty_split_stop_with_a_message():
    x, y = _blobs()
    sets = [tensors.ArrayDataset(x, y, np.arange(48)), tensors.ArrayDataset(x, y, np.arange(48, 64))]

    def nan_loss(logits, target):
        return nn.functional.cross_entropy(logits, target) * float("nan")

    with pytest.raises(training.TrainingError, match="loss became nan.*learning rate"):
        training.fit(_tiny(), *sets, nan_loss, epochs=2, lr=0.01, batch_size=64, device="cpu")
    # a NaN pixel is refused where the image is read, with the image named
    broken = x.astype(np.float32) / 255
    broken[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images\[3\] contain NaN"):
        tensors.ArrayDataset(broken, y)[3]
    empty = tensors.ArrayDataset(x, y, np.arange(0))
    with pytest.raises(training.TrainingError, match="training split is empty"):
        training.fit(_tiny(), empty, sets[1], nn.CrossEntropyLoss(), epochs=1, lr=0.01, device="cpu")


def test_class_count_must_match_the_data():
    x, y = _blobs()
    with pytest.raises(ValueError, match="class count of the model must match"):
        recipes.evaluate_classifier(_tiny(), x, y + 5, 2, "cpu")
    with pytest.raises(ValueError, match="unknown grading architecture"):
        recipes._grading_model("vgg99", 96)


# ------------------------------------------------------------------------------------------ checkpoints
def test_checkpoints_are_reused_validated_and_architecture_checked(tmp_path, capsys):
    calls = []

    def fake_train(model):
        calls.append(1)
        return {"metrics": {"acc": 0.5}}

    config = {"model": {"arch": "tiny"}, "seed": 0}
    model, info = training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    again, _ = training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    assert len(calls) == 1 and info["metrics"] == {"acc": 0.5}
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)
    folder = next((tmp_path / "cache" / "models").glob("tiny-*"))
    # a checkpoint of another architecture is refused with a message that says what to do
    with pytest.raises(ValueError, match="do not fit this Sequential.*retrain"):
        cache.load_checkpoint(folder, nn.Sequential(nn.Linear(3, 3)))
    # a corrupted checkpoint is detected and retrained, with the reason printed
    raw = bytearray((folder / cache.CHECKPOINT).read_bytes())
    raw[-20] ^= 0xFF
    (folder / cache.CHECKPOINT).write_bytes(bytes(raw))
    with pytest.raises(cache.CacheError, match="checksum mismatch"):
        cache.load_checkpoint(folder, _tiny(), info["config"])     # the config as saved: with the code fingerprint
    training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    assert len(calls) == 2 and "checksum mismatch" in capsys.readouterr().out


def test_a_checkpoint_trained_by_other_code_is_not_reused(tmp_path, monkeypatch):
    """Same settings, other code (an older commit, a local edit): the model is trained again, not reused."""
    calls = []

    def fake_train(model):
        calls.append(1)
        return {"metrics": {}}

    config = {"model": {"arch": "tiny"}, "seed": 0}
    training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    assert len(calls) == 1
    monkeypatch.setattr(cache, "source_fingerprint", lambda *modules: "edited-code")
    _, info = training.ensure_model("tiny", tmp_path, config, _tiny, fake_train)
    assert len(calls) == 2 and info["config"]["code"] == "edited-code"


def test_presets_refuse_unknown_options():
    with pytest.raises(ValueError, match="unknown option.*for model .unet."):
        presets.training("unet", smoke=True, epoch=3)
    with pytest.raises(ValueError, match="unknown model"):
        presets.training("transformer")


def test_tile_split_keeps_test_slides_apart():
    index = {"is_test": np.array([0] * 80 + [1] * 20, bool), "label": np.array(([1] + [0] * 7) * 10 + [0] * 20)}
    tr, va, te = recipes.tile_split(index, seed=0, max_negatives_per_positive=2)
    assert set(te) == set(range(80, 100)) and not (set(tr) | set(va)) & set(te) and not set(tr) & set(va)
    n_pos = index["label"][tr].sum()
    assert (index["label"][tr] == 0).sum() <= 2 * n_pos


def test_nuclei_targets():
    types = np.array([[[0, 1], [2, 1]]])
    t = recipes.nuclei_targets(types)
    assert t.shape == (1, 2, 2, 2) and t[0, 0].tolist() == [[0, 1], [0, 1]] and t[0, 1].tolist() == [[0, 0], [1, 0]]


def test_soft_iou_is_the_thesis_iou_module_per_image():
    """Paper 001's appendix: class Iou — sigmoid, flatten, (intersection + 1) / (union + 1), batch of one."""
    from helpers import recipes

    class ThesisIou(torch.nn.Module):
        def forward(self, inputs, targets, smooth=1):
            inputs = torch.sigmoid(inputs).reshape(-1)
            targets = targets.reshape(-1)
            intersection = (inputs * targets).sum()
            union = (inputs + targets).sum() - intersection
            return (intersection + smooth) / (union + smooth)

    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 8) * 3
    targets = (torch.rand(3, 2, 8, 8) > 0.7).float()
    ours = training.soft_iou(logits, targets)
    assert ours == pytest.approx([float(ThesisIou()(logits[i:i + 1], targets[i:i + 1])) for i in range(3)], rel=1e-6)
    # not a Dice: a perfect hard prediction scores below 1 (the sigmoid of a finite logit is below 1)
    assert training.soft_iou(targets * 20 - 10, targets).max() < 1
    train_ids, val_ids = recipes.unet_split(50, 3, 0.2)
    assert len(val_ids) == 10 and not set(train_ids) & set(val_ids) and len(train_ids) + len(val_ids) == 50
    with pytest.raises(ValueError, match="same shape"):
        training.soft_iou(logits, targets[:, :1])
