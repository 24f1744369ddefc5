"""Patch-embedding stores (paper 002's "remote" step): tile a slide, embed every patch with an encoder, and
write one Zarr store per slide with the embedding matrix (patches × dims), the patch centres and metadata.

- Encoders are described by a picklable :class:`EncoderSpec` (architecture, weights, input size), so the
  same description runs on any Dask worker: ImageNet EfficientNet-Lite0, the supervised tile classifier of
  notebook 02, a SimCLR-trained or a randomly initialised small ResNet, and a handcrafted colour/texture
  baseline.
- :func:`extract_embeddings` submits one Dask task per slide to a ``dask.distributed`` client
  (:func:`dask_client`: a LocalCluster by default, or the address of an existing scheduler);
  :func:`extract_embeddings_from_files` sends only slide PATHS: each task opens its slide lazily and reads its own
  regions (a real 20× slide never travels, nor sits in memory whole).
- :func:`read_stores` is all the clustering ("local") step needs; it refuses stores of different encoders or
  tilings in one run.

A store is a cache: it is reused only when its metadata equals what is asked for and its embeddings match the
checksum written with them; it is written under a temporary name and renamed when complete, and a stale store is
replaced only when the new one is complete (never a folder helpers did not write, see :mod:`helpers.cache`).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...arrays import numeric
from ...cache import OWNED, building, is_owned, safe_name

STORE_FORMAT = 1
_MODULES: dict = {}     # per process: fingerprint → ready-to-run encoder (a Dask worker builds each once)


class StoreError(ValueError):
    """A store that cannot be used as asked, with what to do about it."""


# ------------------------------------------------------------------------------------------------ encoders
@dataclass(frozen=True)
class EncoderSpec:
    """What a worker needs to rebuild an encoder: ``arch`` (efficientnet_lite0, vgg16_tile, small_resnet,
    handcrafted), its constructor ``options``, the weights (``state``, CPU tensors) and the input size."""
    name: str
    arch: str
    layer: str
    input_size: int
    state: dict | None = None
    options: dict = field(default_factory=dict)
    standardise: bool = False     # z-score each feature per slide before clustering (mixed-unit features)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(json.dumps([self.name, self.arch, self.layer, self.input_size, self.options,
                                            self.standardise], sort_keys=True).encode())
        for key in sorted(self.state or {}):
            digest.update(key.encode())
            digest.update(np.ascontiguousarray(self.state[key].detach().cpu().numpy()).tobytes())
        return digest.hexdigest()[:16]


def _cpu_state(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def imagenet_encoder(data_dir, input_size: int = 128) -> EncoderSpec:
    """timm's EfficientNet-Lite0 with the real ImageNet weights; embedding = the globally pooled last block
    (1280 dims), the "last layer latent representation" of paper 002."""
    from ...models import efficientnet_lite0

    return EncoderSpec("imagenet", "efficientnet_lite0", "global average pool after conv_head (1280)", input_size,
                       _cpu_state(efficientnet_lite0(data_dir)))


def supervised_encoder(tile_classifier, input_size: int = 128) -> EncoderSpec:
    """Notebook 02's VGG-16 tile classifier (trained to detect cancer on the simulated slides); embedding = the
    global max pool of its last convolution, the vector its classifier reads."""
    return EncoderSpec("supervised", "vgg16_tile", f"global max pool of {tile_classifier.LAST_CONV_RELU}",
                       input_size, _cpu_state(tile_classifier),
                       {"width": tile_classifier.width, "batch_norm": tile_classifier.batch_norm})


def resnet_encoder(backbone, name: str, input_size: int = 64) -> EncoderSpec:
    """A :class:`helpers.methods.seeded.simclr.SmallResNet` (SimCLR-trained or random); embedding = its pooled output."""
    widths = [int(stage[0].conv1.out_channels) for stage in backbone.stages]
    blocks = [len(stage) for stage in backbone.stages]
    return EncoderSpec(name, "small_resnet", "global average pool of the last stage", input_size,
                       _cpu_state(backbone), {"widths": widths, "blocks": blocks})


def random_encoder(seed: int = 0, widths=(16, 32, 64, 128), input_size: int = 64) -> EncoderSpec:
    """The same small ResNet as the SimCLR encoder, randomly initialised (a floor for any learned space)."""
    import torch

    from .simclr import SmallResNet

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = SmallResNet(tuple(widths))
    return resnet_encoder(backbone.eval(), "random", input_size)


def handcrafted_encoder(input_size: int = 128) -> EncoderSpec:
    """Colour and texture without learning: mean and std of the hematoxylin, eosin and DAB channels
    (``skimage.color.rgb2hed``), a uniform LBP histogram (P = 8, R = 1) and four grey-level co-occurrence
    properties. Standardised per slide before clustering (the features have different units)."""
    return EncoderSpec("handcrafted", "handcrafted", "HED mean/std + LBP histogram + GLCM properties", input_size,
                       None, {"lbp_points": 8, "lbp_radius": 1, "glcm_levels": 32}, standardise=True)


def _handcrafted(patches, options) -> np.ndarray:
    from skimage.color import rgb2gray, rgb2hed
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    p, r, levels = options["lbp_points"], options["lbp_radius"], options["glcm_levels"]
    rows = []
    for patch in patches:
        hed = rgb2hed(patch).reshape(-1, 3)
        grey = (rgb2gray(patch) * 255).astype(np.uint8)
        lbp = local_binary_pattern(grey, p, r, method="uniform")
        lbp_hist = np.bincount(lbp.astype(int).ravel(), minlength=p + 2)[: p + 2] / lbp.size
        quantised = (grey.astype(np.int64) * levels // 256).astype(np.uint8)
        glcm = graycomatrix(quantised, [2], [0, np.pi / 2], levels=levels, symmetric=True, normed=True)
        props = [graycoprops(glcm, name).mean() for name in ("contrast", "homogeneity", "energy", "correlation")]
        rows.append(np.concatenate([hed.mean(0), hed.std(0), lbp_hist, props]))
    return np.nan_to_num(np.asarray(rows, np.float32))   # GLCM correlation of a flat patch is undefined → 0


def _module(spec: EncoderSpec):
    """Build (once per process) a function N×H×W×3 uint8 → N×D float32 for ``spec``."""
    key = spec.fingerprint()
    if key in _MODULES:
        return _MODULES[key]
    if spec.arch == "handcrafted":
        _MODULES[key] = lambda patches: _handcrafted(patches, spec.options)
        return _MODULES[key]
    import torch

    from ... import env, models
    from . import simclr

    # a Dask worker is a process of its own: the numeric mode's torch switches (its thread count is the worker's)
    env.apply_numeric_mode(threads=False)
    mean = std = None
    if spec.arch == "efficientnet_lite0":
        import timm

        net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        net.load_state_dict(spec.state)
        mean, std = models.EFFNET_LITE0_MEAN, models.EFFNET_LITE0_STD
        forward = lambda x: net.forward_head(net.forward_features(x), pre_logits=True)  # noqa: E731
    elif spec.arch == "vgg16_tile":
        net = models.VGG16TileClassifier(**spec.options)
        net.load_state_dict(spec.state)
        forward = lambda x: net.pool(net.features(x)).flatten(1)  # noqa: E731
    elif spec.arch == "small_resnet":
        net = simclr.SmallResNet(tuple(spec.options["widths"]), tuple(spec.options["blocks"]))
        net.load_state_dict(spec.state)
        forward = net
    else:
        raise StoreError(f"unknown encoder architecture {spec.arch!r}; use efficientnet_lite0, vgg16_tile, "
                         "small_resnet or handcrafted.")
    net.eval()

    @torch.no_grad()
    def run(patches):
        x = simclr.to_input(patches, spec.input_size)
        if mean is not None:
            x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        return forward(x).float().numpy()

    _MODULES[key] = run
    return run


def embed_patches(spec: EncoderSpec, patches, batch_size: int = 64) -> np.ndarray:
    """N×H×W×3 uint8 patches → N×D float32 embeddings with ``spec``'s encoder, in batches."""
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise StoreError(f"patches must be N×H×W×3 uint8, got {patches.shape} {patches.dtype}.")
    run = _module(spec)
    return np.concatenate([run(patches[i:i + batch_size]) for i in range(0, len(patches), batch_size)])


