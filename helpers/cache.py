"""Validated on-disk caches: a folder of ``.npy`` arrays plus ``manifest.json`` (config + sha256 per file), and
model checkpoints (``model.pt`` + ``info.json``) under ``DATA_DIR/cache/models``.

A cache is reused only when its manifest's config equals the one asked for and every file's checksum
matches; otherwise it is rebuilt, with a message saying why.

The safety rule of every writer in ``helpers`` (see :func:`building`): a folder is written under a unique temporary
name and renamed into place only when complete; a folder is replaced only when ``helpers`` created it (it holds the
:data:`OWNED` marker), never a user's; the previous version stays in place until the new one is complete; names that
become paths are checked (:func:`safe_name`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .env import check_data_dir, configuration

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
CHECKPOINT = "model.pt"
INFO = "info.json"
OWNED = ".written-by-helpers"   # marker file: this folder was built by helpers and may be replaced by a rebuild


class CacheError(RuntimeError):
    """A cache that cannot be trusted: missing, stale (other config) or corrupted (checksum mismatch)."""


class NotOwnedError(FileExistsError):
    """A helper was asked to replace a file or folder that it did not create (it leaves it as it is)."""


def safe_name(name, what: str = "name") -> str:
    """``name`` if it can serve as one file or folder name: not empty, no path separator, no '..', not hidden.
    Names that come from users (array names, slide ids, subject ids) pass here before they become paths."""
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or name.startswith(".") \
            or "/" in name or "\\" in name or os.sep in name or "\0" in name:
        raise ValueError(f"{what} {name!r} cannot be used as a file name: it must be non-empty, contain no '/', "
                         "'\\' or '..' and not start with '.'; use letters, digits, '-', '_' and '.'.")
    return name


def default_mode(directory: bool) -> int:
    """The permissions ``mkdir`` / ``open`` would give under the process umask. Temporary files and folders are
    created private (0700 / 0600); what they become gets these instead (a shared store stays readable)."""
    umask = 0o022
    try:
        with open("/proc/self/status") as status:          # Linux: read it without changing it
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        pass
    return (0o777 if directory else 0o666) & ~umask


def is_owned(folder) -> bool:
    """True when ``folder`` was built by helpers: it holds the :data:`OWNED` marker, or (built before the marker
    existed) a cache manifest or checkpoint record in helpers' own format."""
    folder = Path(folder)
    if (folder / OWNED).is_file():
        return True
    for name, keys in ((MANIFEST, {"format", "config", "files"}), ("info.json", {"config", "sha256", "architecture"})):
        try:
            record = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and keys <= set(record):
            return True
    return False


