"""How large must notebook 05's planted marker be for the grading CNN's architecture to learn it?

Notebook 05 (section 9) counts a planted mechanism only when its network separates the changed patches from the
unchanged ones. This study trains the planted "marker" network at notebook 05's default size (the 2 800 simulated
96 px grading patches, seed 0; 8 epochs, batch 32, early stopping after 3, as `metric_validation.ensure_planted_model`)
for several marker sizes and learning rates, and reports the **validation** accuracy only: the size is chosen on
validation data, and the test patches stay for the notebook.

    eval "$(.venv/bin/python -m helpers.env --export)"     # the numeric mode the notebooks run in
    .venv/bin/python benchmarks/planted_marker_size.py      # about 12 minutes on 2 cores

Writes benchmarks/results/planted_marker_size.json. Measured (Intel Xeon, 2 cores, portable mode): an 8 px square
(0.7 % of the patch) stays at chance at learning rates 1e-3 and 3e-4 (0.50, 0.51) and reaches 0.63 at 1e-4 after 8
epochs; 12 px reaches 0.99 at 1e-3, 16 px 0.99. The rule, the smallest square learnt to a validation accuracy of at
least 0.9 (notebook 05's PLANTED_MIN_ACCURACY), makes `helpers.simulate.planted.MARKER_PX` 12: the smaller the
evidence, the sharper the test of where a map puts its attribution.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = [(8, 1e-3), (8, 3e-4), (8, 1e-4), (12, 1e-3), (16, 1e-3)]     # (marker side in px, learning rate)
EPOCHS, BATCH, PATIENCE = 8, 32, 3


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from torch import nn

    from helpers import env, models, training
    from helpers.data import tensors
    from helpers.simulate import datasets, planted

    env.setup(0, "auto")
    grading, _ = datasets.ensure_grading_patches(ROOT / "data", smoke=False, seed=0)
    images = np.asarray(grading["images"])
    nuclei = np.asarray(grading["nuclei_instances"]) > 0
    split = np.asarray(grading["split"])
    rows = []
    for marker_px, lr in RUNS:
        data = planted.planted_dataset(images, nuclei, "marker", seed=0, marker_px=marker_px)
        env.seed_everything(0)
        model = models.GradingCNN(n_classes=2, input_size=images.shape[1])
        train_set, val_set = (tensors.ArrayDataset(data["images"], data["labels"], np.flatnonzero(split == s))
                              for s in (0, 1))
        started = time.perf_counter()
        history = training.fit(model, train_set, val_set, nn.CrossEntropyLoss(), epochs=EPOCHS, lr=lr,
                               batch_size=BATCH, patience=PATIENCE, seed=0, desc=f"marker {marker_px} px, lr {lr:g}")
        val = np.flatnonzero(split == 1)
        accuracy = float(np.mean(np.asarray(training.predict(model, data["images"][val])).argmax(1)
                                 == data["labels"][val]))
        rows.append({"marker_px": marker_px, "area_share": marker_px ** 2 / images.shape[1] ** 2, "lr": lr,
                     "validation_accuracy": accuracy, "epochs_run": len(history["epoch"]),
                     "validation_loss": [round(float(v), 4) for v in history["val_loss"]],
                     "seconds": round(time.perf_counter() - started, 1)})
        print(f"marker {marker_px:2d} px ({100 * rows[-1]['area_share']:.1f} % of the patch), lr {lr:g}: validation "
              f"accuracy {accuracy:.3f} after {rows[-1]['epochs_run']} epochs", flush=True)
    out = ROOT / "benchmarks" / "results" / "planted_marker_size.json"
    out.write_text(json.dumps({"configuration": env.configuration(), "epochs": EPOCHS, "batch_size": BATCH,
                               "patience": PATIENCE, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