# -------------------------------------------------------------------------------------------------- stores
def is_url(location) -> bool:
    """True for an fsspec URL (``s3://bucket/stores``, ``file:///shared/stores``, ``memory://…``), False for a path."""
    return "://" in str(location)


def store_folder(root, spec: EncoderSpec, patch: int, stride: int, min_tissue: float):
    """Where the stores of one encoder and one tiling live: ``root/<encoder>-<fingerprint>-p<patch>s<stride>``
    (a Path, or a URL string when ``root`` is an fsspec URL)."""
    name = f"{spec.name}-{spec.fingerprint()[:10]}-p{patch}s{stride}t{int(round(100 * min_tissue))}"
    return f"{str(root).rstrip('/')}/{name}" if is_url(root) else Path(root) / name


def _filesystem(url: str):
    """The fsspec filesystem of ``url`` and the path in it; an unknown protocol, or one whose package is missing, is
    named with the fix instead of surfacing later as an incomplete store."""
    import fsspec

    protocol = str(url).split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(str(url))
    except (ValueError, ImportError) as err:
        known = "file, memory, s3 (s3fs), gcs (gcsfs), az (adlfs)"
        raise StoreError(f"store location {url!r}: fsspec cannot open the protocol {protocol!r} ({err}); use one of "
                         f"{known}, with its package installed, or a local folder.") from None


