"""Embedding stores written through Dask, read back by another process; encoders against the networks they
wrap; SimCLR's loss against its definition; the click protocol and its errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.methods.seeded import embeddings, sic, simclr

ROOT = Path(__file__).resolve().parent.parent


def toy_slides(n=2, size=192, seed=0):
    """Slides with a pink (benign-looking) left half and a dark purple (cancer-looking) right half."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rgb = np.empty((size, size, 3), np.uint8)
        rgb[:, : size // 2] = (235, 160, 200)
        rgb[:, size // 2:] = (90, 50, 140)
        rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
        tissue = np.ones((size, size), bool)
        tissue[:16] = False
        out.append((f"slide_{i}", rgb, tissue))
    return out


@pytest.fixture(scope="module")
def dask_client():
    client = embeddings.dask_client(n_workers=2)
    yield client
    client.close()


THREAD_SETTINGS = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "PYTHONHASHSEED")}


def test_the_local_cluster_leaves_this_process_environment_alone(dask_client):
    """Dask's nannies set OMP_NUM_THREADS=1 & co. in the parent's environment; a notebook kernel started later would
    run torch on one thread and record other numbers."""
    assert len(dask_client.scheduler_info()["workers"]) == 2
    assert {k: os.environ.get(k) for k in THREAD_SETTINGS} == THREAD_SETTINGS
    assert "__DASK_PARENT_PID" not in os.environ


def test_two_dask_workers_write_stores_that_a_fresh_process_reads_back_identically(dask_client, tmp_path):
    slides = toy_slides()
    spec = embeddings.random_encoder(seed=3, widths=(8, 16, 16, 32), input_size=32)
    assert len(dask_client.scheduler_info()["workers"]) == 2
    paths = embeddings.extract_embeddings(dask_client, slides, spec, tmp_path / "dask", patch=64, stride=32)
    # the encoder was built on the workers, not here
    built = dask_client.run(lambda: sorted(embeddings._MODULES))
    assert any(spec.fingerprint() in keys for keys in built.values())
    assert spec.fingerprint() not in embeddings._MODULES
    # the same extraction in this process is the reference
    local = embeddings.extract_embeddings(None, slides, spec, tmp_path / "local", patch=64, stride=32)
    reader = ("import json, sys, numpy as np; from helpers.methods.seeded import embeddings; "
              "stores = embeddings.read_stores(sys.argv[1:]); "
              "print(json.dumps([[s.embeddings.tolist(), s.centres.tolist(), s.meta['slide_id']] for s in stores]))")
    done = subprocess.run([sys.executable, "-c", reader, *map(str, paths)], capture_output=True, text=True, cwd=ROOT,
                          check=True)
    read_back = json.loads(done.stdout)
    for (emb, centres, sid), ref_path, (slide_id, _, tissue) in zip(read_back, local, slides):
        ref = embeddings.read_store(ref_path)
        np.testing.assert_array_equal(np.asarray(emb, np.float32), ref.embeddings)
        np.testing.assert_array_equal(np.asarray(centres, np.float32), ref.centres)
        np.testing.assert_array_equal(ref.centres, embeddings.patch_centres(tissue, 64, 32))
        assert sid == slide_id
    meta = embeddings.read_store(paths[0]).meta
    assert (meta["encoder"], meta["patch_size"], meta["stride"], meta["dims"]) == ("random", 64, 32, 32)
    # a second run reuses the stores instead of recomputing them
    stamp = [p.stat().st_mtime_ns for p in paths]
    assert embeddings.extract_embeddings(dask_client, slides, spec, tmp_path / "dask", 64, 32) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamp
    # another image under the same slide id is never served the old store
    changed = [(sid, 255 - rgb, tissue) for sid, rgb, tissue in slides[:1]]
    [path] = embeddings.extract_embeddings(None, changed, spec, tmp_path / "dask", 64, 32)
    assert path == paths[0] and path.stat().st_mtime_ns != stamp[0]
    assert embeddings.read_store(path).meta["slide_sha256"] == embeddings.slide_digest(*changed[0][1:])


