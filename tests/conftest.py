"""Shared fixtures: the golden reference files and small toy datasets built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations must not touch the network

REPO = Path(__file__).resolve().parents[1]
# Reference files made by programs nobody on this team wrote (mxnet 1.9.1, arcface_torch); copies of
# the shared golden set live in the repository so that a bare clone tests itself (see their README).
GOLDEN = REPO / "tests" / "data" / "golden"


def _shared_dir() -> Path | None:
    env = os.environ.get("SCOREMIX_SHARED")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared", REPO / "shared"]
    return next((c for c in candidates if c.is_dir()), None)


def host_root() -> Path | None:
    """The real arcface_torch checkout for opt-in host tests: $ARCFACE_ROOT, else ../shared/host/arcface_torch."""
    env = os.environ.get("ARCFACE_ROOT")
    if env:
        return Path(env)
    shared = _shared_dir()
    root = shared / "host" / "arcface_torch" if shared is not None else None
    return root if root is not None and (root / "dataset.py").is_file() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's ../shared folder; only opt-in tests use it, and they skip on a bare clone."""
    d = _shared_dir()
    if d is None:
        pytest.skip("no ../shared beside the clone (set SCOREMIX_SHARED): an opt-in test")
    return d


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A small toy identity folder (InsightFace layout + toy_lfw.bin / toy_cfp_fp.bin), built once."""
    from scoremix_plugin.toydata import write_toy_dataset

    out = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out, num_identities=12, images_per_identity=8, num_test_identities=10, num_pairs=60, seed=0)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    On 2 cores shared with other processes torch's intra-op threads spin against each other: one
    thread ran the tests' tiny networks ~5x faster. Determinism checks compare runs at the same count.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