def _exists(location) -> bool:
    if not is_url(location):
        return Path(location).exists()
    fs, path = _filesystem(str(location))
    return fs.exists(path)


def _open_group(location, mode: str):
    """A Zarr group at a local path or at an fsspec URL (local URLs create their parent folders)."""
    import zarr

    if not is_url(location):
        return zarr.open_group(str(location), mode=mode)
    from zarr.storage import FsspecStore

    _filesystem(str(location))
    options = {"auto_mkdir": True} if str(location).startswith("file://") else {}
    store = FsspecStore.from_url(str(location), storage_options=options, read_only=mode == "r")
    return zarr.open_group(store=store, mode=mode)


def _write_url_store(url: str, write, replace: bool) -> None:
    """The URL counterpart of :func:`helpers.cache.building`: write into ``<url>.partial-<random>``, mark it as
    helpers', then move it to ``url`` — replacing an existing store only when helpers wrote it."""
    import uuid

    import fsspec

    fs, path = _filesystem(url)
    if fs.exists(path):
        if not fs.exists(f"{path}/{OWNED}"):
            raise StoreError(f"{url} exists and was not written by helpers (no {OWNED} marker); it is left as it is.")
        if not replace:
            raise StoreError(f"{url} already holds a store; delete it or write elsewhere (stores are never overwritten).")
    partial = f"{url}.partial-{uuid.uuid4().hex[:8]}"
    _, partial_path = fsspec.core.url_to_fs(partial)
    try:
        write(_open_group(partial, "w"))
        fs.pipe(f"{partial_path}/{OWNED}", b"built by helpers; a rebuild may replace this store\n")
        if fs.exists(path):
            fs.rm(path, recursive=True)
        fs.mv(partial_path, path, recursive=True)
    finally:
        if fs.exists(partial_path):
            fs.rm(partial_path, recursive=True)


