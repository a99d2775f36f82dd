"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

from pathlib import Path

import pytest

WIRE = Path(__file__).resolve().parents[2] / "shared" / "wire"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wire() -> Path:
    """The team's real wire captures, beside the project; tests that need them skip without."""
    if not WIRE.is_dir():
        pytest.skip(f"wire captures not found at {WIRE}")
    return WIRE
