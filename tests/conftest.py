"""Shared fixtures: the golden reference files and small toy datasets built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations must not touch the network

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("SCOREMIX_SHARED")
    candidates = [Path(env)] if env else []
    candidates += [REPO.parent / "shared", REPO / "shared"]
    for c in candidates:
        if (c / "golden").is_dir():
            return c
    raise RuntimeError(f"shared/golden not found (looked in {[str(c) for c in candidates]}); set SCOREMIX_SHARED")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _shared_dir()


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "golden"


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