def _sha256(array) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_store(path, embeddings, centres, meta: dict, replace: bool = False) -> Path:
    """Write one slide's store atomically (a temporary folder renamed to ``path`` when complete). Refuses NaN/inf
    embeddings and embeddings and centres of different lengths; replaces an existing complete store only with
    ``replace``, and never a folder that helpers did not write (:func:`helpers.cache.building`)."""
    import zarr

    embeddings = np.asarray(embeddings, np.float32)
    centres = np.asarray(centres, np.float32)
    if embeddings.ndim != 2:
        raise StoreError(f"embeddings of shape {embeddings.shape}: expected patches × dims.")
    if centres.shape != (len(embeddings), 2):
        raise StoreError(f"{len(embeddings)} embeddings but centres of shape {centres.shape}: give one (row, col) "
                         "centre per embedded patch.")
    if not np.isfinite(embeddings).all():
        bad = int((~np.isfinite(embeddings)).any(1).sum())
        raise StoreError(f"{bad} of {len(embeddings)} embeddings contain NaN or inf; check the encoder's input "
                         "(empty or saturated patches) before storing.")
    def fill(group):
        group.create_array("embeddings", data=embeddings,
                           chunks=(min(4096, max(1, len(embeddings))), max(1, embeddings.shape[1])))
        group.create_array("centres", data=centres)
        group.attrs.update({**meta, "format": STORE_FORMAT, "n_patches": int(len(embeddings)),
                            "dims": int(embeddings.shape[1]), "embeddings_sha256": _sha256(embeddings),
                            "complete": True})

    if is_url(path):                       # any fsspec URL every worker can reach
        _write_url_store(str(path), fill, replace)
        return str(path)
    path = Path(path)
    if path.exists() and _is_complete(path) and not replace:
        raise StoreError(f"{path} already holds a complete store; delete it or write elsewhere (stores are never "
                         "overwritten).")
    _claim_legacy_store(path)
    with building(path) as partial:        # a hidden temporary folder, renamed to path when complete
        fill(zarr.open_group(str(partial), mode="w"))
    return path


def _claim_legacy_store(path: Path) -> None:
    """A store written before helpers marked its folders carries our format in its attributes: mark it as ours,
    so that a rebuild may replace it. Anything else is left for :func:`helpers.cache.building` to refuse."""
    import zarr

    if not path.exists() or is_owned(path):
        return
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:   # not a zarr group: not ours
        return
    if attrs.get("format") == STORE_FORMAT and "embeddings_sha256" in attrs:
        (path / OWNED).write_text("built by helpers; a rebuild may replace this folder\n")


def _is_complete(path) -> bool:
    if is_url(path):
        _filesystem(str(path))       # an unknown protocol is the user's to fix, not an incomplete store
    try:
        return bool(_open_group(path, "r").attrs.get("complete", False))
    except Exception:   # noqa: BLE001 - not a zarr group at all (zarr raises several types)
        return False


@dataclass
class EmbeddingStore:
    embeddings: np.ndarray     # patches × dims, float32
    centres: np.ndarray        # patches × 2 (row, col) in slide pixels
    meta: dict
    path: "Path | str"        # a local path, or the fsspec URL the store was read from


def read_store(path, expect: dict | None = None) -> EmbeddingStore:
    """Read one store, checking completeness, shapes and the checksum; ``expect`` (metadata key → value) must
    match too."""
    if not is_url(path):
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no embedding store at {path}; run the extraction first.")
    if not _is_complete(path):
        raise StoreError(f"{path} is not a complete embedding store (missing, or an interrupted extraction); extract "
                         "it again.")
    group = _open_group(path, "r")
    meta = dict(group.attrs)
    embeddings, centres = np.asarray(group["embeddings"][:]), np.asarray(group["centres"][:])
    if meta.get("format") != STORE_FORMAT:
        raise StoreError(f"{path} has store format {meta.get('format')}, this code reads {STORE_FORMAT}; extract again.")
    if embeddings.shape != (meta["n_patches"], meta["dims"]) or centres.shape != (meta["n_patches"], 2):
        raise StoreError(f"{path}: arrays of shape {embeddings.shape} and {centres.shape} disagree with its metadata "
                         f"({meta['n_patches']} patches × {meta['dims']} dims).")
    if _sha256(embeddings) != meta["embeddings_sha256"]:
        raise StoreError(f"{path}: embeddings do not match their checksum (corrupted); extract again.")
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise StoreError(f"{path}: {key} is {meta.get(key)!r}, expected {value!r}.")
    return EmbeddingStore(embeddings, centres, meta, path)


