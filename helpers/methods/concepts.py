"""Concepts of a CNN by non-negative matrix factorisation of its activations (paper 000, Bajger et al.).

Feature vectors V (n × C, after ReLU) are factorised as V ≈ W·H with W (n × K) ≥ 0 and H (K × C) ≥ 0, minimising
the Frobenius norm. The rows of H are the K concepts; W holds each concept's intensity at every position.

The solver is HALS (hierarchical alternating least squares, the block-coordinate method scikit-learn's default
``cd`` solver also uses), written in torch so it runs on a GPU when there is one. What makes it fast:
- the only products with the big matrix are V·Hᵀ and Wᵀ·V (n × C × K each); everything else uses K × K Gram
  matrices, so several cheap inner sweeps are done per expensive product ("accelerated HALS");
- with H fixed (``transform``, the paper's inference), V·Hᵀ is computed once per batch of rows.

:func:`fit_streamed` fits on matrices larger than memory (a ``.npy`` file or a Zarr array read chunk by chunk):
each pass solves W chunk by chunk with H fixed and accumulates only the K × K and K × C sufficient statistics,
then updates H from them — memory stays bounded by one chunk.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..arrays import numeric
from ..env import select_device
from ..pixels import check_range

_EPS = 1e-12


# ------------------------------------------------------------------------------------------------ checks
def check_features(V, what: str = "feature matrix"):
    """V must be a finite, non-negative 2-D matrix (n × C); returns it as a float32 numpy array or tensor."""
    arr = V if isinstance(V, torch.Tensor) else np.asarray(V, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (vectors × channels), got shape {tuple(arr.shape)}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(arr.shape)}).")
    # min and max are reductions without a temporary array: NaN makes them NaN, ±inf shows in one of them
    low, high = (float(arr.min()), float(arr.max()))
    finite = math.isfinite(low) and math.isfinite(high)
    negative = finite and low < 0
    if not finite:
        raise ValueError(f"{what} holds NaN or inf values; NMF needs finite features (check the model's inputs).")
    if negative:
        raise ValueError(f"{what} has negative values; NMF needs non-negative features: take a layer after ReLU "
                         f"(e.g. 'features.relu5_3'), not the convolution's raw output.")
    if high * high * arr.shape[0] * arr.shape[1] > 1e36:    # ‖V‖² must stay far inside float32 (3.4e38)
        raise ValueError(f"{what} reaches {high:.3g}: the squared norm overflows float32 arithmetic and NMF would "
                         "return NaN. Scale the features first (e.g. V / V.max()); the concepts do not change.")
    return arr


def _check_k(n_components: int, n_channels: int):
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"K={n_components!r} must be a positive integer.")
    if n_components > n_channels:
        raise ValueError(f"K={n_components} is larger than the number of channels ({n_channels}); choose "
                         f"K ≤ {n_channels}.")


def _check_h(H, n_channels: int):
    H = np.asarray(H, np.float32)
    if H.ndim != 2 or H.shape[1] != n_channels:
        raise ValueError(f"H has shape {H.shape} but the features have {n_channels} channels; H must be "
                         f"K × {n_channels} (fitted on the same layer).")
    if not np.isfinite(H).all() or (H < 0).any():
        raise ValueError("H must be finite and non-negative (the concepts of a fitted NMF).")
    return H


# --------------------------------------------------------------------------------------- HALS updates
def _update_w(W, VHt, HHt, sweeps: int):
    """HALS sweeps over the columns of W with V·Hᵀ and H·Hᵀ given (in place)."""
    K = W.shape[1]
    for _ in range(sweeps):
        for k in range(K):
            step = (VHt[:, k] - W @ HHt[:, k]) / (HHt[k, k] + _EPS)
            W[:, k] = torch.clamp_min(W[:, k] + step, 0.0)
    return W


def _update_h(H, WtV, WtW, sweeps: int):
    """HALS sweeps over the rows of H with Wᵀ·V and Wᵀ·W given (in place)."""
    K = H.shape[0]
    for _ in range(sweeps):
        for k in range(K):
            step = (WtV[k] - WtW[k] @ H) / (WtW[k, k] + _EPS)
            H[k] = torch.clamp_min(H[k] + step, 0.0)
    return H


def _nndsvda(gram, n_components, dtype):
    """H of NNDSVDa initialisation (Boutsidis & Gallopoulos) from the Gram matrix VᵀV: the right singular
    vectors are its eigenvectors. Returns H (K × C) and the singular values (for W's initialisation)."""
    evals, evecs = torch.linalg.eigh(gram.double())
    order = torch.argsort(evals, descending=True)[:n_components]
    sigma = torch.sqrt(torch.clamp_min(evals[order], 0.0))
    V_right = evecs[:, order].T                                   # K × C
    return V_right.to(dtype), sigma.to(dtype)


def _randomized_svd(V, n_components, seed: int, oversample: int = 10, power_iterations: int = 2):
    """Leading singular triplets of V by a seeded randomised range finder (Halko, Martinsson & Tropp 2011, the
    method of scikit-learn's ``randomized_svd``): a few passes of V times a thin matrix instead of the C × C Gram
    matrix, which dominates the cost of a short NMF on a tall matrix."""
    q = min(n_components + oversample, min(V.shape))
    generator = torch.Generator(device=V.device).manual_seed(int(seed))
    Y = V @ torch.randn(V.shape[1], q, generator=generator, dtype=V.dtype, device=V.device)
    for _ in range(power_iterations):   # power iterations sharpen the spectrum; QR keeps them stable
        Q = torch.linalg.qr(Y)[0]
        Y = V @ torch.linalg.qr(V.T @ Q)[0]
    Q = torch.linalg.qr(Y)[0]
    U_small, sigma, right = torch.linalg.svd((Q.T @ V).double(), full_matrices=False)
    left = Q.double() @ U_small
    k = n_components
    return left[:, :k].to(V.dtype), sigma[:k].to(V.dtype), right[:k].to(V.dtype)


def _init_from_svd(V, n_components, dtype, seed: int = 0):
    """NNDSVDa initialisation of W and H for an in-memory V (torch tensor), from a randomised SVD."""
    left, sigma, right = _randomized_svd(V, n_components, seed)
    W = torch.zeros(V.shape[0], n_components, dtype=dtype, device=V.device)
    H = torch.zeros(n_components, V.shape[1], dtype=dtype, device=V.device)
    for j in range(n_components):
        x, y = left[:, j], right[j]
        if j == 0:
            W[:, 0], H[0] = torch.sqrt(sigma[0]) * x.abs(), torch.sqrt(sigma[0]) * y.abs()
            continue
        xp, xn, yp, yn = x.clamp_min(0), (-x).clamp_min(0), y.clamp_min(0), (-y).clamp_min(0)
        mp = torch.linalg.norm(xp) * torch.linalg.norm(yp)
        mn = torch.linalg.norm(xn) * torch.linalg.norm(yn)
        u, v, m = (xp, yp, mp) if mp > mn else (xn, yn, mn)
        scale = torch.sqrt(sigma[j] * m)
        W[:, j] = scale * u / (torch.linalg.norm(u) + _EPS)
        H[j] = scale * v / (torch.linalg.norm(v) + _EPS)
    avg = V.mean()
    W[W == 0] = avg                                                # the "a" in NNDSVDa: no zeros to start from
    H[H == 0] = avg
    return W, H


def _sq_error(sq_norm_v, W, VHt, HHt):
    """‖V − W·H‖² from quantities already at hand: ‖V‖² − 2 Σ W∘(V·Hᵀ) + Σ (WᵀW)∘(HHᵀ)."""
    return float(sq_norm_v - 2 * (W * VHt).sum() + ((W.T @ W) * HHt).sum())


# -------------------------------------------------------------------------------------------- estimator
class NMF:
    """V ≈ W·H in the Frobenius norm, deterministic from ``seed`` (NNDSVDa start from a seeded randomised SVD),
    on CPU or GPU.

    After :meth:`fit`: ``components_`` (H, K × C numpy), ``relative_error_`` (‖V − WH‖ / ‖V‖), ``n_iter_``,
    ``history_`` (relative error every iteration)."""

    def __init__(self, n_components: int, max_iter: int = 400, tol: float = 1e-5, inner_sweeps: int = 3,
                 device="auto", dtype=torch.float32, target_error: float | None = None, seed: int = 0):
        self.n_components, self.max_iter, self.tol, self.seed = n_components, int(max_iter), float(tol), int(seed)
        self.target_error = target_error   # stop as soon as the relative error reaches it (benchmarks)
        self.inner_sweeps, self.device, self.dtype = int(inner_sweeps), device, dtype
        self.components_ = None

    def _tensor(self, V):
        V = check_features(V)
        dev = select_device(self.device)
        return torch.as_tensor(V, dtype=self.dtype).to(dev)

    def fit_transform(self, V) -> np.ndarray:
        Vt = self._tensor(V)
        _check_k(self.n_components, Vt.shape[1])
        W, H = _init_from_svd(Vt, self.n_components, self.dtype, self.seed)
        sq_norm = float((Vt * Vt).sum())
        if sq_norm == 0:
            raise ValueError("the feature matrix is all zeros: every position is inactive in this layer.")
        history, previous = [], math.inf
        for it in range(1, self.max_iter + 1):
            WtV, WtW = W.T @ Vt, W.T @ W
            _update_h(H, WtV, WtW, self.inner_sweeps)
            VHt, HHt = Vt @ H.T, H @ H.T
            _update_w(W, VHt, HHt, self.inner_sweeps)
            error = math.sqrt(max(_sq_error(sq_norm, W, VHt, HHt), 0.0) / sq_norm)
            history.append(error)
            if previous - error < self.tol * previous or (self.target_error and error <= self.target_error):
                break
            previous = error
        if not (torch.isfinite(W).all() and torch.isfinite(H).all()):
            raise FloatingPointError("NMF produced non-finite factors (float overflow); scale the features first "
                                     "(e.g. V / V.max()) or fit in float64 (dtype=torch.float64).")
        self.components_ = H.cpu().numpy()
        self.relative_error_, self.n_iter_, self.history_ = history[-1], it, history
        return W.cpu().numpy()

    def fit(self, V):
        self.fit_transform(V)
        return self

    def transform(self, V, batch_rows: int = 262144, max_iter: int = 200, tol: float = 1e-6) -> np.ndarray:
        """W for new vectors with H fixed (the paper's inference); batched over rows."""
        if self.components_ is None:
            raise RuntimeError("this NMF is not fitted yet; call fit(V) first.")
        return transform(V, self.components_, batch_rows=batch_rows, max_iter=max_iter, tol=tol,
                         device=self.device, dtype=self.dtype)


def _solve_w(Vb, Ht, HHt, max_iter, tol):
    """Non-negative least squares for W with H fixed: start from the clipped unconstrained solution, then HALS
    sweeps using only V·Hᵀ (computed once) and the K × K matrix H·Hᵀ."""
    VHt = Vb @ Ht.T
    W = torch.clamp_min(torch.linalg.solve(HHt + _EPS * torch.eye(len(HHt), dtype=HHt.dtype, device=HHt.device),
                                           VHt.T).T, 0.0)
    for _ in range(max_iter):
        before = W.clone()
        _update_w(W, VHt, HHt, 1)
        change = torch.linalg.norm(W - before)
        if change <= tol * (torch.linalg.norm(W) + _EPS):
            break
    return W, VHt


def transform(V, H, batch_rows: int = 262144, max_iter: int = 200, tol: float = 1e-6, device="auto",
              dtype=torch.float32) -> np.ndarray:
    """W ≥ 0 minimising ‖V − W·H‖ with H fixed, for V (n × C) in batches of rows."""
    V = check_features(V)
    H = _check_h(H, V.shape[1])
    dev = select_device(device)
    Ht = torch.as_tensor(H, dtype=dtype, device=dev)
    HHt = Ht @ Ht.T
    out = np.empty((V.shape[0], H.shape[0]), np.float32)
    for start in range(0, V.shape[0], batch_rows):
        Vb = torch.as_tensor(np.asarray(V[start: start + batch_rows]), dtype=dtype, device=dev)
        out[start: start + len(Vb)] = _solve_w(Vb, Ht, HHt, max_iter, tol)[0].cpu().numpy()
    return out


def relative_error(V, W, H) -> float:
    """‖V − W H‖ / ‖V‖ (Frobenius): how much of the features the K concepts leave unexplained."""
    V = numeric(V, "V", ndim=2, layout="vectors × channels")
    W = numeric(W, "W", ndim=2, layout="vectors × K")
    H = numeric(H, "H", ndim=2, layout="K × channels")
    if W.shape[0] != V.shape[0] or H.shape[1] != V.shape[1] or W.shape[1] != H.shape[0]:
        raise ValueError(f"V {V.shape}, W {W.shape} and H {H.shape} do not fit V ≈ W H; give W as n × K and H as "
                         "K × C of the same fit.")
    norm = np.linalg.norm(V)
    if norm == 0:
        raise ValueError("V is all zeros: a relative error is undefined; check that the layer's activations are not "
                         "dead for these inputs.")
    return float(np.linalg.norm(V - W @ H) / norm)


# ------------------------------------------------------------------------------- streamed (out of core)
class RowChunks:
    """Read a matrix on disk chunk by chunk with bounded memory: a ``.npy`` file (read with plain file reads, not
    a memory map, so the process never holds more than one chunk) or a Zarr array."""

    def __init__(self, source, chunk_rows: int = 262144):
        self.chunk_rows = int(chunk_rows)
        self.zarr = None
        if isinstance(source, (str, Path)) and not Path(source).exists():
            raise FileNotFoundError(f"feature matrix {source} not found; write it first (features.feature_vectors "
                                    "with out_path=...) or give a Zarr array.")
        if isinstance(source, (str, Path)) and str(source).endswith(".npy"):
            self.path = Path(source)
            header = np.load(self.path, mmap_mode="r")   # only to read shape, dtype and data offset
            if header.ndim != 2 or not header.flags.c_contiguous:
                raise ValueError(f"{self.path}: expected a C-ordered 2-D array, got shape {header.shape}.")
            self.shape, self.dtype, self.offset = tuple(header.shape), header.dtype, header.offset
            del header
        else:
            import zarr

            self.zarr = zarr.open(str(source), mode="r") if isinstance(source, (str, Path)) else source
            self.shape, self.dtype = tuple(self.zarr.shape), np.dtype(self.zarr.dtype)
            if len(self.shape) != 2:
                raise ValueError(f"expected a 2-D Zarr array, got shape {self.shape}.")

    def __iter__(self):
        n, c = self.shape
        if self.zarr is not None:
            for start in range(0, n, self.chunk_rows):
                yield np.asarray(self.zarr[start: start + self.chunk_rows], np.float32)
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            for start in range(0, n, self.chunk_rows):
                rows = min(self.chunk_rows, n - start)
                buf = np.empty((rows, c), self.dtype)
                fh.readinto(memoryview(buf).cast("B"))
                yield buf.astype(np.float32, copy=False)


def fit_streamed(source, n_components: int, passes: int = 30, tol: float = 1e-5, chunk_rows: int = 262144,
                 inner_max_iter: int = 50, device="auto", dtype=torch.float32, progress: bool = True) -> dict:
    """Fit H on a matrix too large for memory (``.npy`` path or Zarr array), reading it chunk by chunk.

    One pass: W of every chunk is solved with H fixed (non-negative least squares), and only Wᵀ·W (K × K),
    Wᵀ·V (K × C) and the error terms are accumulated; H is then updated by HALS from these statistics. Returns
    ``components`` (H), ``relative_error`` per pass and ``passes``."""
    from tqdm.auto import tqdm

    reader = RowChunks(source, chunk_rows)
    n, c = reader.shape
    _check_k(n_components, c)
    dev = select_device(device)
    # NNDSVD-style start for H from the Gram matrix (one pass), as in the in-memory fit
    gram = torch.zeros(c, c, dtype=torch.float64, device=dev)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for chunk in reader:
        check_features(chunk, "a chunk of the feature matrix")
        ct = torch.as_tensor(chunk, device=dev).double()
        gram += ct.T @ ct
        total += ct.sum()
    right, sigma = _nndsvda(gram, n_components, dtype)
    H = (torch.sqrt(sigma)[:, None] * right).abs().to(dev)
    H[H == 0] = float(total) / (n * c)
    errors = []
    bar = tqdm(range(passes), desc=f"streamed NMF (K={n_components})", disable=not progress, leave=False)
    for _ in bar:
        WtW = torch.zeros(n_components, n_components, dtype=dtype, device=dev)
        WtV = torch.zeros(n_components, c, dtype=dtype, device=dev)
        sq_norm, cross = 0.0, 0.0
        HHt = H @ H.T
        for chunk in reader:
            Vb = torch.as_tensor(chunk, dtype=dtype, device=dev)
            W, VHt = _solve_w(Vb, H, HHt, inner_max_iter, 1e-4)
            WtW += W.T @ W
            WtV += W.T @ Vb
            sq_norm += float((Vb * Vb).sum())
            cross += float((W * VHt).sum())
        err = math.sqrt(max(sq_norm - 2 * cross + float((WtW * HHt).sum()), 0.0) / sq_norm)
        errors.append(err)
        bar.set_postfix(rel_error=f"{err:.4f}")
        _update_h(H, WtV, WtW, 3)
        if len(errors) > 1 and errors[-2] - errors[-1] < tol * errors[-2]:
            break
    return {"components": H.cpu().numpy(), "relative_error": errors, "passes": len(errors), "shape": (n, c)}


# ------------------------------------------------------------------------------------- slide stitching
def stitch_feature_maps(maps, coords, cell_px: int, grid_shape, border: int = 2):
    """Average the feature vectors of overlapping tiles on one slide grid (paper 000 §2.2).

    maps: T × C × h × w activations of T tiles; coords: T × 2 top-left pixel (row, col) of each tile;
    cell_px: the layer's stride in pixels (16 for VGG-16's last conv); grid_shape: (rows, cols) of the slide
    grid. Each tile's ``border``-cell outline is dropped first. Returns (mean vectors rows × cols × C, count)."""
    maps = np.asarray(maps, np.float32)
    coords = np.asarray(coords)
    if maps.ndim != 4 or len(maps) != len(coords):
        raise ValueError(f"maps must be T×C×h×w with one coordinate per tile, got {maps.shape} and {coords.shape}.")
    if len(maps) == 0:
        raise ValueError("no tile to stitch: the slide has no tile with enough tissue (lower MIN_TISSUE).")
    t, c, h, w = maps.shape
    if 2 * border >= min(h, w):
        raise ValueError(f"border={border} removes the whole {h}×{w} feature map; use a smaller border.")
    if np.any(coords < 0):
        raise ValueError(f"tile coordinates must be non-negative (top-left pixel on the slide); got {coords.min()}: a "
                         "negative coordinate would wrap to the far edge of the slide grid.")
    if np.any(coords % cell_px):
        raise ValueError(f"tile coordinates must be multiples of the layer stride ({cell_px} px) to stitch.")
    rows, cols = grid_shape
    total = np.zeros((rows, cols, c), np.float64)
    count = np.zeros((rows, cols), np.int64)
    inner = maps[:, :, border: h - border, border: w - border].transpose(0, 2, 3, 1)  # T × h' × w' × C
    ii, jj = np.mgrid[border: h - border, border: w - border]
    for k in range(t):
        r, q = coords[k] // cell_px
        rr, cc = r + ii, q + jj
        ok = (rr < rows) & (cc < cols)
        np.add.at(total, (rr[ok], cc[ok]), inner[k][ok])
        np.add.at(count, (rr[ok], cc[ok]), 1)
    mean = np.where(count[..., None] > 0, total / np.maximum(count, 1)[..., None], 0.0).astype(np.float32)
    return mean, count


def seam_index(weights, count, period: int) -> float:
    """How much of a stitched concept map is a lattice of the tiling: for each concept, the variance of its mean
    intensity over the ``period`` phases (cell row mod period, and column mod period) divided by the variance of
    its intensity over the covered cells; the largest over concepts and the two axes. About 0 when the map does
    not depend on where the tiles start (≈ 1/cells per phase for noise), up to 1 for a pure lattice.
    ``weights`` rows × cols × K (NaN where uncovered), ``count`` rows × cols, ``period`` = tile stride / cell."""
    weights, count = np.asarray(weights, np.float64), np.asarray(count)
    if weights.ndim != 3 or weights.shape[:2] != count.shape:
        raise ValueError(f"weights {weights.shape} must be rows × cols × K on the grid of count {count.shape}.")
    if int(period) < 2:
        raise ValueError(f"period={period}: a lattice repeats every 2 or more cells (tile stride / layer stride).")
    rows, cols = np.nonzero(count > 0)
    worst = 0.0
    for j in range(weights.shape[-1]):
        values = weights[rows, cols, j]
        total = values.var()
        if not np.isfinite(total) or total == 0:
            continue
        for position in (rows, cols):
            phase_means = [values[position % period == p].mean() for p in range(period) if (position % period == p).any()]
            worst = max(worst, float(np.var(phase_means) / total))
    return worst


def concept_maps(mean_vectors, count, H, batch_rows: int = 262144):
    """Concept intensities (rows × cols × K, NaN where no tile covers the cell) and the cluster map (argmax,
    −1 where uncovered) of stitched slide vectors."""
    rows, cols, c = mean_vectors.shape
    covered = count > 0
    W = np.full((rows, cols, len(H)), np.nan, np.float32)
    if covered.any():
        W[covered] = transform(mean_vectors[covered], H, batch_rows=batch_rows)
    clusters = np.where(covered, np.nan_to_num(W, nan=-1).argmax(-1), -1)
    return W, clusters


# --------------------------------------------------------------------------------- concepts of one region
@dataclass
class RegionConcepts:
    """Concepts of one image region (a real slide region, say): the tiles, the stitched layer grid and the NMF."""
    tiles: dict              # tissue.tile_slide result: coords (top-left row, col) and tissue_fraction per tile
    n_channels: int          # channels of the layer
    cell: int                # pixels per cell of the layer grid (the layer's stride)
    mean: np.ndarray         # rows × cols × C: feature vectors averaged over the tiles that cover each cell
    count: np.ndarray        # rows × cols: how many tiles cover each cell
    nmf: "NMF | None"        # fitted on the covered cells (None when concepts fitted elsewhere were applied)
    weights: np.ndarray      # rows × cols × K concept intensities (NaN where uncovered)
    clusters: np.ndarray     # rows × cols: the strongest concept of each cell (−1 where uncovered)

    @property
    def covered(self) -> np.ndarray:
        return self.count > 0


def region_concepts(rgb, model, layer: str, n_concepts: int | None, tile: int, stride: int, min_tissue: float = 0.5,
                    normalise=None, border: int = 1, batch_size: int = 16, seed: int = 0, device="auto",
                    tissue_mask=None, H=None) -> RegionConcepts:
    """Paper 000's pipeline on one RGB region: tissue mask (:func:`helpers.data.tissue.tissue_mask_from_rgb` unless
    given), tiles of ``tile`` px every ``stride`` px with at least ``min_tissue`` tissue, the activations of
    ``layer`` for every tile, their feature maps stitched onto one grid (each tile's ``border`` cells dropped), NMF
    with ``n_concepts`` concepts on the covered cells, and the concept maps.

    With ``H`` (K × C concepts fitted elsewhere, e.g. on the training slides) nothing is fitted: the region's
    intensities of those concepts are inferred with H fixed, as the paper does on its test slides.
    A ``stride`` equal to the layer's stride (one cell) averages every cell over the same tile positions, which
    keeps the tiling's lattice out of the maps (:func:`seam_index`)."""
    from ..data.tissue import tile_slide, tissue_mask_from_rgb
    from ..features import layer_activations

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be an H×W×3 image, got shape {rgb.shape}.")
    if (H is None) == (n_concepts is None):
        raise ValueError("give either n_concepts (fit concepts on this region) or H (apply concepts fitted "
                         "elsewhere), not both or neither.")
    mask = tissue_mask_from_rgb(rgb) if tissue_mask is None else np.asarray(tissue_mask, bool)
    tiles = tile_slide(mask, tile, stride, min_tissue)
    images = np.stack([rgb[y: y + tile, x: x + tile] for y, x in tiles["coords"]])
    maps = layer_activations(model, layer, images, batch_size=batch_size, device=device, normalise=normalise,
                             desc=f"{layer} features")
    cell = tile // maps.shape[-1]
    grid = (rgb.shape[0] // cell, rgb.shape[1] // cell)
    mean, count = stitch_feature_maps(maps, tiles["coords"], cell, grid, border=border)
    if H is None:
        nmf = NMF(n_concepts, device=device, seed=seed).fit(mean[count > 0])
        H = nmf.components_
    else:
        nmf = None
        _check_h(np.asarray(H, np.float32), mean.shape[-1])
    weights, clusters = concept_maps(mean, count, H)
    return RegionConcepts(tiles, int(maps.shape[1]), cell, mean, count, nmf, weights, clusters)


SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".bif")
CONCEPT_COLOURS = np.array([[228, 26, 28], [55, 126, 184], [77, 175, 74], [152, 78, 163], [255, 127, 0],
                            [255, 255, 51], [166, 86, 40], [247, 129, 191], [153, 153, 153], [0, 0, 0]], np.uint8)


def _slide_stem(path: Path) -> str:
    """The file name without its slide suffix (the longest of SLIDE_SUFFIXES that it ends with), checked as a name."""
    from ..cache import safe_name

    name = path.name
    suffix = max((s for s in SLIDE_SUFFIXES + (".ome.tif", ".ome.tiff") if name.lower().endswith(s)), key=len,
                 default="")
    return safe_name(name[: len(name) - len(suffix)] or name, "slide file name")


def apply_to_folder(folder, model, layer: str, H, out_dir, tile: int, stride: int, mpp: float | None = None,
                    max_pixels: float = 32e6, min_tissue: float = 0.5, normalise=None, border: int = 1,
                    batch_size: int = 16, device="auto") -> list:
    """Apply concepts fitted elsewhere (``H``, K × C, e.g. on the training slides) to every slide file of
    ``folder`` (:data:`SLIDE_SUFFIXES`), each opened lazily with :class:`helpers.data.slides.Slide`: the finest
    pyramid level with at most ``max_pixels`` pixels is read, at ``mpp`` µm/px when given (the training data's
    pixel size; the level closest to it from below, then resized), and :func:`region_concepts` infers the concept
    intensities with H fixed. For each slide ``out_dir/<slide>/`` (a folder helpers owns; rebuilt only if helpers
    wrote it) gets:

    - ``concepts.zarr``: ``weights`` (rows × cols × K, NaN uncovered), ``clusters`` (rows × cols, −1 uncovered),
      with the cell size in level-0 pixels, the level and H's shape as attributes;
    - ``concepts.ome.tif``: the cluster map in colour at the read level's resolution, a pyramidal OME-TIFF with
      the pixel size, which QuPath opens beside the slide;
    - ``overview.png``: the slide's thumbnail beside the cluster map.

    Returns one dict per slide (slide, level, downsample, µm per pixel read, share of cells per concept, output
    folder)."""
    import zarr
    from skimage.transform import resize

    from ..cache import building
    from ..data.slides import Slide, write_pyramidal_tiff

    folder, out_dir = Path(folder), Path(out_dir)
    H = np.asarray(H, np.float32)
    if H.ndim != 2:
        raise ValueError(f"H has shape {H.shape}; concepts fitted elsewhere are a K × C matrix (NMF components).")
    if len(H) > len(CONCEPT_COLOURS):
        raise ValueError(f"{len(H)} concepts; the colour table has {len(CONCEPT_COLOURS)} — fit fewer concepts.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SLIDE_SUFFIXES)) \
        if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder} holds no slide files ({', '.join(SLIDE_SUFFIXES)}).")
    # one output folder per slide, named after the file without its slide suffix: case7.HE.ome.tif → case7.HE, so
    # that case7.HE.ome.tif and case7.IHC.ome.tif never share (and overwrite) one folder
    stems = {path: _slide_stem(path) for path in files}
    clashes = {}
    for path, stem in stems.items():
        clashes.setdefault(stem.lower(), []).append(path.name)
    clashes = {k: v for k, v in clashes.items() if len(v) > 1}
    if clashes:
        raise ValueError(f"slides {'; '.join(' and '.join(v) for v in clashes.values())} in {folder} would share one "
                         "output folder (their names differ only in the suffix or in case); rename one of them.")
    results = []
    for path in files:
        stem = stems[path]
        with Slide(path) as slide:
            level = slide.best_level(mpp) if mpp is not None else 0
            while slide.level_dimensions[level][0] * slide.level_dimensions[level][1] > max_pixels and \
                    level + 1 < slide.level_count:
                level += 1
            rgb = slide.read_level(level, max_pixels=max_pixels)
            downsample = slide.level_downsamples[level]
            if mpp is not None and slide.level_mpp(level) < mpp * 0.99:     # resize the rest of the way
                factor = slide.level_mpp(level) / mpp
                shape = (max(tile, int(round(rgb.shape[0] * factor))), max(tile, int(round(rgb.shape[1] * factor))))
                rgb = (resize(rgb, shape, order=1, anti_aliasing=True, preserve_range=True)).round().astype(np.uint8)
                downsample /= factor
            slide_mpp = slide.mpp * downsample if slide.file_mpp is not None or mpp is not None else None
        region = region_concepts(rgb, model, layer, None, tile, stride, min_tissue=min_tissue, normalise=normalise,
                                 border=border, batch_size=batch_size, device=device, H=H)
        colour = np.where(region.clusters[..., None] >= 0, CONCEPT_COLOURS[np.maximum(region.clusters, 0)], 255)
        colour = np.repeat(np.repeat(colour.astype(np.uint8), region.cell, 0), region.cell, 1)
        with building(out_dir / stem) as target:
            group = zarr.open_group(str(target / "concepts.zarr"), mode="w")
            group.create_array("weights", data=region.weights.astype(np.float32))
            group.create_array("clusters", data=region.clusters.astype(np.int16))
            group.attrs.update({"slide": path.name, "level": int(level), "cell_level0_px": float(region.cell * downsample),
                                "n_concepts": int(len(H)), "n_channels": int(H.shape[1]), "layer": layer})
            if slide_mpp is not None:
                write_pyramidal_tiff(target / "concepts.ome.tif", colour, mpp=slide_mpp, min_side=256)
            _overview(rgb, colour, target / "overview.png", f"{path.name}: concepts (level {level})")
        covered = region.clusters[region.clusters >= 0]
        results.append({"slide": path.name, "level": int(level), "downsample": float(downsample), "mpp": slide_mpp,
                        "concept_share": [float(np.mean(covered == k)) if covered.size else 0.0 for k in range(len(H))],
                        "output": out_dir / stem})
    return results


def _overview(rgb, colour, path, title):
    # a Figure without pyplot: writing the file does not touch the notebook's backend or its open figures
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5))
    axes = fig.subplots(1, 2)
    axes[0].imshow(rgb)
    axes[1].imshow(colour[: rgb.shape[0], : rgb.shape[1]])
    for ax, name in zip(axes, ("slide", "strongest concept per cell")):
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def stain_correlations(rgb, region: RegionConcepts, stain: int = 0) -> list:
    """Pearson correlation, over the covered cells, of each concept's intensity with the density of one stain
    (``skimage.color.rgb2hed`` channel: 0 hematoxylin, 1 eosin, 2 DAB) averaged over each cell."""
    from skimage.color import rgb2hed

    from ..explain import block_mean

    rows, cols = region.count.shape
    density = rgb2hed(check_range(np.asarray(rgb), "rgb")[: rows * region.cell, : cols * region.cell])[..., stain]
    density_cells = block_mean(density[None], region.cell)[0]
    covered = region.covered
    return [float(np.corrcoef(region.weights[..., j][covered], density_cells[covered])[0, 1])
            for j in range(region.weights.shape[-1])]


