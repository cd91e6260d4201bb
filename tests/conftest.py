"""Shared test set-up: offline, few threads, the real data when present (pytest.ini puts the root on the path)."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`MAGIC_DATA_DIR`, else ../shared/data/esconv beside the repository."""
    return Path(os.environ.get("MAGIC_DATA_DIR", REPO_ROOT.parent / "shared" / "data" / "esconv"))


@pytest.fixture(scope="session")
def esconv_dir() -> Path:
    """The real ESConv data (see its SOURCES.md); tests that need it skip when it is absent."""
    d = shared_data_dir()
    if not (d / "magic" / "test.txt").exists():
        pytest.skip(f"real ESConv data not found at {d} (set MAGIC_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)  # tiny models; more threads only thrash on a shared 2-core machine


@pytest.fixture(scope="session")
def bart_dir(tmp_path_factory):
    """A tiny random BART folder (tests/bart_fixtures.py), built once per test session."""
    from tests.bart_fixtures import make_tiny_bart_dir

    return make_tiny_bart_dir(tmp_path_factory.mktemp("bart"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, bart_dir):
    from tests.chat_fixtures import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt_r3b"), bart_dir)
