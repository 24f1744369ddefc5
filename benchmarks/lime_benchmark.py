"""LIME: helpers.explain's batched perturbations vs lime_image with its defaults (batch_size=10, a Python loop
over segments per perturbed image), at the same num_samples, seed and segmentation, on the paper-001 grading CNN
and simulated grading patches. Checks that both give the same top segments, prints the speed ratio (best of
3 timings per side). On demand, never in CI:

    .venv/bin/python benchmarks/lime_benchmark.py                  # 6 patches × 1000 samples
    .venv/bin/python benchmarks/lime_benchmark.py --patches 2 --samples 300
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import best_of  # noqa: E402  (benchmarks/ is the script's folder)
from helpers import explain, models  # noqa: E402
from helpers.simulate import histology  # noqa: E402


def main(n_patches: int, num_samples: int, num_features: int, seed: int, repeats: int = 3):
    from lime import lime_image

    torch.manual_seed(seed)
    model = models.GradingCNN(7, input_size=96).eval()        # random weights: the cost is the same as trained
    images = np.stack([histology.render_grade_patch(seed + i, 2 + i % 5).rgb for i in range(n_patches)])
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()

    def classifier_fn(batch):
        xb = torch.as_tensor(batch, dtype=torch.float32).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(model(xb), 1).double().numpy()

    def lime_image_defaults():
        reference = []
        for i in range(n_patches):
            exp = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
                x[i].permute(1, 2, 0).numpy().astype(np.float64), classifier_fn, labels=(targets[i],),
                top_labels=None, num_features=num_features, num_samples=num_samples,
                segmentation_fn=explain.lime_segmentation(seed), random_seed=seed)
            reference.append((exp.segments, [f for f, w in exp.local_exp[targets[i]][:num_features] if w > 0]))
        return reference

    reference, t_lime = best_of(lime_image_defaults, repeats)
    print(f"{n_patches} patches of 96 px, {num_samples} perturbations each, top {num_features} segments, "
          f"best of {repeats} timings per side")
    print(f"lime_image (batch_size=10): {t_lime:.1f} s")
    result = {"patches": n_patches}
    for precision in ("float32", "bfloat16"):
        # one call for all patches, one target each, as notebook 05 calls it
        ours, t_ours = best_of(lambda: explain.lime_maps(model, x, targets, num_samples=num_samples,
                                                         num_features=num_features, seed=seed,
                                                         precision=precision), repeats)
        same = sum(set(np.unique(seg[ours[i] > 0])) == set(top) for i, (seg, top) in enumerate(reference))
        print(f"batched, {precision}: {t_ours:.1f} s → {t_lime / t_ours:.1f}× faster; same top segments on {same} "
              f"of {n_patches} patches")
        result[precision] = {"ratio": t_lime / t_ours, "same_top_segments": same}
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=6)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timings per side; the best counts")
    args = parser.parse_args()
    main(args.patches, args.samples, args.features, args.seed, args.repeats)
