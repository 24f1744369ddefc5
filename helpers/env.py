"""The environment of a run: device selection, seeding/determinism, the version report every notebook prints, and
the checks of the folders a notebook is given (``DATA_DIR``, ``OUTPUT_DIR``)."""
from __future__ import annotations

import importlib
import os
import platform
import random
from pathlib import Path

import numpy as np

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


def setup(seed: int = 0, device: str = "auto", deterministic: bool = True, verbose: bool = True):
    """Seed everything, choose the device and print the environment report; returns the torch device."""
    import torch

    seed_everything(seed, deterministic)
    dev = select_device(device)
    if verbose:
        info = versions()
        print(f"device: {dev}  (requested {device!r}); seed: {seed}; torch threads: {torch.get_num_threads()}")
        print(f"platform: {platform.platform()}  cpu count: {os.cpu_count()}")
        print("versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    return dev


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