_RUN_KEYS = ("encoder", "encoder_fingerprint", "layer", "input_size", "patch_size", "stride", "min_tissue")
# (slide_sha256 differs between slides by design; it only decides whether a store can be reused)


def read_stores(paths) -> list[EmbeddingStore]:
    """Read the stores of one clustering run; all must come from the same encoder (same weights) and tiling."""
    stores = [read_store(p) for p in paths]
    if not stores:
        raise StoreError("no stores given; extract embeddings first (extract_embeddings).")
    first = stores[0]
    for store in stores[1:]:
        for key in _RUN_KEYS:
            if store.meta.get(key) != first.meta.get(key):
                raise StoreError(f"stores from different runs mixed: {Path(str(store.path)).name} has {key} = "
                                 f"{store.meta.get(key)!r} but {Path(str(first.path)).name} has {first.meta.get(key)!r} "
                                 f"(encoders {store.meta.get('encoder')!r} and {first.meta.get('encoder')!r}); "
                                 "cluster the stores of one encoder and tiling at a time.")
    return stores


def for_clustering(store: EmbeddingStore) -> np.ndarray:
    """The matrix the clustering reads: the embeddings, z-scored per feature when the encoder asks for it."""
    x = store.embeddings.astype(np.float64)
    if store.meta.get("standardise"):
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    return x


# ------------------------------------------------------------------------------------------- extraction
def patch_centres(tissue, patch: int, stride: int, min_tissue: float = 0.5) -> np.ndarray:
    """Centres (row, col) of the grid patches with at least ``min_tissue`` tissue (paper 002: 256 px, 50 %
    overlap; the tiling of :func:`helpers.data.tissue.tile_slide`)."""
    from ...data.tissue import tile_slide

    return tile_slide(tissue, patch, stride, min_tissue)["coords"].astype(np.float32) + patch / 2.0


def mask_fraction(mask, centres, patch: int) -> np.ndarray:
    """Fraction of each patch (given by its centre) inside ``mask``: ground truth is fraction ≥ 0.5."""
    from ...data.tissue import box_sums, integral_image

    mask = numeric(mask, "mask", ndim=2, layout="one H × W mask of the slide", dtype=bool)
    top_left = np.rint(np.asarray(centres) - patch / 2.0).astype(int)
    if len(top_left) and (top_left.min() < 0 or (top_left + patch > np.array(mask.shape)).any()):
        raise StoreError(f"patch centres fall outside the {mask.shape} mask; is it the mask of this slide?")
    return box_sums(integral_image(mask), top_left[:, 0], top_left[:, 1], patch) / float(patch * patch)


def slide_digest(rgb, tissue) -> str:
    """Checksum of a slide's pixels and tissue mask: a store is reused only for the very image it was made from."""
    digest = hashlib.sha256(np.ascontiguousarray(rgb).tobytes())
    digest.update(np.packbits(np.asarray(tissue, bool)).tobytes())
    digest.update(repr(np.shape(rgb)).encode())
    return digest.hexdigest()


