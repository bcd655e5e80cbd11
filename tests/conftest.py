"""Shared fixtures. Tests that need the speechocean762 data find it beside the repo and skip
with a clear reason where it is absent (a user's clone has no ../shared)."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPEECHOCEAN = REPO.parent / "shared" / "data" / "speechocean762-train"


@pytest.fixture(scope="session")
def speechocean_dir() -> Path:
    if not (SPEECHOCEAN / "labels.tsv").is_file():
        pytest.skip(f"speechocean762 data not found at {SPEECHOCEAN}")
    return SPEECHOCEAN


@pytest.fixture(scope="session")
def speech_clip(speechocean_dir) -> Path:
    """A real 2.6-s read-aloud clip: 'WE CALL IT BEAR'."""
    return speechocean_dir / "audio" / "000010011.flac"
