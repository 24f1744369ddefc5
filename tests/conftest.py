import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# the notebooks and the tests share one cache of real files and simulated data
os.environ.setdefault("MPLBACKEND", "Agg")
# the numeric mode's variables before any test imports numpy or torch, as the runner and the kernel set them
from helpers import env  # noqa: E402  (helpers.env loads no numeric library at import)

os.environ.update(env.numeric_environment())


@pytest.fixture(scope="session")
def repo_data_dir():
    path = ROOT / "data"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d
