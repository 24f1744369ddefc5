"""Activations of a named layer, as feature vectors, streamed batch by batch (forward hooks)."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .data.tensors import to_tensor_images
from .cache import default_mode
from .env import select_device
from .models import get_layer


@contextmanager
def capture(model, layer_name: str):
    """Context manager: ``with capture(model, "features.relu5_3") as store:`` — after a forward pass,
    ``store["out"]`` holds the layer's output (detached)."""
    layer = get_layer(model, layer_name)
    store = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.__setitem__("out", output.detach()))
    try:
        yield store
    finally:
        handle.remove()


def iter_batches(images, batch_size: int = 64):
    """Batches of float tensors N×3×H×W in [0, 1] from N×H×W×3 uint8 images or a dataset yielding (x, y); a torch
    tensor is taken as the model's input already (any channels and dimensions) and only cut into batches."""
    if isinstance(images, torch.Tensor):
        for start in range(0, len(images), batch_size):
            yield images[start: start + batch_size]
        return
    if isinstance(images, torch.utils.data.Dataset) or (hasattr(images, "__getitem__") and hasattr(images, "__len__")
                                                       and not hasattr(images, "shape")):
        loader = torch.utils.data.DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=0)
        for x, _ in loader:
            yield x
        return
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected N×H×W×3 RGB images (channels last), got shape {arr.shape}.")
    for start in range(0, len(arr), batch_size):
        yield to_tensor_images(arr[start: start + batch_size])


@torch.no_grad()
def iter_activations(model, layer_name: str, images, batch_size: int = 64, device="auto", normalise=None):
    """Yield the layer's activations (numpy B × C × h × w float32) batch by batch; ``normalise`` maps the
    [0, 1] input batch to the model's input (e.g. ImageNet normalisation)."""
    dev = select_device(device)
    model.to(dev).eval()
    with capture(model, layer_name) as store:
        for x in iter_batches(images, batch_size):
            x = x.to(dev)
            model(normalise(x) if normalise is not None else x)
            yield store["out"].float().cpu().numpy()


def layer_activations(model, layer_name: str, images, batch_size: int = 64, device="auto", normalise=None,
                      desc: str | None = None) -> np.ndarray:
    """All activations of the layer for ``images`` (N × C × h × w); for large sets use :func:`feature_vectors`."""
    from tqdm.auto import tqdm

    n = len(images)
    total = int(np.ceil(n / batch_size))
    parts = list(tqdm(iter_activations(model, layer_name, images, batch_size, device, normalise), total=total,
                      desc=desc, leave=False, disable=desc is None))
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def feature_vectors(model, layer_name: str, images, per_tile: int | None = None, border: int = 0, seed: int = 0,
                    batch_size: int = 64, device="auto", normalise=None, out_path=None, desc: str | None = None) -> dict:
    """Feature vectors of a layer, one per spatial position of every tile (paper 000's V, n × C).

    ``per_tile`` keeps a random subset of positions per tile (seeded) so that memory stays bounded; ``border``
    drops that many positions along each tile edge. With ``out_path`` (a ``.npy`` file) the vectors are
    written to disk batch by batch instead of held in memory (for :func:`helpers.methods.concepts.fit_streamed`).
    Returns ``vectors`` (or ``path``), ``tile``, ``row``, ``col`` (position of each vector) and ``grid`` (h, w)."""
    from tqdm.auto import tqdm

    if per_tile is not None and int(per_tile) < 1:
        raise ValueError(f"per_tile={per_tile}: keep at least one position per tile, or None for all of them.")
    target = None if out_path is None else _new_npy_path(out_path)
    rng = np.random.default_rng(seed)
    chunks, tiles, rows, cols, grid = [], [], [], [], None
    writer, written, offset = None, 0, 0
    total = int(np.ceil(len(images) / batch_size))
    acts_iter = iter_activations(model, layer_name, images, batch_size, device, normalise)
    try:
        for acts in tqdm(acts_iter, total=total, desc=desc, leave=False, disable=desc is None):
            b, c, h, w = acts.shape
            grid = (h, w)
            if 2 * border >= min(h, w):
                raise ValueError(f"border={border} removes the whole {h}×{w} feature map.")
            ii, jj = np.mgrid[border: h - border, border: w - border]
            ii, jj = ii.ravel(), jj.ravel()
            for k in range(b):
                pick = np.arange(len(ii)) if per_tile is None or per_tile >= len(ii) else \
                    np.sort(rng.choice(len(ii), per_tile, replace=False))
                vec = acts[k][:, ii[pick], jj[pick]].T
                tiles.append(np.full(len(pick), offset + k))
                rows.append(ii[pick])
                cols.append(jj[pick])
                if target is None:
                    chunks.append(vec)
                else:
                    if writer is None:
                        writer = tempfile.NamedTemporaryFile(prefix=f".{target.name}.partial-", suffix=".raw",
                                                             dir=target.parent, delete=False)
                    vec.astype(np.float32).tofile(writer)
                    written += len(vec)
            offset += b
    except BaseException:       # an interrupted run leaves no temporary file behind
        if writer is not None:
            writer.close()
            Path(writer.name).unlink(missing_ok=True)
        raise
    result = {"tile": np.concatenate(tiles), "row": np.concatenate(rows), "col": np.concatenate(cols), "grid": grid}
    if target is None:
        result["vectors"] = np.concatenate(chunks).astype(np.float32)
    else:
        writer.close()
        result["path"] = _raw_to_npy(Path(writer.name), target, written, c)
    return result


def _new_npy_path(out_path) -> Path:
    """``out_path`` as a Path after checking that it names a new ``.npy`` file in an existing folder (helpers never
    overwrite a file they did not create)."""
    target = Path(out_path)
    if target.suffix != ".npy":
        raise ValueError(f"out_path={str(out_path)!r} must end in .npy (the vectors are written as a NumPy array).")
    if target.exists():
        raise FileExistsError(f"out_path={str(out_path)!r} already exists; feature_vectors never overwrites a file. "
                              "Choose a new file name, or delete the old one yourself.")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"out_path={str(out_path)!r}: the folder {str(target.parent)!r} does not exist; "
                                "create it first.")
    return target


def _raw_to_npy(raw: Path, target: Path, n_rows: int, n_cols: int) -> Path:
    """Prepend a .npy header to a raw float32 file without loading it (the header is written first, then the
    raw bytes are copied in blocks), under a temporary name renamed to ``target`` when complete. Both
    temporary files are removed, whatever happens."""
    import shutil

    header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_cols)}
    partial = Path(tempfile.NamedTemporaryFile(prefix=f".{target.name}.partial-", suffix=".npy", dir=target.parent,
                                               delete=False).name)
    try:
        with open(partial, "wb") as out, open(raw, "rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 24)
        if target.exists():
            raise FileExistsError(f"{target} appeared while the vectors were written; it is left as it is.")
        partial.chmod(default_mode(directory=False))
        partial.rename(target)
    finally:
        raw.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return target