def sha256_file(path, chunk=1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _canonical(config) -> dict:
    """Config as plain JSON types, so that tuples/lists and numpy scalars compare equal after a round trip."""
    return json.loads(json.dumps(config, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def source_fingerprint(*modules) -> str:
    """A short hash of the source code of ``modules``. Caches put it in their config, so that an artefact built
    by other code (an older commit, a local edit) is rebuilt instead of being reused under the same settings
    with other numbers, or by other numeric kernels (:func:`helpers.env.configuration`)."""
    import inspect

    digest = hashlib.sha256()
    # the bits also depend on which kernels computed them: the numeric mode, the platform and the library versions
    digest.update(json.dumps(configuration(), sort_keys=True).encode())
    for module in modules:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def config_key(config) -> str:
    """A short stable hash of a config, used in cache folder names."""
    return hashlib.sha256(json.dumps(_canonical(config), sort_keys=True).encode()).hexdigest()[:10]


def folder_for(data_dir, name: str, config) -> Path:
    """``DATA_DIR/cache/<name>-<config key>``: where the artefact ``name`` built with ``config`` lives (DATA_DIR is
    checked, see :func:`helpers.env.check_data_dir`)."""
    return check_data_dir(data_dir) / f"{safe_name(name, 'cache name')}-{config_key(config)}"


@contextmanager
def building(folder):
    """Yield a new temporary folder beside ``folder`` to write into; when the block completes it becomes ``folder``.

    - the temporary folder has a unique hidden name (``.<name>.partial-XXXX``), so no folder of the user's is
      touched, and it is removed if the block raises: an interrupted build leaves nothing that looks valid;
    - an existing ``folder`` is replaced only if helpers built it (:func:`is_owned`); anything else raises
      :class:`NotOwnedError` before any work is done;
    - the previous version stays in place until the new one is complete (it is moved aside, the new one renamed
      in, then the old one deleted)."""
    folder = Path(folder)
    safe_name(folder.name, "folder name")
    if folder.exists() and not is_owned(folder):
        raise NotOwnedError(f"{folder} exists and was not written by helpers (it has no {OWNED} marker); it is left "
                            "as it is. Write to another folder, or move that one away first.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    tmp.chmod(default_mode(directory=True))
    try:
        (tmp / OWNED).write_text("built by helpers; a rebuild may replace this folder\n")
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    aside = None
    if folder.exists():
        if not is_owned(folder):      # appeared while we were building
            shutil.rmtree(tmp, ignore_errors=True)
            raise NotOwnedError(f"{folder} appeared while it was being built and was not written by helpers; it is "
                                "left as it is.")
        aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        aside.rmdir()
        folder.rename(aside)
    tmp.rename(folder)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def save_arrays(folder, arrays: dict, config: dict, meta: dict | None = None) -> Path:
    """Write ``arrays`` (name → ndarray) and a manifest into ``folder`` atomically (via a temporary folder)."""
    with building(folder) as tmp:
        _write_arrays(tmp, arrays, config, meta)
    return Path(folder)


def _write_arrays(tmp: Path, arrays: dict, config: dict, meta: dict | None):
    files = {}
    for name in arrays:
        safe_name(name, "array name")
    for name, arr in arrays.items():
        path = tmp / f"{name}.npy"
        np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
        files[path.name] = sha256_file(path)
    manifest = {"format": FORMAT_VERSION, "config": _canonical(config), "files": files,
                "meta": _canonical(meta or {}), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def verify(folder, config: dict | None = None) -> dict:
    """Check a cache folder and return its manifest; raise :class:`CacheError` naming what is wrong."""
    folder = Path(folder)
    mpath = folder / MANIFEST
    if not mpath.exists():
        raise CacheError(f"cache {folder} has no {MANIFEST} (missing or interrupted build)")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"cache {folder}: {MANIFEST} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict):
        raise CacheError(f"cache {folder}: {MANIFEST} is not a manifest (a JSON object is expected)")
    if manifest.get("format") != FORMAT_VERSION:
        raise CacheError(f"cache {folder} was written by another version of helpers (format {manifest.get('format')})")
    if config is not None and manifest.get("config") != _canonical(config):
        raise CacheError(f"cache {folder} is stale: it was built with another configuration")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:    # an empty list would make any folder a valid (empty) cache
        raise CacheError(f"cache {folder}: {MANIFEST} lists no files (truncated or edited by hand)")
    for fname, digest in files.items():
        path = folder / fname
        if not path.exists():
            raise CacheError(f"cache {folder} is corrupted: {fname} is missing")
        if sha256_file(path) != digest:
            raise CacheError(f"cache {folder} is corrupted: checksum mismatch in {fname}")
    return manifest


def load_arrays(folder, config: dict | None = None, mmap: bool = True) -> tuple[dict, dict]:
    """Verify then load a cache: returns (arrays, meta). Arrays are memory-mapped read-only by default."""
    manifest = verify(folder, config)
    arrays = {Path(f).stem: np.load(Path(folder) / f, mmap_mode="r" if mmap else None, allow_pickle=False)
              for f in manifest["files"]}
    return arrays, manifest.get("meta", {})


def ensure_arrays(folder, config: dict, build, mmap: bool = True, verbose: bool = True) -> tuple[dict, dict]:
    """Load the cache in ``folder`` if it is valid for ``config``; otherwise call ``build()`` → (arrays, meta),
    save it and load it back. Rebuilds say why."""
    folder = Path(folder)
    if folder.exists():
        try:
            return load_arrays(folder, config, mmap)
        except CacheError as err:
            if verbose:
                print(f"{err}; rebuilding it.")
    started = time.perf_counter()
    arrays, meta = build()
    save_arrays(folder, arrays, config, meta)
    if verbose:
        print(f"built {folder.name} in {time.perf_counter() - started:.1f} s")
    return load_arrays(folder, config, mmap)


# ------------------------------------------------------------------------------------ model checkpoints
# ---------------------------------------------------------------------------------- cached checkpoints
def models_root(data_dir) -> Path:
    root = check_data_dir(data_dir) / "models"
    root.mkdir(exist_ok=True)
    return root


def save_checkpoint(folder, model, config: dict, info: dict) -> Path:
    """Write ``model.pt`` and ``info.json`` (config, sha256 of the weights, metrics, history) atomically."""
    with building(folder) as tmp:
        import torch

        torch.save(model.state_dict(), tmp / CHECKPOINT)
        record = {"config": _canonical(config), "sha256": sha256_file(tmp / CHECKPOINT),
                  "architecture": type(model).__name__, **_canonical(info)}
        (tmp / INFO).write_text(json.dumps(record, indent=1, sort_keys=True))
    return Path(folder)


def load_checkpoint(folder, model, config: dict | None = None) -> dict:
    """Load weights into ``model`` after checking the config, the checksum and the architecture; returns info."""
    folder = Path(folder)
    info_path, weights = folder / INFO, folder / CHECKPOINT
    if not info_path.exists() or not weights.exists():
        raise CacheError(f"checkpoint {folder} is incomplete (missing {INFO} or {CHECKPOINT})")
    try:
        info = json.loads(info_path.read_text())
    except ValueError as err:      # truncated or edited by hand: retrain rather than stop
        raise CacheError(f"checkpoint {folder}: {INFO} is not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise CacheError(f"checkpoint {folder}: {INFO} is not a checkpoint record")
    if config is not None and info.get("config") != _canonical(config):
        raise CacheError(f"checkpoint {folder} is stale: it was trained with another configuration")
    if sha256_file(weights) != info.get("sha256"):
        raise CacheError(f"checkpoint {folder} is corrupted: checksum mismatch in {CHECKPOINT}")
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"checkpoint {folder} holds a {info.get('architecture')} whose tensors do not fit this "
                         f"{type(model).__name__} ({first[1].strip() if len(first) > 1 else first[0]}); build the "
                         f"model with the checkpoint's configuration {info.get('config', {}).get('model')} or "
                         f"retrain it.") from None
    return info
