"""Between notebook 07's "paper" cohort and its "hard" one: where does k-means on the raw voxels stop finding the
two planted disease patterns, and does the deep clustering still find them there?

Issue 32 (item 6) asks for a clustering baseline and a simulator variant where that baseline falls below an adjusted
Rand index (ARI) of 0.9. On the "paper" variant every clustering finds the patterns (ARI 1.0); on the "hard" one none
does (DEC −0.02, raw k-means −0.02 in notebook 07's default run). A control is informative only in between. This study
walks the nuisance strength of ``ct.simulate_cohort(nuisance=...)`` from 0 (paper) to 1 (hard) with notebook 07's
cohort pipeline at its default settings (60 subjects at 48³, 6 mm; a SyN template from 10 % of the subjects, at most
6 rounds, tolerance 0.05; every subject registered to it; lung voxels in [0, 1]) and, per strength:

- k-means on the first 20 principal components of the registered raw voxels at K = 2 (the true number of patterns);
- notebook 07's deep clustering: the 3-D CAE (channels 8/16/32, latent 60, 20 epochs), K by the silhouette over
  2–6, DEC's clustering phase (at most 10 epochs, the loss rule), and its starting point (k-means on the embedding);
- raw k-means again at DEC's K, the comparison the notebook makes.

    eval "$(.venv/bin/python -m helpers.env --export)"     # the numeric mode the notebooks run in
    .venv/bin/python benchmarks/cohort_nuisance.py 0.8      # about 8 minutes per strength on 2 cores
    .venv/bin/python benchmarks/cohort_nuisance.py          # the whole sweep, about an hour

Results are merged into benchmarks/results/cohort_nuisance.json, one entry per strength (seed 0).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRENGTHS = (0.0, 0.5, 0.75, 0.8, 0.85, 0.9, 1.0)
N, SHAPE, SPACING_MM, SEED = 60, (48, 48, 48), 6.0, 0
RESULTS = ROOT / "benchmarks" / "results" / "cohort_nuisance.json"


def measure(strength: float, lung_hu) -> dict:
    import numpy as np
    from scipy import ndimage
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from helpers.methods.sarcoidosis import dec, registration
    from helpers.simulate import ct

    started = time.perf_counter()
    volumes, lungs, table = ct.simulate_cohort(N, SHAPE, seed=SEED, lung_hu=lung_hu, nuisance=strength,
                                               progress=False)
    spacing = (SPACING_MM,) * 3
    drive = np.stack([ndimage.gaussian_filter(m.astype(np.float32), 1.0) for m in lungs])
    template, _, changes = registration.build_template(drive, spacing, sample_fraction=0.1, iterations=6,
                                                       type_of_transform="SyN", seed=SEED, tolerance=0.05)
    registered, carried = registration.register_to_template(volumes, template, spacing, "SyN",
                                                            extra=lungs.astype(np.float32), drive=drive, seed=SEED,
                                                            progress=False)
    template_lung = (carried >= 0.5).mean(0) > 0.5
    x = ct.hu_to_unit(np.where(template_lung, registered, ct.CT_BACKGROUND_HU))[:, None]
    patterns = np.asarray(table["pattern"])
    pcs = PCA(n_components=20, random_state=SEED).fit_transform(x.reshape(len(x), -1))

    def raw_ari(k):
        return float(adjusted_rand_score(patterns, dec.kmeans(pcs, k, seed=SEED)[0]))

    cae = dec.ConvAutoencoder(x.shape[1:], channels=[8, 16, 32], latent_dim=60, seed=SEED)
    dec.pretrain(cae, x, epochs=20, batch_size=8, seed=SEED, desc=f"3-D CAE, nuisance {strength:g}")
    dec.standardise_latent(cae, dec.embed(cae, x))
    k, _ = dec.choose_k(dec.embed(cae, x), [2, 3, 4, 5, 6], seed=SEED)
    fit = dec.fit_dec(cae, x, k, epochs=10, batch_size=8, gamma=0.1, seed=SEED, stop="loss", loss_tol=0.01,
                      patience=3)
    labels = fit.labels if len(np.unique(fit.labels)) > 1 else fit.initial_labels
    return {"nuisance": strength, "raw_kmeans_ari_k2": raw_ari(2), "dec_k": int(k),
            "dec_ari": float(adjusted_rand_score(patterns, labels)),
            "embedding_kmeans_ari": float(adjusted_rand_score(patterns, fit.initial_labels)),
            "raw_kmeans_ari_at_dec_k": raw_ari(k), "template_rounds": len(changes),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv) -> int:
    sys.path.insert(0, str(ROOT))
    from helpers import env
    from helpers.simulate import ct

    strengths = [float(a) for a in argv] or list(STRENGTHS)
    bad = [s for s in strengths if not 0.0 <= s <= 1.0]
    if bad:
        raise SystemExit(f"strengths {bad}: give nuisance strengths between 0 (paper) and 1 (hard).")
    env.setup(SEED, "auto")
    lung_hu = ct.real_lung_hu()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"about": __doc__.split("\n\n")[0], "runs": {}}
    for strength in strengths:
        row = measure(strength, lung_hu)
        row["machine"] = env.processor_name()
        results["runs"][f"{strength:g}"] = row
        results["runs"] = dict(sorted(results["runs"].items(), key=lambda kv: float(kv[0])))
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        print(f"nuisance {strength:g}: raw k-means ARI {row['raw_kmeans_ari_k2']:.3f} at K = 2; DEC K = {row['dec_k']}, "
              f"ARI {row['dec_ari']:.3f} (its start, k-means on the embedding, {row['embedding_kmeans_ari']:.3f}; "
              f"raw k-means at that K {row['raw_kmeans_ari_at_dec_k']:.3f}); {row['seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
