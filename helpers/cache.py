"""Validated on-disk caches: a folder of ``.npy`` arrays plus ``manifest.json`` (config + sha256 per file).

A cache is reused only when its manifest's config equals the one asked for and every file's checksum
matches; otherwise it is rebuilt, with a message saying why. Builds go to a temporary folder that replaces
the old one only when complete, so an interrupted build never leaves a half-written cache behind.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CacheError(RuntimeError):
    """A cache that cannot be trusted: missing, stale (other config) or corrupted (checksum mismatch)."""


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
    with other numbers."""
    import inspect

    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:12]


def config_key(config) -> str:
    """A short stable hash of a config, used in cache folder names."""
    return hashlib.sha256(json.dumps(_canonical(config), sort_keys=True).encode()).hexdigest()[:10]


@contextmanager
def building(folder):
    """Yield a fresh ``<folder>.partial`` to write into; on success it replaces ``folder``, so an interrupted
    build never leaves a half-written cache where a complete one is expected."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def save_arrays(folder, arrays: dict, config: dict, meta: dict | None = None) -> Path:
    """Write ``arrays`` (name → ndarray) and a manifest into ``folder`` atomically (via a temporary folder)."""
    with building(folder) as tmp:
        _write_arrays(tmp, arrays, config, meta)
    return Path(folder)


def _write_arrays(tmp: Path, arrays: dict, config: dict, meta: dict | None):
    files = {}
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
    if manifest.get("format") != FORMAT_VERSION:
        raise CacheError(f"cache {folder} was written by another version of helpers (format {manifest.get('format')})")
    if config is not None and manifest.get("config") != _canonical(config):
        raise CacheError(f"cache {folder} is stale: it was built with another configuration")
    for fname, digest in manifest["files"].items():
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