def test_a_worker_error_reaches_the_caller_with_its_message(dask_client, tmp_path):
    (sid, rgb, tissue) = toy_slides(1)[0]
    with pytest.raises(ValueError, match="no tile has at least"):
        embeddings.extract_embeddings(dask_client, [(sid, rgb, np.zeros_like(tissue))], embeddings.handcrafted_encoder(),
                                      tmp_path, patch=64, stride=32)


def test_store_errors_are_named(tmp_path):
    meta = {"slide_id": "s", "encoder": "random", "encoder_fingerprint": "a", "layer": "l", "input_size": 32,
            "patch_size": 64, "stride": 32, "min_tissue": 0.5, "standardise": False}
    x, c = np.ones((5, 3)), np.zeros((5, 2))
    with pytest.raises(embeddings.StoreError, match="one .row, col. centre per embedded patch"):
        embeddings.write_store(tmp_path / "a.zarr", x, np.zeros((4, 2)), meta)
    with pytest.raises(embeddings.StoreError, match="NaN or inf"):
        embeddings.write_store(tmp_path / "a.zarr", np.where(np.eye(5, 3) > 0, np.nan, x), c, meta)
    first = embeddings.write_store(tmp_path / "a.zarr", x, c, meta)
    with pytest.raises(embeddings.StoreError, match="never overwritten"):
        embeddings.write_store(first, x, c, meta)
    other = embeddings.write_store(tmp_path / "b.zarr", x, c, meta | {"encoder": "simclr", "encoder_fingerprint": "b"})
    with pytest.raises(embeddings.StoreError, match="different runs mixed.*'simclr'.*'random'"):
        embeddings.read_stores([first, other])
    with pytest.raises(embeddings.StoreError, match="no embedding store"):
        embeddings.read_store(tmp_path / "missing.zarr")
    import zarr

    zarr.open_group(str(other), mode="r+")["embeddings"][0, 0] = 7.0      # silent corruption on disk
    with pytest.raises(embeddings.StoreError, match="checksum"):
        embeddings.read_store(other)
    with pytest.raises(embeddings.StoreError, match="unique"):
        embeddings.extract_embeddings(None, toy_slides(1) * 2, embeddings.handcrafted_encoder(), tmp_path, 64, 32)


def test_extraction_touches_nothing_outside_its_store_folder_and_no_folder_of_the_user(tmp_path):
    spec = embeddings.handcrafted_encoder()
    outside = tmp_path / "project.zarr"
    outside.mkdir()
    (outside / "notes.txt").write_text("the user's work")
    (_, rgb, tissue), = toy_slides(1)
    root = tmp_path / "stores" / "deep"
    with pytest.raises(ValueError, match="slide id"):
        embeddings.extract_embeddings(None, [("../../../project", rgb, tissue)], spec, root, 64, 32)
    assert (outside / "notes.txt").read_text() == "the user's work"
    # a folder of the user's where a store would go is refused, not replaced
    folder = embeddings.store_folder(root, spec, 64, 32, 0.5)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.zarr").mkdir()
    (folder / "mine.zarr" / "data.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not written by helpers"):
        embeddings.extract_embeddings(None, [("mine", rgb, tissue)], spec, root, 64, 32)
    assert (folder / "mine.zarr" / "data.txt").read_text() == "keep"
    # a stale store of its own is replaced, and nothing temporary is left behind
    [path] = embeddings.extract_embeddings(None, [("s", rgb, tissue)], spec, root, 64, 32)
    [again] = embeddings.extract_embeddings(None, [("s", 255 - rgb, tissue)], spec, root, 64, 32)
    assert again == path and embeddings.read_store(path).meta["slide_sha256"] == embeddings.slide_digest(255 - rgb, tissue)
    assert sorted(p.name for p in folder.iterdir()) == ["mine.zarr", "s.zarr"]


