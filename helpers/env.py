"""The environment of a run: device selection, seeding/determinism, the numeric mode (which CPU kernels compute),
the version report every notebook prints, and the checks of the folders a notebook is given (``DATA_DIR``,
``OUTPUT_DIR``).

Numeric mode. The same seed gives the same numbers on one machine, but the fast CPU kernels of MKL, oneDNN,
OpenBLAS, numpy and torch pick their code path (and their order of summation) by processor, by cache size and by
thread count, so a network trained on another processor ends up elsewhere (measured: benchmarks/numeric_modes.py).
``"portable"`` (the default on x86-64) pins every one of those choices — MKL's AVX2 path in its strict
reproducibility mode, torch's AVX2 kernels without oneDNN, OpenBLAS's Haswell kernels, numpy without its AVX-512
loops, two threads everywhere — so that any Intel x86-64 machine with AVX2 computes the same bits. MKL honours its
reproducibility branch on Intel processors only: on an AMD EPYC, ``MKL_VERBOSE`` reports ``CNR:AUTO`` under
``MKL_CBWR=AVX2,STRICT``, and a trained network differs from the Intel one (notebook 05's smoke grading CNN: test
accuracy 0.14 against 0.48). There the processor's vendor is part of the configuration, so a run is compared with
the reference within the measured spread instead of bit for bit. ``"native"`` lets each
library take the fastest path of the machine (the only choice on arm64 / macOS and on GPUs). Choose with
``XAI_NUMERIC_MODE`` in the environment that starts Python, or ``setup(numeric_mode=...)``. Some settings are read
once, when numpy or torch first load their kernels: the runner and the ``xai-medimg`` kernel set them before that;
``setup`` applies the rest and warns about anything it could not pin.
"""
from __future__ import annotations

import functools
import importlib
import os
import platform
import random
from pathlib import Path

_REPORTED_PACKAGES = (
    "numpy", "scipy", "torch", "torchvision", "timm", "captum", "pytorch_grad_cam", "lime", "sklearn",
    "skimage", "nibabel", "pydicom", "dipy", "ants", "tifffile", "zarr", "dask", "matplotlib", "papermill",
)


def select_device(device: str = "auto"):
    """Return a ``torch.device``: "auto" picks cuda, then mps, then cpu; anything else is taken as given."""
    import torch

    if device is None or str(device).lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"DEVICE={device!r} is not a torch device name; use 'auto', 'cpu', 'cuda' or 'mps'.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} but no CUDA GPU is visible; set DEVICE='auto' or 'cpu'.")
    return dev


