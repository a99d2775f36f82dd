"""Shared fixtures: every async test runs on asyncio, on asyncio with uvloop, and on trio."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_needs_uvloop = pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None,
    reason="uvloop is not installed (pip install -e '.[dev]')",
)

WIRE = Path(__file__).resolve().parents[2] / "shared" / "wire"


#: The event loops people run: asyncio's own, uvloop (what uvicorn runs when it is installed),
#: and trio. Not on Windows: uvloop is not there.
BACKENDS: list[Any] = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop", marks=_needs_uvloop),
    pytest.param("trio", id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture
def wire() -> Path:
    """The team's real wire captures, beside the project; tests that need them skip without."""
    if not WIRE.is_dir():
        pytest.skip(f"wire captures not found at {WIRE}")
    return WIRE