def test_encoders_equal_the_networks_they_wrap():
    import timm

    from helpers import models

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    vgg = models.VGG16TileClassifier(0.125).eval()
    got = embeddings.embed_patches(embeddings.supervised_encoder(vgg, 64), patches)
    with torch.no_grad():
        np.testing.assert_allclose(got, vgg.pool(vgg.features(x)).flatten(1).numpy(), rtol=1e-5, atol=1e-6)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    spec = embeddings.EncoderSpec("imagenet", "efficientnet_lite0", "pool", 64, embeddings._cpu_state(net))
    mean = torch.tensor(models.EFFNET_LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.EFFNET_LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net.forward_head(net.forward_features((x - mean) / std), pre_logits=True).numpy()
    np.testing.assert_allclose(embeddings.embed_patches(spec, patches), ref, rtol=1e-4, atol=1e-5)
    assert ref.shape == (3, 1280)


def test_handcrafted_features_tell_hematoxylin_from_eosin():
    from skimage.color import rgb2hed

    purple = np.full((1, 32, 32, 3), (80, 40, 140), np.uint8)
    pink = np.full((1, 32, 32, 3), (240, 150, 200), np.uint8)
    feats = embeddings.embed_patches(embeddings.handcrafted_encoder(32), np.concatenate([purple, pink]))
    assert feats.shape == (2, 20)
    np.testing.assert_allclose(feats[0, :3], rgb2hed(purple[0]).reshape(-1, 3).mean(0), rtol=1e-5)
    assert feats[0, 0] > feats[1, 0]                                     # more hematoxylin in the purple patch


def test_mask_fraction_equals_counting_pixels():
    rng = np.random.default_rng(1)
    mask = rng.random((100, 120)) > 0.6
    centres = np.array([[16.0, 16.0], [50.0, 70.0], [84.0, 104.0]])
    expected = [mask[int(r) - 16:int(r) + 16, int(c) - 16:int(c) + 16].mean() for r, c in centres]
    np.testing.assert_allclose(embeddings.mask_fraction(mask, centres, 32), expected)
    with pytest.raises(embeddings.StoreError, match="outside"):
        embeddings.mask_fraction(mask, np.array([[95.0, 60.0]]), 32)


def test_nt_xent_equals_the_simclr_formula_written_as_a_loop():
    torch.manual_seed(0)
    z1, z2, tau = torch.randn(5, 8), torch.randn(5, 8), 0.3
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n2, losses = 10, []
    for i in range(n2):
        j = (i + 5) % n2
        sims = torch.stack([z[i] @ z[k] / tau for k in range(n2) if k != i])
        losses.append(-(z[i] @ z[j] / tau) + torch.logsumexp(sims, 0))
    assert simclr.nt_xent_loss(z1, z2, tau).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    # identical views far from the others → near-zero loss
    spread = torch.eye(5) * 10
    assert simclr.nt_xent_loss(spread, spread, 0.05).item() < 1e-3


def test_augment_is_reproducible_and_stays_an_image():
    x = torch.rand(4, 3, 32, 32)
    a = simclr.augment(x, torch.Generator().manual_seed(1))
    b = simclr.augment(x, torch.Generator().manual_seed(1))
    c = simclr.augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_simclr_training_lowers_the_loss():
    rng = np.random.default_rng(0)
    patches = np.concatenate([np.clip(rng.normal(c, 25, (64, 32, 32, 3)), 0, 255) for c in (60, 200)]).astype(np.uint8)
    torch.manual_seed(0)
    model = simclr.SimCLRModel(simclr.SmallResNet((8, 8, 16, 16)), 16)
    history = simclr.train_simclr(model, patches, epochs=4, batch_size=32, input_size=32, seed=0)
    assert history[-1]["loss"] < history[0]["loss"]
    with pytest.raises(ValueError, match="at least two batches"):
        simclr.train_simclr(model, patches[:10], epochs=1, batch_size=32)


def test_umap_rgb_is_min_max_scaled_and_reproducible():
    x = np.random.default_rng(0).normal(size=(60, 10))
    colours, xy = embeddings.umap_rgb(x, random_state=0)
    again, _ = embeddings.umap_rgb(x, random_state=0)
    assert colours.shape == (60, 3) and xy.shape == (60, 2)
    np.testing.assert_allclose(colours.min(0), 0, atol=1e-6)
    np.testing.assert_allclose(colours.max(0), 1, atol=1e-6)
    np.testing.assert_array_equal(colours, again)


def test_click_protocol_on_separable_patches():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (150, 6)), rng.normal(6, 1, (50, 6))])
    frac = np.r_[np.zeros(150), np.ones(50)]
    rows = sic.click_protocol(x, frac, clicks=(1, 3), repeats=4, seed=0, max_fallback=0)
    assert len(rows) == 8 and {r["clicks"] for r in rows} == {1, 3}
    assert min(r["f1"] for r in rows) > 0.95                 # the first seeded split finds the lesion
    assert all(r["positive_ratio"] == 0.25 for r in rows)
    # the paper's extra plain 2-means halves a homogeneous lesion whenever all cancer clicks land in one half:
    # the clicks cannot see the loss (their F1 stays 1), the patch F1 drops to about 2/3
    with_fallback = sic.click_protocol(x, frac, clicks=(1, 3), repeats=4, seed=0)
    for row in with_fallback:
        assert (row["f1"] < 0.8) == row["fallback_kept"]
    assert any(r["fallback_kept"] for r in with_fallback)