# ------------------------------------------------------------------------ analyses of paper 000 §3.2–3.3
def tile_concepts(model, layer_name: str, H, images, batch_size: int = 64, device="auto", normalise=None,
                  desc: str | None = None) -> np.ndarray:
    """Concept intensities of every position of every tile: T × K × h × w (features of ``layer_name``, W with
    H fixed), streamed batch by batch."""
    from tqdm.auto import tqdm

    from ..features import iter_activations

    H = np.asarray(H, np.float32)
    out = []
    total = int(np.ceil(len(images) / batch_size))
    for acts in tqdm(iter_activations(model, layer_name, images, batch_size, device, normalise), total=total,
                     desc=desc, leave=False, disable=desc is None):
        b, c, h, w = acts.shape
        W = transform(acts.transpose(0, 2, 3, 1).reshape(-1, c), H, device=device)
        out.append(W.reshape(b, h, w, -1).transpose(0, 3, 1, 2))
    return np.concatenate(out)


AGGREGATIONS = ("sum", "coverage", "max", "mean_positive")


def aggregate(concept_weights, how: str = "sum") -> np.ndarray:
    """Per-tile concept scores from T × K × h × w intensities: ``sum`` of weights (paper 000's choice),
    ``coverage`` (share of positions where the concept is the strongest), ``max`` weight, ``mean_positive``
    (mean over the positions where the weight is positive)."""
    Wt = numeric(concept_weights, "concept_weights", ndim=(3, 4), layout="T × K × h × w (or T × K × positions)",
                 fix="Give concept_maps' intensities of the tiles.")
    t, k = Wt.shape[:2]
    flat = Wt.reshape(t, k, -1)
    if how == "sum":
        return flat.sum(-1)
    if how == "coverage":
        winner = flat.argmax(1)
        return np.stack([(winner == j).mean(-1) for j in range(k)], 1)
    if how == "max":
        return flat.max(-1)
    if how == "mean_positive":
        positive = flat > 0
        return np.where(positive.any(-1), (flat * positive).sum(-1) / np.maximum(positive.sum(-1), 1), 0.0)
    raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}.")