def seed_everything(seed: int = 0, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with ``deterministic`` also ask torch for deterministic kernels."""
    import numpy as np
    import torch

    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"SEED must be a non-negative integer, got {seed!r}.")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matrix products on GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        if hasattr(torch.backends, "cudnn"):
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True


def versions() -> dict[str, str]:
    """Versions of python and of the libraries the notebooks rely on ("missing" when not importable)."""
    found = {"python": platform.python_version()}
    for name in _REPORTED_PACKAGES:
        try:
            module = importlib.import_module(name)
            found[name] = str(getattr(module, "__version__", "installed"))
        except Exception:  # noqa: BLE001 - a broken optional import must not stop the report
            found[name] = "missing"
    return found


# ------------------------------------------------------------------------------------------ numeric mode
NUMERIC_MODES = ("portable", "native")
NUMERIC_MODE_VARIABLE = "XAI_NUMERIC_MODE"
# one count on every machine: torch's reductions and OpenBLAS's products split their work by thread count
PORTABLE_THREADS = 2
# numpy's AVX-512 loops (exp, log, sorting …) round differently from its AVX2 ones; disabling a feature the processor
# lacks is harmless, so one list serves every x86-64 machine
_NUMPY_AVX512 = ("AVX512F", "AVX512CD", "AVX512_KNL", "AVX512_KNM", "AVX512_SKX", "AVX512_CLX", "AVX512_CNL",
                 "AVX512_ICL", "AVX512_SPR")


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@functools.lru_cache(maxsize=None)
def has_avx2() -> bool:
    """Whether this x86-64 processor has AVX2 and FMA, which every kernel "portable" pins needs (Linux reads
    /proc/cpuinfo; elsewhere every 64-bit x86 Mac since 2013 has them)."""
    if not is_x86_64():
        return False
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return True
    return {"avx2", "fma"} <= set(flags.split())


def numeric_mode(requested: str | None = None) -> str:
    """The numeric mode in force: ``requested``, else ``$XAI_NUMERIC_MODE``, else "portable" on x86-64 with AVX2 and
    "native" elsewhere."""
    mode = requested or os.environ.get(NUMERIC_MODE_VARIABLE) or ("portable" if has_avx2() else "native")
    mode = str(mode).strip().lower()
    if mode not in NUMERIC_MODES:
        raise ValueError(f"numeric mode {mode!r} (from {'the argument' if requested else NUMERIC_MODE_VARIABLE}) is "
                         f"not one of {NUMERIC_MODES}; use 'portable' (same bits on every Intel x86-64 machine) or 'native'.")
    if mode == "portable" and not has_avx2():
        raise ValueError(f"numeric mode 'portable' pins x86-64 AVX2 kernels, but this is {platform.machine()}"
                         f"{'' if not is_x86_64() else ' without AVX2'}; set {NUMERIC_MODE_VARIABLE}=native (numbers are "
                         "then compared within the measured tolerance).")
    return mode


def numeric_environment(mode: str | None = None) -> dict[str, str]:
    """The environment variables of ``mode`` that the libraries read when they load (set them before Python starts,
    or before the first numpy / torch import). "native" sets only the mode's own name."""
    mode = numeric_mode(mode)
    variables = {NUMERIC_MODE_VARIABLE: mode}
    if mode == "portable":
        threads = str(PORTABLE_THREADS)
        variables.update({
            "MKL_CBWR": "AVX2,STRICT",        # MKL: its AVX2 path on every CPU, products independent of thread count
            "ATEN_CPU_CAPABILITY": "avx2",    # torch's own vectorised kernels
            "NPY_DISABLE_CPU_FEATURES": " ".join(_NUMPY_AVX512),
            # numpy's and scipy's OpenBLAS: Haswell (AVX2) kernels; a machine that sets OPENBLAS_CORETYPE itself (some
            # processors need it for correct results with older builds) keeps its own value
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "Haswell"),
            "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        })
    return variables


def apply_numeric_mode(mode: str | None = None, threads: bool = True) -> dict:
    """Put ``mode`` into effect in this process as far as it still can be, and report what is in effect.

    Sets the mode's environment variables (read by libraries not loaded yet), then torch's run-time switches
    (oneDNN off in "portable", and with ``threads`` the thread count of torch and of the BLAS libraries). Returns
    ``{"mode", "in_effect", "not_pinned"}``; ``not_pinned`` lists what was loaded earlier with other settings (a
    warning says how to start Python with the mode set)."""
    import warnings

    import torch

    mode = numeric_mode(mode)
    variables = numeric_environment(mode)
    os.environ.update(variables)
    not_pinned = []
    in_effect = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if mode == "portable":
        # without oneDNN, convolutions and products go through MKL, whose strict mode gives the same bits everywhere
        torch.backends.mkldnn.enabled = False
        if threads:
            torch.set_num_threads(PORTABLE_THREADS)
            try:
                from threadpoolctl import threadpool_limits

                threadpool_limits(PORTABLE_THREADS)
            except ImportError:
                pass
        if in_effect["torch_cpu_capability"] != "AVX2":
            not_pinned.append(f"torch kernels are {in_effect['torch_cpu_capability']}, not AVX2")
    in_effect.update(_numeric_state())
    if mode == "portable":
        if in_effect["numpy_avx512"]:
            not_pinned.append("numpy was imported with its AVX-512 loops")
        wrong_core = [c for c in in_effect["openblas_core"] if c.lower() != variables["OPENBLAS_CORETYPE"].lower()]
        if wrong_core:
            not_pinned.append(f"OpenBLAS runs {', '.join(sorted(set(wrong_core)))} kernels")
    if not_pinned:
        warnings.warn(f"numeric mode 'portable' is not fully in effect: {'; '.join(not_pinned)} (these are chosen when "
                      "the library loads). Numbers may differ from the recorded ones in the last digits and, after "
                      "training, more. Run the notebook with the 'Python (xai-medimg)' kernel or `python -m "
                      "helpers.runner`, or start Python with the mode's variables (`eval \"$(python -m helpers.env "
                      "--export)\"`).", RuntimeWarning, stacklevel=2)
    return {"mode": mode, "in_effect": in_effect, "not_pinned": not_pinned}


def _numeric_state() -> dict:
    """Which kernels the already-loaded libraries use: thread counts, numpy's AVX-512 loops, OpenBLAS core types."""
    import torch

    state = {"torch_threads": torch.get_num_threads(), "onednn": bool(torch.backends.mkldnn.enabled),
             "numpy_avx512": None, "openblas_core": []}
    try:
        import numpy as np

        features = np._core._multiarray_umath.__cpu_features__
        state["numpy_avx512"] = any(features.get(name) for name in _NUMPY_AVX512)
    except AttributeError:     # another numpy layout: report nothing rather than guess
        pass
    try:
        from threadpoolctl import threadpool_info

        state["openblas_core"] = [str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"]
    except ImportError:
        pass
    return state


def configuration(mode: str | None = None) -> dict:
    """What decides the bits of a run, for comparing a run with a reference: the numeric mode, the platform and the
    versions of the numeric libraries. In "portable" mode the processor is left out on Intel processors (it does not
    matter there) and its vendor is kept on others, where MKL ignores the reproducibility branch; in "native" mode the
    processor is part of the configuration."""
    mode = numeric_mode(mode)
    settings = () if mode == "portable" else tuple((k, os.environ[k]) for k in _NATIVE_SETTINGS if k in os.environ)
    return dict(_configuration(mode, settings))


# in "native" mode, the variables that choose kernels or thread counts are part of the configuration
_NATIVE_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                    "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OPENBLAS_CORETYPE",
                    "NPY_DISABLE_CPU_FEATURES")


@functools.lru_cache(maxsize=None)
def _configuration(mode: str, settings: tuple) -> tuple:
    found = _find_configuration(mode)
    found.update({f"env {k}": v for k, v in settings})
    return tuple(found.items())


def _find_configuration(mode: str) -> dict:
    import importlib.metadata as md

    found = {"numeric_mode": mode, "system": platform.system(), "machine": platform.machine()}
    for name in ("numpy", "scipy", "torch", "torchvision", "scikit-learn", "scikit-image", "timm"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = "missing"
    if mode == "native":
        found["processor"] = processor_name()
        found["threads"] = os.cpu_count()
    elif processor_vendor() not in ("GenuineIntel", "unknown"):
        found["processor_vendor"] = processor_vendor()
    return found


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in Linux's /proc/cpuinfo (None elsewhere or when absent)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.lru_cache(maxsize=None)
def processor_vendor() -> str:
    """The x86 processor's vendor as Linux reports it ("GenuineIntel", "AuthenticAMD"), "unknown" elsewhere. MKL's
    strict reproducibility branch (``MKL_CBWR``), which "portable" relies on, is honoured on Intel processors only."""
    return _cpuinfo("vendor_id") or "unknown"


def processor_name() -> str:
    """The processor's model name as Linux reports it (platform.processor() elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def setup(seed: int = 0, device: str = "auto", deterministic: bool = True, verbose: bool = True,
          numeric_mode: str | None = None):
    """Seed everything, put the numeric mode into effect, choose the device and print the environment report;
    returns the torch device."""
    import torch

    numeric = apply_numeric_mode(numeric_mode)
    seed_everything(seed, deterministic)
    dev = select_device(device)
    if verbose:
        info = versions()
        state = numeric["in_effect"]
        print(f"device: {dev}  (requested {device!r}); seed: {seed}; torch threads: {torch.get_num_threads()}")
        print(f"numeric mode: {numeric['mode']}  (torch {state['torch_cpu_capability']} kernels, oneDNN "
              f"{'on' if state['onednn'] else 'off'}, OpenBLAS {'/'.join(sorted(set(state['openblas_core']))) or '?'}, "
              f"numpy AVX-512 loops {'on' if state['numpy_avx512'] else 'off'})")
        if numeric["mode"] == "portable" and processor_vendor() not in ("GenuineIntel", "unknown"):
            print(f"  MKL ignores its reproducibility branch on this {processor_vendor()} processor: trained models "
                  "differ from the Intel reference, and runs are compared within the spread measured for it")
        print(f"platform: {platform.platform()}  cpu count: {os.cpu_count()}")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return dev


def _main(argv=None) -> int:
    """``python -m helpers.env --export``: the mode's variables as shell exports; ``python -m helpers.env kernel -f
    FILE``: start an IPython kernel with them set before numpy or torch load (the ``xai-medimg`` kernelspec)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--export"]:
        for name, value in numeric_environment().items():
            print(f"export {name}='{value}'")
        return 0
    if args[:1] == ["kernel"]:
        os.environ.update(numeric_environment())
        os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args[1:]])
    print("usage: python -m helpers.env --export | kernel -f CONNECTION_FILE", file=sys.stderr)
    return 2


# ------------------------------------------------------------------------------------------ folders
def ensure_writable_dir(path, what: str = "directory", create: bool = True) -> Path:
    """Return ``path`` as a Path after checking it is (or can be made) a writable directory."""
    if path is None or str(path).strip() == "":
        raise ValueError(f"{what} is empty; set it in the notebook's parameters cell.")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what}={str(path)!r} is a file, not a directory; point {what} at a folder.")
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{what}={str(path)!r} does not exist; create it or set {what} to an existing folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"{what}={str(path)!r} cannot be created ({err.strerror}); "
                                  f"set {what} to a folder you can write to.") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}={str(path)!r} is not writable; set {what} to a folder you can write to.")
    return path


def check_data_dir(data_dir) -> Path:
    """DATA_DIR must exist and be writable (caches go to DATA_DIR/cache); returns the cache root."""
    root = ensure_writable_dir(data_dir, what="DATA_DIR", create=False)
    cache_root = root / "cache"
    cache_root.mkdir(exist_ok=True)
    return cache_root


if __name__ == "__main__":
    raise SystemExit(_main())
