"""What the "portable" numeric mode costs per model the notebooks train: one training step, native vs portable.

The portable mode (helpers.env) turns oneDNN off so that convolutions go through MKL's strict AVX2 path and give the
same bits on every Intel machine. numeric_modes.py measured its cost on notebook 02's grading CNN (2.3× per step).
The other models differ in what they convolve: the EfficientNet-Lite0 of notebook 06 is built of depthwise
convolutions, which without oneDNN run channel by channel (thousands of small NNPACK calls per step), so its cost is
measured here rather than assumed. Each row times one training step (forward, backward, AdamW) of the default preset's
model at its default batch and input size, in a fresh process per mode with the mode's variables set before Python
starts, and reports the median of the timed steps and the ratio portable / native. Run it on an idle machine: with a
second heavy job on the same cores, OpenMP's spinning threads make both many times slower (more than 20× here).

    .venv/bin/python benchmarks/portable_cost.py           # about 5 minutes on 2 cores

Writes benchmarks/results/portable_cost.json. Measured (Intel Xeon, 2 cores, idle): see benchmarks/README.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARMUP, TIMED = 2, 5
# name → (notebook, batch, input size): the default presets' models at their training batch and patch size
MODELS = {"tile_classifier (VGG-16 ×0.125, BN)": ("02, 03, 04", 32, 128),
          "grading CNN (paper 001)": ("02, 05", 64, 96),
          "U-Net (paper 001)": ("02, 05", 16, 96),
          "RegressionNet (EfficientNet-Lite0, thesis 003)": ("06", 16, 96)}


def build(name: str):
    from helpers import models

    if name.startswith("tile_classifier"):
        return models.VGG16TileClassifier(0.125, True), lambda out: out.sum()
    if name.startswith("grading"):
        return models.GradingCNN(7, 96), lambda out: out.logsumexp(1).sum()
    if name.startswith("U-Net"):
        return models.UNet(2, 16, 3), lambda out: out.sum()
    backbone, channels = models.regression_backbone("efficientnet_lite0", ROOT / "data")
    return models.RegressionNet(backbone, channels, ("md", "fa"), 256, 64, 0.1), \
        lambda out: sum(o.sum() for o in (out.values() if isinstance(out, dict) else [out]))


def worker(name: str) -> dict:
    """Time one model's training step in this process (its numeric mode is in the environment)."""
    import torch

    from helpers import env

    env.setup(0, "auto", verbose=False)
    net, loss_of = build(name)
    net.train()
    _, batch, size = MODELS[name]
    x = torch.rand(batch, 3, size, size)
    optimiser = torch.optim.AdamW(net.parameters(), 1e-3)

    def step():
        optimiser.zero_grad()
        loss_of(net(x)).backward()
        optimiser.step()

    for _ in range(WARMUP):
        step()
    times = []
    for _ in range(TIMED):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return {"median_step_s": sorted(times)[TIMED // 2], "best_step_s": min(times),
            "mode": env.numeric_mode(), "torch_threads": torch.get_num_threads()}


def run(name: str, mode: str) -> dict:
    sys.path.insert(0, str(ROOT))
    from helpers import env

    environment = {k: v for k, v in os.environ.items() if k not in env.numeric_environment("portable")}
    environment |= env.numeric_environment(mode) | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, __file__, "--worker", name], capture_output=True, text=True, env=environment,
                          cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} in {mode}: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from helpers import env

    rows = []
    for name, (notebooks, batch, size) in MODELS.items():
        native, portable = run(name, "native"), run(name, "portable")
        rows.append({"model": name, "notebooks": notebooks, "batch": batch, "input_px": size,
                     "native_step_s": native["median_step_s"], "portable_step_s": portable["median_step_s"],
                     "portable_over_native": portable["median_step_s"] / native["median_step_s"]})
        print(f"{name:48s} native {native['median_step_s']:.3f} s, portable {portable['median_step_s']:.3f} s per step: "
              f"{rows[-1]['portable_over_native']:.1f}×", flush=True)
    out = ROOT / "benchmarks" / "results" / "portable_cost.json"
    out.write_text(json.dumps({"about": __doc__.split("\n\n")[0], "machine": env.processor_name(),
                               "cpu_count": os.cpu_count(), "rows": rows}, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(worker(sys.argv[2])))
        sys.exit(0)
    sys.exit(main())