def weight_correlations(concept_weights):
    """Mean and std over tiles of the Pearson correlation between concept maps within a tile (paper's Fig. 4,
    left). Tiles where a concept is constant do not count for its pairs."""
    Wt = numeric(concept_weights, "concept_weights", ndim=(3, 4), layout="T × K × h × w (or T × K × positions)",
                 fix="Give concept_maps' intensities of the tiles.")
    t, k = Wt.shape[:2]
    flat = Wt.reshape(t, k, -1)
    centred = flat - flat.mean(-1, keepdims=True)
    norm = np.linalg.norm(centred, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.einsum("tip,tjp->tij", centred, centred) / (norm[:, :, None] * norm[:, None, :])
    return np.nanmean(corr, 0), np.nanstd(corr, 0)


def cosine_similarity(H) -> np.ndarray:
    """Cosine similarity of the concept vectors (rows of H; paper's Fig. 4, right)."""
    H = numeric(H, "H", ndim=2, layout="K × channels (one concept per row)")
    unit = H / (np.linalg.norm(H, axis=1, keepdims=True) + _EPS)
    return unit @ unit.T


def logistic_surrogate(scores, model_positive, seed: int = 0, test_fraction: float = 0.3, groups=None,
                       n_folds: int = 5) -> dict:
    """Paper 000's Table 1: a logistic regression predicting the MODEL's decision from per-tile concept scores.

    Scores are standardised (so coefficients compare across concepts). Without ``groups``: fitted on a stratified
    ``1 − test_fraction`` of the tiles, scored on the rest. With ``groups`` (e.g. each tile's slide): every tile is
    scored by a model fitted on the other slides' tiles (``n_folds``-fold GroupKFold, at most one fold per slide),
    so neighbouring tiles of one slide never sit on both sides; the coefficients are then those of a fit on all
    tiles. Returns the coefficients, accuracy, precision, recall, F1 and ROC AUC on the held-out tiles, and the
    held-out tiles themselves (``test_index``, ``test_probability``, ``test_label``) for paired comparisons."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
    from sklearn.model_selection import GroupKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(scores, np.float64)
    y = np.asarray(model_positive).astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < 5:
        raise ValueError(f"the model makes {counts[1]} positive and {counts[0]} negative decisions on these tiles; "
                         f"a surrogate needs at least 5 of each (sample more tiles, including tumour ones).")

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    if groups is None:
        index = np.arange(len(y))
        train, test = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=y)
        clf = model().fit(X[train], y[train])
        p, split, folds = clf.predict_proba(X[test])[:, 1], "tiles (one stratified split)", 1
    else:
        groups = np.asarray(groups)
        if groups.shape != y.shape:
            raise ValueError(f"groups has shape {groups.shape}, model_positive {y.shape}; give one group (slide) per "
                             "tile.")
        folds = min(int(n_folds), len(np.unique(groups)))
        if folds < 2:
            raise ValueError(f"groups holds {len(np.unique(groups))} distinct value(s); a split by group needs tiles "
                             "of at least two slides (sample tiles from more slides, or pass groups=None).")
        test, p = np.arange(len(y)), np.empty(len(y))
        for train_idx, test_idx in GroupKFold(n_splits=folds).split(X, y, groups):
            if np.unique(y[train_idx]).size < 2:
                raise ValueError(f"a training fold without the slides {np.unique(groups[test_idx]).tolist()} holds "
                                 "only one of the model's decisions; sample tiles from more slides of both kinds.")
            p[test_idx] = model().fit(X[train_idx], y[train_idx]).predict_proba(X[test_idx])[:, 1]
        clf = model().fit(X, y)
        split = f"slides ({folds}-fold GroupKFold)"
    y_te = y[test]
    pred = p > 0.5
    return {"coefficients": clf[-1].coef_[0].tolist(), "accuracy": float(accuracy_score(y_te, pred)),
            "precision": float(precision_score(y_te, pred, zero_division=0)),
            "recall": float(recall_score(y_te, pred, zero_division=0)), "f1": float(f1_score(y_te, pred, zero_division=0)),
            "auc": float(roc_auc_score(y_te, p)), "n_train": int(len(y) - len(test)) if groups is None else int(len(y)),
            "n_test": int(len(test)), "split": split, "n_folds": folds, "test_index": test, "test_probability": p,
            "test_label": y_te}


def random_components(n_components: int, n_channels: int, seed: int = 0) -> np.ndarray:
    """K random non-negative concept vectors (|N(0, 1)| per channel, unit norm): the "concepts" of a baseline that
    knows nothing of the data, to tell what NMF adds over any K non-negative projections of the same activations."""
    _check_k(n_components, n_channels)
    H = np.abs(np.random.default_rng(seed).standard_normal((n_components, n_channels)))
    return (H / np.linalg.norm(H, axis=1, keepdims=True)).astype(np.float32)


def cam_agreement(concept_weights, cams, predicted_positive) -> dict:
    """Paper 000's Table 2 for every concept: IoU of the concept's positive region (weight > 0) with the positive
    CAM region (CAM > 0), and the Pearson correlation of concept weights with the CAM, per tile; means and stds
    over all tiles (IoU) and split by the model's predicted label (correlations). ``cams`` are T × h × w on
    the concepts' grid.

    A correlation is undefined on a tile where the CAM or the concept's weights are constant (e.g. a CAM that is 0
    everywhere, common on tiles the model calls benign); such tiles are left out of the means and counted:
    ``constant_cam_benign`` / ``constant_cam_cancer`` (tiles whose CAM is constant) and ``corr_benign_undefined`` /
    ``corr_cancer_undefined`` (per concept, every tile left out). The per-tile values are returned too (``iou``,
    ``corr``: T × K, NaN where undefined) for intervals."""
    Wt = np.asarray(concept_weights, np.float64)
    cams = np.asarray(cams, np.float64)
    if cams.shape != (Wt.shape[0],) + Wt.shape[2:]:
        raise ValueError(f"CAM maps {cams.shape} must be T × h × w on the concept grid {Wt.shape[2:]}.")
    t, k = Wt.shape[:2]
    flat, cam = Wt.reshape(t, k, -1), cams.reshape(t, 1, -1)
    pos_w, pos_c = flat > 0, cam > 0
    union = (pos_w | pos_c).sum(-1)
    iou = np.where(union > 0, (pos_w & pos_c).sum(-1) / np.maximum(union, 1), np.nan)
    cw, cc = flat - flat.mean(-1, keepdims=True), cam - cam.mean(-1, keepdims=True)
    norms = np.linalg.norm(cw, axis=-1) * np.linalg.norm(cc, axis=-1)
    corr = np.where(norms > 0, (cw * cc).sum(-1) / np.where(norms > 0, norms, 1.0), np.nan)
    positive = np.asarray(predicted_positive, bool)
    constant_cam = np.ptp(cams.reshape(t, -1), axis=-1) == 0
    with warnings.catch_warnings():      # a concept without a defined value on any tile: NaN, said by the counts
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {"iou_mean": np.nanmean(iou, 0), "iou_std": np.nanstd(iou, 0),
                 "corr_benign_mean": np.nanmean(corr[~positive], 0), "corr_benign_std": np.nanstd(corr[~positive], 0),
                 "corr_cancer_mean": np.nanmean(corr[positive], 0), "corr_cancer_std": np.nanstd(corr[positive], 0)}
    return {**means,
            "constant_cam_benign": int(constant_cam[~positive].sum()),
            "constant_cam_cancer": int(constant_cam[positive].sum()),
            "corr_benign_undefined": np.isnan(corr[~positive]).sum(0).tolist(),
            "corr_cancer_undefined": np.isnan(corr[positive]).sum(0).tolist(),
            "n_benign": int((~positive).sum()), "n_cancer": int(positive.sum()), "iou": iou, "corr": corr}


def region_iou(clusters, regions: dict, n_concepts: int) -> dict:
    """IoU of every concept's region (cells where it is the strongest, ``clusters`` = argmax maps) with each
    named boolean region on the same grid. Returns name → list of K IoUs."""
    clusters = np.asarray(clusters)
    k = int(n_concepts)
    out = {}
    for name, region in regions.items():
        region = np.asarray(region, bool)
        if region.shape != clusters.shape:
            raise ValueError(f"region {name!r} has shape {region.shape}, the cluster maps {clusters.shape}.")
        ious = []
        for j in range(k):
            mine = clusters == j
            union = (mine | region).sum()
            ious.append(float((mine & region).sum() / union) if union else 0.0)
        out[name] = ious
    return out


def shuffled_region_iou(clusters, region, concept: int, n_shuffles: int = 200, seed: int = 0) -> np.ndarray:
    """The chance level of :func:`region_iou` for one concept: its IoU with ``region`` after the concept labels
    have been shuffled among the covered cells (label ≥ 0) of each map, so that the concept keeps its number of
    cells on every slide but loses where they are. ``clusters`` is one map (h × w) or a stack (N × h × w, shuffled
    map by map). Returns ``n_shuffles`` IoUs."""
    clusters = np.asarray(clusters)
    region = np.asarray(region, bool)
    if region.shape != clusters.shape:
        raise ValueError(f"region has shape {region.shape}, the cluster maps {clusters.shape}; give both on one grid.")
    if not (isinstance(n_shuffles, (int, np.integer)) and n_shuffles >= 1):
        raise ValueError(f"n_shuffles={n_shuffles!r}: give a positive number of shuffles (e.g. 200).")
    maps = clusters.reshape((-1,) + clusters.shape[-2:])
    regions = region.reshape(maps.shape)
    rng = np.random.default_rng(seed)
    covered = [np.flatnonzero(m.ravel() >= 0) for m in maps]
    out = np.empty(n_shuffles)
    for i in range(n_shuffles):
        inter = union = 0
        for m, r, cells in zip(maps, regions, covered):
            mine = np.zeros(m.size, bool)
            mine[cells] = rng.permutation(m.ravel()[cells]) == concept
            inter += int((mine & r.ravel()).sum())
            union += int((mine | r.ravel()).sum())
        out[i] = inter / union if union else 0.0
    return out


def match_concepts(H_reference, H_other) -> dict:
    """Which concept of another NMF (another seed, another K) is each reference concept? One-to-one matching of the
    rows of H by cosine similarity, maximising the total (Hungarian algorithm, scipy.optimize.linear_sum_assignment).
    Returns ``match`` (per reference concept: the index of its partner in ``H_other``, −1 when ``H_other`` has fewer
    concepts and it got none) and ``cosine`` (the pair's cosine similarity, NaN without a partner)."""
    from scipy.optimize import linear_sum_assignment

    A = numeric(H_reference, "H_reference", ndim=2, layout="K × channels", fix="Give an NMF's components_.")
    B = numeric(H_other, "H_other", ndim=2, layout="K × channels", fix="Give an NMF's components_.")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"H_reference has {A.shape[1]} channels and H_other {B.shape[1]}; concepts of the same layer "
                         "are matched.")
    cos = (A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), _EPS)) @ \
        (B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), _EPS)).T
    rows, cols = linear_sum_assignment(cos, maximize=True)
    match = np.full(len(A), -1)
    match[rows] = cols
    cosine = np.array([cos[i, j] if j >= 0 else np.nan for i, j in enumerate(match)])
    return {"match": match.tolist(), "cosine": cosine.tolist()}


