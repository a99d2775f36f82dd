"""`multitask demo`, offline, as the README runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from multitask._cli import DEMO_USERS, main


def test_demo_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--tokens-per-second", "2000"]) == 0
    out = capsys.readouterr().out
    lines = re.findall(r"^\s+(\d+\.\d+)s\s+User\(name='([^']*)', age=(\d+)\)$", out, re.M)
    assert [(name, int(age)) for _, name, age in lines] == [
        (u["name"], u["age"]) for u in DEMO_USERS
    ]
    times = [float(t) for t, _, _ in lines]
    assert times == sorted(times)
    assert "finish reason 'tool_calls'" in out
    assert "multitask demo --model" in out


@pytest.mark.parametrize("backend", ["asyncio", "uvloop", "trio"])
def test_demo_as_a_command(backend: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "multitask",
            "demo",
            "--tokens-per-second",
            "500",
            "--backend",
            backend,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("User(name=") == len(DEMO_USERS)