def extract_slide(spec: EncoderSpec, slide_id: str, rgb, tissue, patch: int, stride: int, min_tissue: float,
                  store_path, batch_size: int = 64, digest: str | None = None) -> str:
    """One Dask task: tile one slide, embed its patches batch by batch (patches are cut on the fly, so a large
    slide never needs all of them in memory) and write its store. Returns the store path."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise StoreError(f"slide {slide_id}: expected an H×W×3 uint8 image, got {rgb.shape} {rgb.dtype}.")
    if np.shape(tissue) != rgb.shape[:2]:
        raise StoreError(f"slide {slide_id}: tissue mask {np.shape(tissue)} differs from the image {rgb.shape[:2]}.")
    centres = patch_centres(tissue, patch, stride, min_tissue)
    top_left = (centres - patch / 2.0).astype(int)
    parts = []
    for i in range(0, len(top_left), batch_size):
        batch = np.stack([rgb[y:y + patch, x:x + patch] for y, x in top_left[i:i + batch_size]])
        parts.append(embed_patches(spec, batch, batch_size))
    meta = {"slide_id": slide_id, "encoder": spec.name, "arch": spec.arch, "layer": spec.layer,
            "encoder_fingerprint": spec.fingerprint(), "input_size": spec.input_size, "patch_size": int(patch),
            "stride": int(stride), "min_tissue": float(min_tissue), "standardise": bool(spec.standardise),
            "slide_sha256": digest or slide_digest(rgb, tissue)}
    # extract_embeddings asks for a slide only when its store is missing or invalid: replace it
    return str(write_store(store_path, np.concatenate(parts), centres, meta, replace=True))


def dask_client(scheduler_address: str | None = None, n_workers: int = 2):
    """A ``dask.distributed`` client: a LocalCluster of ``n_workers`` single-threaded processes by default, or
    the existing scheduler at ``scheduler_address`` (e.g. ``"tcp://10.0.0.5:8786"``; its workers must be able to
    import ``helpers`` and write to the store folder). Close it with ``client.close()``."""
    import logging

    try:
        from dask.distributed import Client
    except ImportError as err:
        raise ImportError("dask.distributed runs notebook 04's extraction: pip install -e '.[dask]' (`make install` "
                          "installs every extra).") from err

    if scheduler_address:
        try:
            return Client(scheduler_address, timeout="20s")
        except OSError as err:
            raise ConnectionError(f"no Dask scheduler answers at {scheduler_address!r} ({err}); start one with "
                                  "`dask scheduler` or leave DASK_SCHEDULER empty for a local cluster.") from None
    # Dask's nannies write their workers' settings (OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, PYTHONHASHSEED, …) into
    # this process's own environment. Measured: a notebook kernel or a later process started from here then runs
    # torch on one thread and records other numbers (1e-6 apart, more after training). The workers keep them.
    saved = dict(os.environ)
    try:
        return Client(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _store_paths(root, spec, patch, stride, min_tissue, ids, suffix: str) -> list:
    """One store per slide id (unique, safe as a file name) in the tiling's folder: Paths, or URLs under a URL."""
    if len(set(ids)) != len(ids):
        raise StoreError(f"slide ids must be unique (they name the stores); duplicates: "
                         f"{sorted({i for i in ids if ids.count(i) > 1})}.")
    names = [f"{safe_name(sid, 'slide id')}{suffix}.zarr" for sid in ids]
    folder = store_folder(root, spec, patch, stride, min_tissue)
    if is_url(folder):
        return [f"{folder}/{name}" for name in names]
    folder.mkdir(parents=True, exist_ok=True)
    return [folder / name for name in names]


def extract_embeddings(client, slides, spec: EncoderSpec, root, patch: int, stride: int,
                       min_tissue: float = 0.5, batch_size: int = 64) -> list[Path]:
    """Embed every slide of ``slides`` (a sequence of (slide_id, rgb, tissue_mask)) with ``spec``, one Dask
    task per slide on ``client``, and return the store paths in the order of ``slides``. Valid stores from an
    earlier run are reused; a stale or broken one is rebuilt. ``client=None`` runs in this process (debugging)."""
    from tqdm.auto import tqdm

    paths = _store_paths(root, spec, patch, stride, min_tissue, [str(s[0]) for s in slides], "")
    expect = {"encoder_fingerprint": spec.fingerprint(), "patch_size": int(patch), "stride": int(stride),
              "min_tissue": float(min_tissue)}
    todo = []
    for (sid, rgb, tissue), path in zip(slides, paths):
        digest = slide_digest(rgb, tissue)
        try:
            read_store(path, expect | {"slide_sha256": digest})
        except StoreError as err:
            if _exists(path):       # replaced when the new store is complete, and only if helpers wrote it
                print(f"rebuilding {Path(str(path)).name}: {err}")
            todo.append((sid, rgb, tissue, path, digest))
    if not todo:
        return paths
    if client is None:
        for sid, rgb, tissue, path, digest in tqdm(todo, desc=f"embedding ({spec.name})", leave=False):
            extract_slide(spec, sid, rgb, tissue, patch, stride, min_tissue, path, batch_size, digest)
        return paths
    from dask.distributed import as_completed

    [spec_future] = client.scatter([spec], broadcast=True)
    futures = [client.submit(extract_slide, spec_future, sid, rgb, tissue, patch, stride, min_tissue, str(path),
                             batch_size, digest, key=f"embed-{spec.name}-{digest[:8]}-{sid}", pure=False)
               for sid, rgb, tissue, path, digest in todo]
    for future in tqdm(as_completed(futures), total=len(futures), desc=f"embedding ({spec.name}, Dask)", leave=False):
        future.result()     # re-raises a worker's error here, with its message
    return paths



