"""Shared pytest fixtures."""

from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The read-only ``../shared`` folder (datasets, pretrained weights); skip if absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip("../shared is not available")
    return SHARED_DIR.resolve()