def test_click_errors_are_named():
    with pytest.raises(sic.SeedError, match="no positive click"):
        sic.click_seeds(10, [], [1])
    with pytest.raises(sic.SeedError, match="no negative click"):
        sic.click_seeds(10, [2], [])
    with pytest.raises(sic.SeedError, match=r"outside 0…9.*10 patches"):
        sic.click_seeds(10, [12], [1])
    with pytest.raises(sic.SeedError, match="both positive and negative"):
        sic.click_seeds(10, [3], [3])
    with pytest.raises(sic.SeedError, match="0 cancer and 4 benign"):
        sic.random_clicks(np.random.default_rng(0), np.zeros(4), 3)
    with pytest.raises(sic.SeedError, match="one per patch"):
        sic.click_protocol(np.zeros((4, 2)), np.zeros(3))
    seeds = sic.click_seeds(6, [4, 5], [0])
    assert seeds.tolist() == [0, -1, -1, -1, 1, 1]



def test_stores_at_an_fsspec_url_are_written_once_and_read_back():
    """memory:// stands in for s3:// & co.: the same write / read / refusal rules as a local folder."""
    import uuid

    import fsspec

    url = f"memory://stores-{uuid.uuid4().hex[:8]}/slide.zarr"
    emb = np.arange(12, dtype=np.float32).reshape(4, 3)
    centres = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert embeddings.write_store(url, emb, centres, {"slide_id": "s"}) == url
    store = embeddings.read_store(url, {"slide_id": "s"})
    np.testing.assert_array_equal(store.embeddings, emb)
    with pytest.raises(embeddings.StoreError, match="never overwritten"):
        embeddings.write_store(url, emb, centres, {"slide_id": "s"})
    embeddings.write_store(url, emb * 2, centres, {"slide_id": "s"}, replace=True)
    np.testing.assert_array_equal(embeddings.read_store(url).embeddings, emb * 2)
    fs, _ = fsspec.core.url_to_fs(url)
    assert not [p for p in fs.find(url.split("://")[1].split("/")[0]) if ".partial-" in p]   # no leftovers
    foreign = url.replace("slide.zarr", "foreign.zarr")
    fs.pipe(foreign.split("://")[1] + "/zarr.json", b"{}")
    with pytest.raises(embeddings.StoreError, match="not written by helpers"):
        embeddings.write_store(foreign, emb, centres, {"slide_id": "s"}, replace=True)
    with pytest.raises(embeddings.StoreError, match="not a complete embedding store"):
        embeddings.read_store(url.replace("slide.zarr", "missing.zarr"))