def remove_concepts(model, layer_name: str, H, images, score=None, control_seed: int = 0, batch_size: int = 64,
                    device="auto", normalise=None, desc: str | None = None) -> dict:
    """A causal test of the concepts: does the model's decision need them? For every tile and every concept k, the
    layer's activations A (h × w × C) lose that concept's part, A − W_k·H_k (W by non-negative least squares with H
    fixed, as :func:`transform`), clipped at 0 because the layer is the output of a ReLU and the rest of the network
    never saw negative values; the network then runs on from the layer. The control removes, at the same positions
    and with the same weights W_k, a random non-negative direction of the same norm as H_k (one per concept, seeded
    by ``control_seed``): what any removal of that size does.

    ``score`` maps the model's output batch to one number per tile (default: sigmoid of the first output, P(cancer)
    for the tile classifier). Returns ``original`` (T), ``removed`` (T × K), ``control`` (T × K) scores and the
    control directions."""
    from tqdm.auto import tqdm

    from ..features import iter_batches
    from ..models import get_layer

    H = np.asarray(H, np.float32)
    k, c = H.shape
    control = np.abs(np.random.default_rng(control_seed).standard_normal((k, c))).astype(np.float32)
    control *= (np.linalg.norm(H, axis=1) / np.linalg.norm(control, axis=1))[:, None]
    score = score or (lambda out: torch.sigmoid(out[:, 0]))
    dev = select_device(device)
    model.to(dev).eval()
    layer = get_layer(model, layer_name)
    replacement = {}

    def hook(module, inputs, output):
        replacement["seen"] = output.detach()
        return replacement.get("new", output)

    handle = layer.register_forward_hook(hook)
    original, removed, controlled = [], [], []
    try:
        total = int(np.ceil(len(images) / batch_size))
        with torch.no_grad():
            for x in tqdm(iter_batches(images, batch_size), total=total, desc=desc, leave=False, disable=desc is None):
                x = x.to(dev)
                x = normalise(x) if normalise is not None else x
                replacement.pop("new", None)
                original.append(score(model(x)).float().cpu().numpy())
                acts = replacement["seen"].float()
                b, _, h, w = acts.shape
                W = transform(acts.permute(0, 2, 3, 1).reshape(-1, c).cpu().numpy(), H, device=device)
                W = torch.as_tensor(W, device=dev).reshape(b, h, w, k).permute(0, 3, 1, 2)
                per_concept = {"removed": [], "control": []}
                for j in range(k):
                    for name, direction in (("removed", H[j]), ("control", control[j])):
                        part = W[:, j: j + 1] * torch.as_tensor(direction, device=dev)[None, :, None, None]
                        replacement["new"] = torch.clamp_min(acts - part, 0.0).to(replacement["seen"].dtype)
                        per_concept[name].append(score(model(x)).float().cpu().numpy())
                replacement.pop("new", None)
                removed.append(np.stack(per_concept["removed"], 1))
                controlled.append(np.stack(per_concept["control"], 1))
    finally:
        handle.remove()
    return {"original": np.concatenate(original), "removed": np.concatenate(removed),
            "control": np.concatenate(controlled), "control_directions": control}
