"""Nothing of the user's is ever lost: for each writer in helpers, a user's file or folder is put where it writes
and must survive; an interrupted build must leave the previous artefact intact and nothing that looks valid."""
import numpy as np
import pytest
import torch

from helpers import cache, features, models


def _arrays():
    return {"x": np.arange(6).reshape(2, 3)}


# ------------------------------------------------------------------------------------ cache.save_arrays
def test_save_arrays_never_replaces_a_folder_it_did_not_write(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "thesis.docx").write_text("months of work")
    with pytest.raises(cache.NotOwnedError, match="not written by helpers"):
        cache.save_arrays(results, _arrays(), {"k": 1})
    assert (results / "thesis.docx").read_text() == "months of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]        # no temporary folder left


def test_save_arrays_leaves_a_user_folder_named_like_its_old_temporary_alone(tmp_path):
    user = tmp_path / "cache_a.partial"
    user.mkdir()
    (user / "mine.txt").write_text("keep")
    cache.save_arrays(tmp_path / "cache_a", _arrays(), {"k": 1})
    assert (user / "mine.txt").read_text() == "keep"
    assert cache.load_arrays(tmp_path / "cache_a", {"k": 1})[0]["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("name", ["../../victim", "sub/dir", "..", "", ".hidden"])
def test_array_names_cannot_become_paths_outside_the_cache(tmp_path, name):
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        cache.save_arrays(tmp_path / "c", {name: np.zeros(2)}, {"k": 1})
    assert not (tmp_path / "c").exists() and not (tmp_path.parent / "victim.npy").exists()


def test_a_rebuild_replaces_its_own_cache_only_when_the_new_one_is_complete(tmp_path):
    folder = tmp_path / "c"
    cache.save_arrays(folder, _arrays(), {"k": 1})

    class Interrupted(Exception):
        pass

    with pytest.raises(Interrupted):
        with cache.building(folder) as tmp:
            np.save(tmp / "x.npy", np.zeros(3))
            raise Interrupted                 # a crash half-way through the build
    arrays, _ = cache.load_arrays(folder, {"k": 1})     # the previous cache is intact and valid
    assert arrays["x"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]             # no partial folder anywhere
    cache.save_arrays(folder, {"x": np.ones(2)}, {"k": 2})                   # a complete rebuild replaces it
    assert cache.load_arrays(folder, {"k": 2})[0]["x"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_caches_written_before_the_ownership_marker_are_still_rebuilt(tmp_path):
    folder = tmp_path / "old"
    cache.save_arrays(folder, _arrays(), {"k": 1})
    (folder / cache.OWNED).unlink()          # as an older helpers wrote it: a manifest in its own format
    assert cache.is_owned(folder)
    cache.save_arrays(folder, _arrays(), {"k": 2})
    assert cache.verify(folder, {"k": 2})


# ---------------------------------------------------------------------------------------- checkpoints
def test_save_checkpoint_never_replaces_a_folder_it_did_not_write(tmp_path):
    folder = tmp_path / "models" / "mine"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"my own weights")
    with pytest.raises(cache.NotOwnedError):
        cache.save_checkpoint(folder, torch.nn.Linear(2, 2), {"k": 1}, {})
    assert (folder / "model.pt").read_bytes() == b"my own weights"


# ----------------------------------------------------------------------------- features.feature_vectors
def test_feature_vectors_never_overwrite_the_users_files(tmp_path):
    torch.manual_seed(0)
    model = models.VGG16TileClassifier(width=0.125).eval()
    images = (np.random.default_rng(0).random((3, 64, 64, 3)) * 255).astype(np.uint8)
    (tmp_path / "v.npy").write_bytes(b"user's array")
    (tmp_path / "v.raw").write_bytes(b"user's raw data")
    with pytest.raises(FileExistsError, match="never overwrites"):
        features.feature_vectors(model, "features.relu5_3", images, out_path=tmp_path / "v.npy")
    result = features.feature_vectors(model, "features.relu5_3", images, out_path=tmp_path / "w.npy")
    assert (tmp_path / "v.npy").read_bytes() == b"user's array"
    assert (tmp_path / "v.raw").read_bytes() == b"user's raw data"
    assert np.load(result["path"]).shape == (3 * 16, 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy", "v.raw", "w.npy"]   # no temporary left
    with pytest.raises(ValueError, match="must end in .npy"):
        features.feature_vectors(model, "features.relu5_3", images, out_path=tmp_path / "x.raw")


def test_an_interrupted_feature_stream_leaves_no_file(tmp_path):
    torch.manual_seed(0)
    model = models.VGG16TileClassifier(width=0.125).eval()

    class BreaksHalfWay(torch.utils.data.Dataset):     # the second batch fails to load, after the first is written
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i >= 2:
                raise OSError("slide file vanished")
            return torch.zeros(3, 64, 64), 0

    with pytest.raises(OSError, match="vanished"):
        features.feature_vectors(model, "features.relu5_3", BreaksHalfWay(), batch_size=2, out_path=tmp_path / "v.npy")
    assert list(tmp_path.iterdir()) == []


def test_written_folders_and_files_get_the_usual_permissions(tmp_path):
    """Temporaries are created private; the finished cache and array are readable like anything mkdir/open makes."""
    import os
    import stat

    folder = cache.save_arrays(tmp_path / "c", _arrays(), {"k": 1})
    assert stat.S_IMODE(os.stat(folder).st_mode) == cache.default_mode(directory=True)
    torch.manual_seed(0)
    model = models.VGG16TileClassifier(width=0.125).eval()
    out = features.feature_vectors(model, "features.relu5_3", np.zeros((1, 64, 64, 3), np.uint8),
                                   out_path=tmp_path / "v.npy")["path"]
    assert stat.S_IMODE(os.stat(out).st_mode) == cache.default_mode(directory=False)
    assert cache.default_mode(directory=True) & 0o700 == 0o700


def test_report_never_replaces_a_users_results_in_output_dir(tmp_path):
    """OUTPUT_DIR pointed at a folder of the user's: their metrics.json, claims.json and figures stay as they are."""
    import matplotlib.pyplot as plt

    from helpers import report

    for users_file in ("metrics.json", "claims.json"):
        folder = tmp_path / users_file.split(".")[0]
        folder.mkdir()
        (folder / users_file).write_text('{"my": "results"}')
        with pytest.raises(cache.NotOwnedError, match="not written by helpers"):
            report.init(folder)
        assert (folder / users_file).read_text() == '{"my": "results"}'
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "gallery.png").write_bytes(b"my figure")
    report.init(folder)
    report.record("x", 1.0)
    fig = plt.figure()
    with pytest.raises(cache.NotOwnedError, match="gallery.png"):
        report.save_figure(fig, "gallery")
    assert (folder / "gallery.png").read_bytes() == b"my figure"
    report.save_figure(fig, "ours")
    plt.close(fig)
    report.init(folder)       # a second run replaces what the first wrote
    report.record("x", 2.0)
    report.save_figure(plt.figure(), "ours")
    assert report.load_metrics(folder) == {"x": 2.0}
    # a results folder from before the ledger (claims.json in this module's format) is recognised as ours
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "metrics.json").write_text('{"a": 1}')
    (legacy / "claims.json").write_text('[{"name": "a", "statement": "s", "holds": true}]')
    report.init(legacy)
    assert not (legacy / "metrics.json").exists()
