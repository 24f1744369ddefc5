"""CLAM: helpers.methods.sarcoidosis.clam's batched channel scoring (all (image, channel) masked copies through the model in large
batches) vs a one-channel-at-a-time loop (one forward pass per masked copy) vs pytorch-grad-cam's ScoreCAM
(batches of 16 channels, one image at a time), on the paper-004 clustering model and simulated CT slices.
Checks the maps agree (CLAM batched vs loop; ScoreCAM vs our scores with ScoreCAM's softmax weighting) and
prints the speed ratios. On demand, never in CI:

    .venv/bin/python benchmarks/clam_benchmark.py                    # notebook widths (32 channels), 40 slices
    .venv/bin/python benchmarks/clam_benchmark.py --channels 32 64 128 --images 10   # the paper's widths
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import best_of as timed  # noqa: E402  (benchmarks/ is the script's folder)
from helpers import features, models  # noqa: E402
from helpers.simulate import ct  # noqa: E402
from helpers.methods.sarcoidosis import clam, dec  # noqa: E402


def main(channels, n_images: int, k: int, batch_size: int, seed: int):
    from pytorch_grad_cam import ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    sim = ct.simulate_ct_scenario("location", k, n=max(n_images, 2 * k), seed=seed)
    x = sim.unit[:n_images]
    ae = dec.ConvAutoencoder(x.shape[1:], channels=channels, seed=seed)
    dec.pretrain(ae, sim.unit, epochs=3, batch_size=32, seed=seed, device="cpu")
    dec.standardise_latent(ae, dec.embed(ae, sim.unit, device="cpu"))
    _, centres = dec.kmeans(dec.embed(ae, sim.unit, device="cpu"), k, seed)
    model = dec.ClusterModel(ae, centres).eval()
    clusters = dec.predict_q(model, x, device="cpu").argmax(1)
    acts = torch.from_numpy(features.layer_activations(model, clam.DEFAULT_LAYER, torch.as_tensor(x), device="cpu"))
    print(f"{n_images} slices of 64×64, {acts.shape[1]} channels at {tuple(acts.shape[2:])}, K = {k}, "
          f"{torch.get_num_threads()} threads")

    batched, t_batched = timed(lambda: clam.channel_scores(model, x, clusters, batch_size=batch_size, device="cpu"))
    loop, t_loop = timed(lambda: clam.channel_scores_loop(model, x, clusters, device="cpu"))
    fast, t_fast = timed(lambda: clam.channel_scores(model, x, clusters, batch_size=batch_size, device="cpu",
                                                     bfloat16=True))
    maps_batched = clam.combine(acts, batched, x.shape[2:]).numpy()
    maps_fast = clam.combine(acts, fast, x.shape[2:]).numpy()
    maps_loop = clam.combine(acts, loop, x.shape[2:]).numpy()
    corr = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps_batched, maps_loop))
    corr_fast = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps_fast, maps_loop))

    layer = models.get_layer(model, clam.DEFAULT_LAYER)
    with ScoreCAM(model=model, target_layers=[layer]) as cam:
        cam.batch_size = 16
        targets = [ClassifierOutputTarget(int(c)) for c in clusters]
        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):     # ScoreCAM prints a tqdm bar per image
            scorecam, t_scorecam = timed(lambda: cam(input_tensor=torch.from_numpy(x), targets=targets))
    ours_softmax = clam.combine(acts, torch.softmax(batched, 1), x.shape[2:]).numpy()
    corr_scorecam = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(ours_softmax, scorecam))

    print(f"batched CLAM (batch {batch_size}):  {t_batched:7.2f} s")
    print(f"per-channel loop:          {t_loop:7.2f} s   → batched is {t_loop / t_batched:5.1f}× faster; "
          f"min map correlation {corr:.6f}")
    print(f"batched, bfloat16 autocast: {t_fast:6.2f} s   → {t_loop / t_fast:5.1f}× faster than the loop; "
          f"min map correlation with the float32 loop {corr_fast:.6f}")
    print(f"pytorch-grad-cam ScoreCAM: {t_scorecam:7.2f} s   → batched is {t_scorecam / t_batched:5.1f}× faster; "
          f"min correlation with our scores under ScoreCAM's softmax weighting {corr_scorecam:.6f}")
    return {"loop_ratio": t_loop / t_batched, "loop_ratio_bf16": t_loop / t_fast, "scorecam_ratio":
            t_scorecam / t_batched, "corr": corr, "corr_bf16": corr_fast, "corr_scorecam": corr_scorecam}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, nargs=3, default=[8, 16, 32])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(tuple(args.channels), args.images, args.k, args.batch_size, args.seed)
