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
configuration there. Writes benchmarks/results/mkl_cnr_branch.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ("AVX2,STRICT", "AVX2", "SSE4_2", "AUTO", None, "COMPATIBLE")
PROBE = """
import hashlib, torch
torch.backends.mkldnn.enabled = False
torch.manual_seed(0)
a, b = torch.randn(257, 300), torch.randn(300, 129)
x = torch.randn(4, 3, 32, 32, requires_grad=True)
w = torch.randn(8, 3, 5, 5, requires_grad=True)
y = torch.nn.functional.conv2d(x, w, padding=2)
y.sum().backward()
print(hashlib.sha256((a @ b).numpy().tobytes() + y.detach().numpy().tobytes() + w.grad.numpy().tobytes()).hexdigest()[:16])
"""


def run(setting):
    variables = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    variables.update({"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    if setting is not None:
        variables["MKL_CBWR"] = setting
    digest = subprocess.run([sys.executable, "-c", PROBE], env=variables, capture_output=True, text=True,
                            check=True).stdout.strip()
    verbose = subprocess.run([sys.executable, "-c", PROBE], env={**variables, "MKL_VERBOSE": "1"},
                             capture_output=True, text=True, check=True).stdout
    branch = next((part.split(":", 1)[1] for line in verbose.splitlines() if "GEMM" in line
                   for part in line.split() if part.startswith("CNR:")), "?")
    return digest, branch


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from helpers import env

    rows = {}
    for setting in SETTINGS:
        digest, branch = run(setting)
        rows[setting or "(not set)"] = {"hash": digest, "mkl_cnr_branch": branch}
        print(f"MKL_CBWR={setting or '(not set)':<12} hash {digest}  MKL_VERBOSE CNR:{branch}")
    honoured = rows["AVX2,STRICT"]["mkl_cnr_branch"].startswith("AVX2")
    print(f"processor vendor {env.processor_vendor()}: MKL's AVX2 branch is "
          f"{'honoured' if honoured else 'NOT honoured (MKL runs its own choice)'}")
    out = ROOT / "benchmarks" / "results" / "mkl_cnr_branch.json"
    out.write_text(json.dumps({"processor_vendor": env.processor_vendor(), "honoured": honoured, "rows": rows},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
