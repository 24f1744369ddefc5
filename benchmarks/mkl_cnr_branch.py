"""Does MKL honour its reproducibility branch (MKL_CBWR) on this processor?

The "portable" numeric mode (helpers.env) relies on ``MKL_CBWR=AVX2,STRICT`` to make MKL compute the same bits on
every machine. This script runs one matrix product and one convolution (forward and backward, oneDNN off, torch's
AVX2 kernels, two threads, as in "portable") in a fresh process per MKL_CBWR setting and prints a hash of the
results and the branch MKL reports having run (MKL_VERBOSE's ``CNR:`` field). The branch is honoured when MKL reports
AVX2 under AVX2,STRICT; where it is not, every setting except COMPATIBLE gives the hash of MKL's own choice.

    .venv/bin/python benchmarks/mkl_cnr_branch.py

Measured on an AMD EPYC (2 cores, oneMKL 2024.0 in torch 2.14.1): AVX2,STRICT, AVX2, SSE4_2, AUTO and no setting
gave one hash and MKL_VERBOSE reported ``CNR:AUTO,STRICT`` under AVX2,STRICT; only COMPATIBLE differed. So on that
processor the portable mode does not reach the bits of an Intel machine, and helpers.env keeps the vendor in the
configuration there. Measured on an Intel Xeon: the branch is honoured (``CNR:AVX2,STRICT``), and the AMD machine's
hash of the product and the convolution equals this one's under AVX2,STRICT (and under COMPATIBLE), so those two
operations do not explain why training differs on AMD; the per-shape hashes (each linear layer and convolution of
the default grading CNN) will name the operations that do when the script runs there.

Writes benchmarks/results/mkl_cnr_branch_<vendor>.json and compares each setting's hash with
the ones recorded on the other vendors' processors: a setting whose hash is the same everywhere is a candidate for
a numeric mode that gives the same bits across vendors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("AVX2,STRICT", "AVX2", "SSE4_2", "AUTO", None, "COMPATIBLE", "COMPATIBLE,STRICT", "AVX512,STRICT")
PROBE = """
import hashlib, json, torch
torch.backends.mkldnn.enabled = False
torch.manual_seed(0)
a, b = torch.randn(257, 300), torch.randn(300, 129)
x = torch.randn(4, 3, 32, 32, requires_grad=True)
w = torch.randn(8, 3, 5, 5, requires_grad=True)
y = torch.nn.functional.conv2d(x, w, padding=2)
y.sum().backward()
digest = lambda *ts: hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for t in ts)).hexdigest()[:16]
found = {"hash": digest(a @ b, y, w.grad)}
# one hash per operation, at the shapes of the default grading CNN (models.GradingCNN, 96 px, batch 32): its seven
# linear layers (forward and both backward products) and its three convolutions (forward and both gradients);
# where two processors differ, these name the operations that differ
for m, k, n in [(32, 7744, 512), (32, 512, 256), (32, 256, 128), (32, 128, 64), (32, 64, 32), (32, 32, 16),
                (32, 16, 7)]:
    left, right = torch.randn(m, k), torch.randn(k, n)
    found[f"mm {m}x{k}x{n}"] = digest(left @ right, left.T.contiguous().T @ right, right.T @ left.T)
for batch, c_in, c_out, size, kernel in [(32, 3, 16, 96, 3), (32, 16, 32, 47, 5), (32, 32, 64, 23, 5)]:
    x = torch.randn(batch, c_in, size, size, requires_grad=True)
    w = torch.randn(c_out, c_in, kernel, kernel, requires_grad=True)
    y = torch.nn.functional.conv2d(x, w, padding=kernel // 2)
    (y * torch.randn_like(y)).sum().backward()
    found[f"conv {c_in}->{c_out} at {size}px"] = digest(y, x.grad, w.grad)
left, right = torch.randn(513, 700), torch.randn(700, 301)
for threads in (1, 2):
    torch.set_num_threads(threads)
    found[f"mm 513x700x301, {threads} thread(s)"] = digest(left @ right)
print(json.dumps(found))
"""


def run(setting):
    variables = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    variables.update({"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    if setting is not None:
        variables["MKL_CBWR"] = setting
    found = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=variables, capture_output=True, text=True,
                                      check=True).stdout)
    verbose = subprocess.run([sys.executable, "-c", PROBE], env={**variables, "MKL_VERBOSE": "1"},
                             capture_output=True, text=True, check=True).stdout
    branch = next((part.split(":", 1)[1] for line in verbose.splitlines() if "GEMM" in line
                   for part in line.split() if part.startswith("CNR:")), "?")
    return found, branch


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from helpers import env

    rows = {}
    for setting in SETTINGS:
        found, branch = run(setting)
        rows[setting or "(not set)"] = {**found, "mkl_cnr_branch": branch}
        print(f"MKL_CBWR={setting or '(not set)':<18} hash {found['hash']}  MKL_VERBOSE CNR:{branch}")
    honoured = rows["AVX2,STRICT"]["mkl_cnr_branch"].startswith("AVX2")
    print(f"processor vendor {env.processor_vendor()}: MKL's AVX2 branch is "
          f"{'honoured' if honoured else 'NOT honoured (MKL runs its own choice)'}")
    results = ROOT / "benchmarks" / "results"
    vendor = env.processor_vendor()
    for other in sorted(results.glob("mkl_cnr_branch_*.json")):
        recorded = json.loads(other.read_text())
        if recorded["processor_vendor"] == vendor:
            continue
        name = f"{recorded['processor_vendor']} ({recorded.get('processor', 'model not recorded')})"
        for setting, row in rows.items():
            theirs = recorded["rows"].get(setting)
            if theirs is None:
                continue
            shared = [op for op in row if op != "mkl_cnr_branch" and op in theirs]
            differ = [op for op in shared if theirs[op] != row[op]]
            print(f"MKL_CBWR={setting:<18} vs {name}: {len(shared) - len(differ)} of {len(shared)} operations give "
                  f"the same bits" + (f"; differ: {', '.join(differ)}" if differ else ""))
    out = results / f"mkl_cnr_branch_{vendor}.json"
    out.write_text(json.dumps({"processor_vendor": vendor, "processor": env.processor_name(), "honoured": honoured,
                               "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