def test_an_unknown_store_protocol_is_named_not_reported_as_an_incomplete_store(tmp_path):
    spec = embeddings.random_encoder(seed=1, widths=(8, 8, 8, 8), input_size=32)
    for url in ("nosuchproto://bucket/stores", "s4://bucket/stores"):
        with pytest.raises(embeddings.StoreError, match="cannot open the protocol"):
            embeddings.write_store(f"{url}/slide", np.zeros((2, 4), np.float32), np.zeros((2, 2)), {"slide_id": "a"})
        with pytest.raises(embeddings.StoreError, match="cannot open the protocol"):
            embeddings.read_store(f"{url}/slide")
    assert spec.name


def test_unclicked_f1_is_undefined_without_an_unclicked_cancer_patch():
    """A slide whose every cancer patch is clicked has no cancer left for the unclicked F1: NaN, not scikit-learn's 0."""
    truth = np.array([True, True, False, False, False])
    seeds = np.array([1, 1, 0, -1, -1])
    scores = sic.patch_scores(truth, np.array([True, True, False, True, False]), seeds)
    assert np.isnan(scores["f1_unclicked"])
    assert scores["f1"] == pytest.approx(0.8) and scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == 1
    # with one cancer patch left unclicked and found, plus one false positive: F1 = 2·1 / (2·1 + 1) = 2/3
    seeds[1] = -1
    assert sic.patch_scores(truth, np.array([True, True, False, True, False]), seeds)["f1_unclicked"] == pytest.approx(2 / 3)


def test_click_protocol_reports_the_clicks_it_could_place():
    """Two cancer patches cannot take 3 or 5 clicks: the rows say how many were placed."""
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 1, (40, 4)), rng.normal(5, 1, (2, 4))])
    frac = np.r_[np.zeros(40), np.ones(2)]
    rows = sic.click_protocol(x, frac, clicks=(1, 3, 5), repeats=2, seed=0)
    assert [(r["clicks"], r["cancer_clicks"], r["benign_clicks"]) for r in rows][::2] == [(1, 1, 1), (3, 2, 3), (5, 2, 5)]
    assert all(np.isnan(r["f1_unclicked"]) for r in rows if r["cancer_clicks"] == 2)


def test_click_draws_are_the_protocols_clicks():
    """Baselines are given exactly SIC's clicks: the draws replay the protocol's random stream."""
    rng = np.random.default_rng(2)
    frac = np.r_[np.zeros(30), np.ones(10), np.full(5, 0.3)]
    x = rng.normal(size=(45, 3))
    draws = list(sic.click_draws(frac, (1, 3), 3, seed=7))
    rows = sic.click_protocol(x, frac, (1, 3), 3, seed=7)
    for (n, repeat, seeds), row in zip(draws, rows):
        assert (n, repeat) == (row["clicks"], row["repeat"])
        assert (seeds == 1).sum() == row["cancer_clicks"] and (seeds == 0).sum() == row["benign_clicks"]
        assert set(np.flatnonzero(seeds >= 0)) <= set(np.flatnonzero((frac >= 0.5) | (frac == 0)))   # no partial patch


