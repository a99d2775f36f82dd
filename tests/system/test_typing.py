"""The types a user's checker infers: mypy --strict and pyright on `tests/typing/`.

`tests/typing/check_types.py` is a file of `assert_type` calls (never run); each checker must
pass it, and must fail a file whose `assert_type` is wrong, so that a checker that could not
see multitask's types (everything `Any`, say) cannot pass by accident.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = ROOT / "tests" / "typing" / "check_types.py"

WRONG = """
from typing import assert_type

from pydantic import BaseModel

import multitask


class User(BaseModel):
    name: str


def wrong() -> None:
    assert_type(multitask.extract_sync(User, "text"), list[str])
"""


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def pyright(path: Path) -> subprocess.CompletedProcess[str]:
    here = Path(sys.executable).parent / ("pyright.exe" if os.name == "nt" else "pyright")
    found = str(here) if here.exists() else shutil.which("pyright")
    if found is None:
        pytest.skip("pyright is not installed: pip install -e '.[dev]' (or pip install pyright)")
    return subprocess.run(
        [found, "--pythonpath", sys.executable, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mypy_strict_infers_the_item_types() -> None:
    result = mypy(CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pyright_infers_the_item_types() -> None:
    result = pyright(CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


@pytest.mark.parametrize("checker", [mypy, pyright], ids=["mypy", "pyright"])
def test_a_wrong_assert_type_fails(
    checker: Callable[[Path], subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(WRONG)
    result = checker(wrong)
    assert result.returncode != 0
    assert "list[User]" in result.stdout, result.stdout + result.stderr