# ------------------------------------------------------------------------------- slides by path (lazy reading)
def slide_file_digest(path) -> str:
    """Identity of a slide file for store reuse: its size and the sha256 of its first and last MiB (hashing a
    multi-gigabyte slide whole would cost more than embedding it)."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"slide file {path} not found (or not a file); give the path of the slide the store is for.")
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(size - (1 << 20), 0))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def slide_grid(slide, patch: int, stride: int, level: int = 0, min_tissue: float = 0.5,
               tissue_max_side: int = 2048) -> np.ndarray:
    """Patch centres (row, col) in LEVEL-0 pixels of the ``patch``-pixel grid (stride ``stride``, both in pixels of
    ``level``) of an open :class:`helpers.data.slides.Slide`, keeping patches with at least ``min_tissue`` tissue
    in the tissue mask of a coarse level (:meth:`Slide.tissue_mask`); the slide is never read whole."""
    from ...data.tissue import box_sums, integral_image

    level = slide.check_level(level)
    mask, mask_downsample = slide.tissue_mask(tissue_max_side)
    per_mask_px = mask_downsample / slide.level_downsamples[level]          # level pixels per mask pixel
    width, height = slide.level_dimensions[level]
    ys, xs = np.mgrid[0: height - patch + 1: stride, 0: width - patch + 1: stride]
    ys, xs = ys.ravel(), xs.ravel()
    size = max(1, int(round(patch / per_mask_px)))
    my = np.clip(np.round(ys / per_mask_px).astype(int), 0, mask.shape[0] - size)
    mx = np.clip(np.round(xs / per_mask_px).astype(int), 0, mask.shape[1] - size)
    keep = box_sums(integral_image(mask), my, mx, size) >= min_tissue * size * size
    ds = slide.level_downsamples[level]
    return np.stack([(ys[keep] + patch / 2.0) * ds, (xs[keep] + patch / 2.0) * ds], 1).astype(np.float64)


def extract_slide_file(spec: EncoderSpec, slide_path, patch: int, stride: int, min_tissue: float, store_path,
                       level: int = 0, mpp: float | None = None, tissue_max_side: int = 2048, batch_size: int = 64,
                       digest: str | None = None, slide_id: str | None = None) -> str:
    """One Dask task that reads its own slide: open ``slide_path`` lazily (:class:`helpers.data.slides.Slide`),
    take the tissue grid from a coarse level (:func:`slide_grid`), read the patches region by region at ``level``
    batch by batch, embed them and write the store (centres in level-0 pixels). Memory stays that of one batch,
    whatever the slide's size. Returns the store path."""
    from ...data.slides import Slide

    slide_path = Path(slide_path)
    with Slide(slide_path, mpp=mpp) as slide:
        centres = slide_grid(slide, patch, stride, level, min_tissue, tissue_max_side)
        ds = slide.level_downsamples[slide.check_level(level)]
        parts = []
        for i in range(0, len(centres), batch_size):
            batch = np.stack([slide.read_region((int(round(c - patch / 2.0 * ds)), int(round(r - patch / 2.0 * ds))),
                                                level, (patch, patch)) for r, c in centres[i:i + batch_size]])
            parts.append(embed_patches(spec, batch, batch_size))
        dims = parts[0].shape[1] if parts else 0
    meta = {"slide_id": slide_id or slide_path.stem, "encoder": spec.name, "arch": spec.arch, "layer": spec.layer,
            "encoder_fingerprint": spec.fingerprint(), "input_size": spec.input_size, "patch_size": int(patch),
            "stride": int(stride), "min_tissue": float(min_tissue), "standardise": bool(spec.standardise),
            "level": int(level), "level0_patch_size": float(patch * ds), "slide_file": slide_path.name,
            "slide_sha256": digest or slide_file_digest(slide_path)}
    embeddings = np.concatenate(parts) if parts else np.zeros((0, dims), np.float32)
    return str(write_store(store_path, embeddings, centres, meta, replace=True))


