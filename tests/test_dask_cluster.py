"""Extraction by path on a real multi-process Dask cluster: a `dask scheduler` and two `dask worker` processes started
here on localhost (each bounded in time, stopped at the end), two pyramidal slides that the workers open themselves,
and stores equal to those of a run in this process."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.data import bundled, slides
from helpers.methods.seeded import embeddings

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("dask.distributed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers as separate processes; each stops by itself after 5 minutes."""
    from dask.distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    dask = str(Path(sys.executable).parent / "dask")
    logs = tmp_path_factory.mktemp("dask-logs")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard",
                               "--idle-timeout", "300s"], env=env, cwd=ROOT,
                              stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT)]
    time.sleep(1.0)
    for i in range(2):
        procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--no-dashboard", "--lifetime", "300s", "--death-timeout", "60s",
                                       "--name", f"worker-{i}"], env=env, cwd=ROOT,
                                      stdout=open(logs / f"worker-{i}.log", "w"), stderr=subprocess.STDOUT))
    client = None
    try:
        client = Client(address, timeout="60s")
        client.wait_for_workers(2, timeout=120)
        yield client
    finally:
        if client is not None:
            client.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def two_slides(repo_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    with slides.Slide(bundled.real_file("cmu_small_region.svs", repo_data_dir), backend="tifffile") as cmu:
        a = cmu.read_region((500, 300), 0, (768, 1024))      # tissue, with some background
        b = cmu.read_region((900, 1800), 0, (1024, 768))
    return [slides.write_pyramidal_tiff(folder / "slide_a.ome.tif", a, mpp=0.499, min_side=256),
            slides.write_pyramidal_tiff(folder / "slide_b.ome.tif", b, mpp=0.499, min_side=256)]


def test_workers_read_their_own_slides_and_match_the_local_run(cluster, two_slides, tmp_path):
    spec = embeddings.random_encoder(seed=1, widths=(8, 8, 16, 16), input_size=32)
    workers = cluster.scheduler_info()["workers"]
    assert len(workers) == 2
    remote = embeddings.extract_embeddings_from_files(cluster, two_slides, spec, tmp_path / "remote", patch=128,
                                                      stride=128, level=1)
    # the workers opened the slides and built the encoder themselves: nothing of it exists in this process yet
    built = cluster.run(lambda: sorted(embeddings._MODULES))
    assert sum(bool(keys) for keys in built.values()) >= 1 and spec.fingerprint() not in embeddings._MODULES
    local = embeddings.extract_embeddings_from_files(None, two_slides, spec, tmp_path / "local", patch=128,
                                                     stride=128, level=1)
    for r, lo in zip(remote, local):
        a, b = embeddings.read_store(r), embeddings.read_store(lo)
        assert len(a.embeddings) > 4 and a.meta["level"] == 1 and a.meta["level0_patch_size"] == pytest.approx(256)
        np.testing.assert_array_equal(a.centres, b.centres)
        np.testing.assert_allclose(a.embeddings, b.embeddings, rtol=1e-5, atol=1e-6)
    # a second call reuses the stores (nothing is submitted)
    again = embeddings.extract_embeddings_from_files(cluster, two_slides, spec, tmp_path / "remote", patch=128,
                                                     stride=128, level=1)
    assert again == remote
    # stores at an fsspec URL every worker reaches: the same stores, written through fsspec by the workers
    url_root = f"file://{tmp_path}/url-stores"
    at_url = embeddings.extract_embeddings_from_files(cluster, two_slides, spec, url_root, patch=128, stride=128,
                                                      level=1)
    assert all(str(p).startswith("file://") for p in at_url)
    for u, lo in zip(at_url, local):
        np.testing.assert_allclose(embeddings.read_store(u).embeddings, embeddings.read_store(lo).embeddings,
                                   rtol=1e-5, atol=1e-6)


def test_grid_keeps_tissue_patches_only(two_slides):
    with slides.Slide(two_slides[0]) as slide:
        centres = embeddings.slide_grid(slide, 128, 128, level=0, min_tissue=0.5)
        everything = embeddings.slide_grid(slide, 128, 128, level=0, min_tissue=0.0)
        width, height = slide.dimensions
    assert 0 < len(centres) < len(everything) == (height // 128) * (width // 128)
    assert centres[:, 0].max() <= height - 64 and centres[:, 1].max() <= width - 64