def test_inside_score_follows_the_pseudocode():
    """score_on="inside" scores a split on the seeds inside the set being split (the pseudocode's
    ``metric(seeds[labels == 1], label)``); "all" on every seed. A cancer click that landed among benign patches is
    lost by the first split: "all" keeps counting it as missed, "inside" no longer sees it."""
    rng = np.random.default_rng(3)
    benign = rng.normal(0, 0.5, (60, 2))
    lesion_a, lesion_b = rng.normal([8, 0], 0.3, (15, 2)), rng.normal([8, 3], 0.3, (15, 2))
    x = np.vstack([benign, lesion_a, lesion_b])
    seeds = np.full(len(x), -1)
    seeds[[0, 1]], seeds[[2, 60, 61]] = 0, 1          # seed 2: a cancer click among benign-looking patches
    results = {on: sic.seeded_iterative_clustering(x, seeds, score_on=on) for on in sic.SCORES_ON}
    for result in results.values():                  # the same splits: both lesions, then the clicked one
        assert result.history[0]["positive"] == 30 and result.history[0]["score"] == pytest.approx(0.8)
        assert result.history[1]["rule"].startswith("2-means") and result.history[1]["kept"]
        np.testing.assert_array_equal(np.flatnonzero(result.positive), np.arange(60, 75))
    assert results["all"].history[1]["score"] == pytest.approx(0.8)     # 2 found, the lost click still missed
    assert results["inside"].history[1]["score"] == 1.0                 # the 2 clicks inside, both found
    with pytest.raises(sic.SeedError, match="score_on='some'.*'inside'"):
        sic.seeded_iterative_clustering(x, seeds, score_on="some")


def test_baselines_from_clicks_find_a_separable_lesion_and_share_sics_clicks():
    from helpers.methods.seeded import baselines

    rng = np.random.default_rng(4)
    x = np.vstack([rng.normal(0, 1, (120, 6)), rng.normal(6, 1, (40, 6))])
    frac = np.r_[np.zeros(120), np.ones(40)]
    rows = baselines.compare_at_clicks(x, frac, ("sic",) + baselines.BASELINES, clicks=(3,), repeats=3, seed=5)
    assert len(rows) == 3 * 5
    assert min(r["f1"] for r in rows) > 0.95
    # SIC's rows are the protocol's runs: the same clicks give the same region (overlapping classes, so that
    # different clicks give different F1)
    hard = np.vstack([rng.normal(0, 1, (120, 6)), rng.normal(1.2, 1, (40, 6))])
    protocol = sic.click_protocol(hard, frac, (1, 3), 4, seed=5)
    assert len({round(r["f1"], 6) for r in protocol}) > 3
    same = baselines.compare_at_clicks(hard, frac, ("sic",), clicks=(1, 3), repeats=4, seed=5)
    assert [r["f1"] for r in same] == [r["f1"] for r in protocol]
    # one click count of several: the clicks of the protocol's runs at that count
    some = baselines.compare_at_clicks(hard, frac, ("sic",), clicks=(1, 3), repeats=4, seed=5, only=(3,))
    assert [r["f1"] for r in some] == [r["f1"] for r in protocol[4:]]
    with pytest.raises(ValueError, match="method='svm'.*nearest_click"):
        baselines.predict_from_clicks(x, next(sic.click_draws(frac, (1,), 1))[2], "svm")
    with pytest.raises(sic.SeedError, match="one cancer .* and one benign"):
        baselines.predict_from_clicks(x, np.r_[np.full(159, -1), 1], "logistic")


def test_corrective_curve_clicks_on_mistakes():
    """A "method" that marks only the clicked cancer patches misses every other one: each round then clicks one more
    missed cancer patch, so after r rounds r of the n cancer patches are found, F1 = 2r / (n + r) exactly."""
    from helpers.methods.seeded import baselines

    n = 8
    frac = np.r_[np.zeros(20), np.ones(n), np.full(3, 0.2)]
    x = np.random.default_rng(6).normal(size=(len(frac), 2))
    rows = baselines.corrective_curve(x, frac, lambda _, seeds: seeds == 1, rounds=10, seed=0)
    assert [r["round"] for r in rows] == list(range(1, 11))
    assert [r["clicks"] for r in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 9, 9]    # every cancer patch clicked by round 8
    np.testing.assert_allclose([r["f1"] for r in rows], [2 * min(r, n) / (n + min(r, n)) for r in range(1, 11)])
    with pytest.raises(ValueError, match="rounds=0"):
        baselines.corrective_curve(x, frac, lambda _, s: s == 1, rounds=0)