def extract_embeddings_from_files(client, slide_paths, spec: EncoderSpec, root, patch: int, stride: int,
                                  min_tissue: float = 0.5, level: int = 0, mpp: float | None = None,
                                  batch_size: int = 64) -> list[Path]:
    """Embed every slide FILE of ``slide_paths`` with ``spec``: one Dask task per slide receives the slide's path
    and reads its own regions (:func:`extract_slide_file`), so nothing but a path travels to the workers, which
    must see the same files and the store root: a shared folder, or any fsspec URL they can all reach
    (``s3://bucket/stores`` with s3fs installed, ``file:///shared/stores``). ``client=None`` runs in this process.
    Valid stores are reused (same encoder, tiling, level and file). Returns the store paths in input order."""
    from tqdm.auto import tqdm

    slide_paths = [Path(p) for p in slide_paths]
    missing = [str(p) for p in slide_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"slide file(s) not found: {', '.join(missing)}.")
    paths = _store_paths(root, spec, patch, stride, min_tissue, [p.stem for p in slide_paths], f"-L{int(level)}")
    todo = []
    for slide_path, store_path in zip(slide_paths, paths):
        digest = slide_file_digest(slide_path)
        try:
            read_store(store_path, {"encoder_fingerprint": spec.fingerprint(), "patch_size": int(patch),
                                    "stride": int(stride), "min_tissue": float(min_tissue), "level": int(level),
                                    "slide_sha256": digest})
        except StoreError:
            todo.append((slide_path, store_path, digest))
    if client is None:
        for slide_path, store_path, digest in tqdm(todo, desc=f"embedding ({spec.name})", leave=False):
            extract_slide_file(spec, slide_path, patch, stride, min_tissue, store_path, level, mpp,
                               batch_size=batch_size, digest=digest)
        return paths
    from dask.distributed import as_completed

    [spec_future] = client.scatter([spec], broadcast=True)
    futures = [client.submit(extract_slide_file, spec_future, str(slide_path), patch, stride, min_tissue,
                             str(store_path), level, mpp, 2048, batch_size, digest,
                             key=f"embed-file-{spec.name}-{digest[:8]}-{slide_path.stem}", pure=False)
               for slide_path, store_path, digest in todo]
    for future in tqdm(as_completed(futures), total=len(futures), desc=f"embedding ({spec.name}, Dask)", leave=False):
        future.result()
    return paths

# ---------------------------------------------------------------------------------------- visualisation
def umap_rgb(embeddings, n_neighbors: int = 15, random_state: int = 0):
    """Paper 002 §2.2 (after Chelebian et al.): UMAP of the embeddings to 3 components, each min-max scaled to
    [0, 1], used as the RGB colour of the patch; plus a 2-D UMAP for a scatter. Same random_state → same
    colours. Returns (n×3 colours, n×2 coordinates)."""
    import warnings

    import umap

    x = np.asarray(embeddings, np.float32)
    if len(x) < 4:
        raise StoreError(f"UMAP needs at least 4 patches, got {len(x)}.")
    n_neighbors = min(n_neighbors, len(x) - 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")     # random_state forces one thread: intended
        three = umap.UMAP(n_components=3, n_neighbors=n_neighbors, random_state=random_state).fit_transform(x)
        two = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=random_state).fit_transform(x)
    low, high = three.min(0), three.max(0)
    return (three - low) / np.where(high > low, high - low, 1.0), two
