"""NMF: helpers.methods.concepts (torch HALS) vs scikit-learn on the same activation-like matrix; and a streamed fit of
a matrix on disk with its peak memory. Prints ratios; run on demand, never in CI:

    .venv/bin/python benchmarks/nmf_benchmark.py                 # 100 000 × 512 and 4 000 000 × 512
    .venv/bin/python benchmarks/nmf_benchmark.py --rows 20000 --stream-rows 400000   # quick look
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import best_of  # noqa: E402  (benchmarks/ is the script's folder)
from helpers.methods import concepts  # noqa: E402


def activation_like(n, c=512, k=6, seed=0, sparsity_shift=0.6):
    """Low-rank non-negative structure plus noise, then ReLU: about half the entries are exactly zero. The
    structure (the k patterns) is the same for every ``seed``; ``seed`` draws the rows."""
    h = np.random.default_rng(12345).gamma(0.3, 1.0, (k, c)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, c), np.float32)
    for start in range(0, n, 200_000):
        rows = min(200_000, n - start)
        w = rng.gamma(0.5, 1.0, (rows, k)).astype(np.float32)
        block = w @ h + rng.normal(0, 0.5, (rows, c)).astype(np.float32) - sparsity_shift
        out[start: start + rows] = np.maximum(block, 0)
    return out


def in_memory(rows, k, repeats: int = 3):
    from sklearn.decomposition import NMF as SklearnNMF
    from sklearn.decomposition import non_negative_factorization

    V = activation_like(rows)
    print(f"matrix {V.shape}, {np.mean(V == 0):.0%} zeros, K = {k}; best of {repeats} timings each")

    def fit_sklearn():
        ref = SklearnNMF(k, random_state=0)             # scikit-learn's defaults: cd solver, nndsvda, tol 1e-4
        return ref, ref.fit_transform(V)

    (ref, W_ref), t_ref = best_of(fit_sklearn, repeats)
    e_ref = concepts.relative_error(V, W_ref, ref.components_)

    def fit_ours():
        model = concepts.NMF(k, target_error=e_ref)
        return model, model.fit_transform(V)

    (ours, W), t_ours = best_of(fit_ours, repeats)
    e_ours = concepts.relative_error(V, W, ours.components_)
    print(f"fit: scikit-learn {t_ref:.1f} s (error {e_ref:.4f}, {ref.n_iter_} it), ours {t_ours:.1f} s "
          f"(error {e_ours:.4f}, {ours.n_iter_} it) → {t_ref / t_ours:.1f}× faster; "
          f"error differs by {100 * (e_ours - e_ref) / e_ref:+.2f} %")
    H = ours.components_
    (W_skt, _, _), t_skt = best_of(lambda: non_negative_factorization(V, H=H, n_components=k, update_H=False),
                                   repeats)
    W_t, t_t = best_of(lambda: concepts.transform(V, H), repeats)
    print(f"transform (H fixed): scikit-learn {t_skt:.2f} s (error {concepts.relative_error(V, W_skt, H):.4f}), ours "
          f"{t_t:.2f} s (error {concepts.relative_error(V, W_t, H):.4f}) → {t_skt / t_t:.1f}× faster")
    return {"fit_ratio": t_ref / t_ours, "transform_ratio": t_skt / t_t, "fit_error_ours": e_ours, "fit_error_sklearn": e_ref}


STREAM_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from helpers import concepts
started = time.perf_counter()
res = concepts.fit_streamed({path!r}, {k}, passes={passes}, chunk_rows=131072, progress=False)
print(json.dumps({{"seconds": time.perf_counter() - started, "passes": res["passes"],
                  "relative_error": res["relative_error"][-1],
                  # VmHWM: this process's own peak resident memory (ru_maxrss would include the parent's at fork)
                  "peak_rss_gb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 2**20}}))
"""


def streamed(rows, k, passes):
    scratch = Path(__file__).resolve().parent.parent / "data" / "cache"   # git-ignored, next to the other caches
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        path = Path(tmp) / "V.npy"
        writer = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, 512))
        for start in range(0, rows, 500_000):
            n = min(500_000, rows - start)
            writer[start: start + n] = activation_like(n, seed=start)
        writer.flush()
        del writer
        size_gb = path.stat().st_size / 2**30
        code = STREAM_CHILD.format(root=str(Path(__file__).resolve().parent.parent), path=str(path), k=k, passes=passes)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"streamed fit of {rows:,} × 512 ({size_gb:.1f} GB on disk): {res['seconds']:.0f} s, {res['passes']} passes, "
          f"relative error {res['relative_error']:.4f}, peak memory {res['peak_rss_gb']:.2f} GB "
          f"({res['peak_rss_gb'] / size_gb:.2f} of the matrix size)")
    return res | {"matrix_gb": size_gb}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--stream-rows", type=int, default=4_000_000)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("-k", type=int, default=6)
    args = parser.parse_args()
    in_memory(args.rows, args.k)
    if args.stream_rows:
        streamed(args.stream_rows, args.k, args.passes)
