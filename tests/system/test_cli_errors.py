"""The `multitask` command as a newcomer runs it: a mistake is one line on stderr and exit status
2, never a traceback; `--help` names `multitask`; `--schema package.module:Type` imports from the
current directory, as the `multitask` script runs it too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio.from_thread
import pytest

from multitask.testing import Script, ScriptedModelServer

SCHEMA = """
from pydantic import BaseModel

class User(BaseModel):
    name: str
    age: int
"""

DEAD = "http://127.0.0.1:9/v1"  # nothing listens there; no mistake below gets that far


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A schema file and one document, in the folder the command runs from."""
    (tmp_path / "schema.py").write_text(SCHEMA)
    (tmp_path / "doc.txt").write_text("Ada is 36.")
    return tmp_path


def clean_env() -> dict[str, str]:
    """The environment without keys, base URLs or a default model."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.endswith(("_API_KEY", "_BASE_URL", "_AD_TOKEN")) and k != "MULTITASK_MODEL"
    }


def multitask(
    folder: Path, *args: str, stdin: str = "", prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or (sys.executable, "-m", "multitask")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=folder,
        env=clean_env(),
    )


EXTRACT = ("extract", "--schema", "schema.py:User")
OPENAI = ("--model", "openai:test", "--base-url", DEAD)

MISTAKES = {
    "no model": ([*EXTRACT, "doc.txt"], "", "no model"),
    "model without provider": ([*EXTRACT, "--model", "gpt-4o-mini", "doc.txt"], "", "gpt-4o-mini"),
    "unknown provider": ([*EXTRACT, "--model", "nosuch:model", "doc.txt"], "", "'nosuch'"),
    "no API key": ([*EXTRACT, "--model", "openai:gpt-4o-mini", "doc.txt"], "", "OPENAI_API_KEY"),
    "base URL without scheme": (
        [*EXTRACT, "--model", "openai:test", "--base-url", "127.0.0.1:8765/v1", "doc.txt"],
        "",
        "--base-url",
    ),
    "mode the provider lacks": (
        [*EXTRACT, "--model", "ollama:qwen3", "--mode", "tools", "doc.txt"],
        "",
        "mode 'tools'",
    ),
    "missing schema file": (
        ["extract", "--schema", "models.py:User", *OPENAI, "doc.txt"],
        "",
        "models.py",
    ),
    "missing schema module": (
        ["extract", "--schema", "myapp.models:User", *OPENAI, "doc.txt"],
        "",
        "'myapp'",
    ),
    "missing schema type": (
        ["extract", "--schema", "schema.py:Person", *OPENAI, "doc.txt"],
        "",
        "'Person'",
    ),
    "missing input file": ([*EXTRACT, *OPENAI, "docs/a.txt"], "", "docs/a.txt"),
    "glob matching nothing": ([*EXTRACT, *OPENAI, "docs/*.txt"], "", "docs/*.txt"),
    "output folder missing": ([*EXTRACT, *OPENAI, "-o", "out/x.jsonl", "doc.txt"], "", "out/x"),
    "jsonl without the text field": (
        [*EXTRACT, *OPENAI, "--jsonl", "--no-progress"],
        '{"id": 1, "body": "Ada is 36."}\n',
        "stdin:1: no 'text' field",
    ),
    "non-JSON input line": (
        [*EXTRACT, *OPENAI, "--jsonl", "--no-progress"],
        '{"text": "Ada is 36."}\nAda is 36.\n',
        "stdin:2: not a JSON line",
    ),
    "demo without API key": (["demo", "--model", "openai:gpt-4o-mini"], "", "OPENAI_API_KEY"),
    "chunk size zero": ([*EXTRACT, *OPENAI, "--chunk-chars", "0", "doc.txt"], "", "--chunk-chars"),
    "negative overlap": (
        [*EXTRACT, *OPENAI, "--chunk-chars", "9", "--overlap-chars", "-1", "doc.txt"],
        "",
        "--overlap-chars",
    ),
    "continuations not a number": (
        [*EXTRACT, *OPENAI, "--max-continuations", "many", "doc.txt"],
        "",
        "--max-continuations",
    ),
    "overlap without a Quote field": (
        [*EXTRACT, *OPENAI, "--chunk-chars", "9", "--overlap-chars", "3", "doc.txt"],
        "",
        "needs the item type to have a multitask.Quote field",
    ),
}


@pytest.mark.parametrize(("args", "stdin", "named"), MISTAKES.values(), ids=MISTAKES.keys())
def test_a_mistake_is_one_line_and_exit_status_2(
    folder: Path, args: list[str], stdin: str, named: str
) -> None:
    done = multitask(folder, *args, stdin=stdin)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    line = done.stderr.strip()
    assert line.startswith(f"multitask {args[0]}: error: "), line
    assert named in line, line


@pytest.mark.parametrize("args", [["--help"], ["extract", "--help"], ["demo", "--help"]])
def test_help_names_the_command_not_its_modules(folder: Path, args: list[str]) -> None:
    done = multitask(folder, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: multitask")
    for private in ("_extract_cli", "_cli", "__main__", "__doc__"):
        assert private not in done.stdout


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    script = Script(items=[{"name": "Ada", "age": 36}])
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(ScriptedModelServer(script)) as served,
    ):
        yield served


def script_prefix() -> tuple[str, ...]:
    script = Path(sys.executable).with_name("multitask")
    if not script.exists():
        pytest.skip(f"no `multitask` script beside {sys.executable}")
    return (str(script),)


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(script_prefix, id="the multitask script"),
        # -P: no current directory on sys.path, as for the script
        pytest.param(lambda: (sys.executable, "-P", "-m", "multitask"), id="python -P -m"),
    ],
)
def test_schema_from_a_package_in_the_current_directory(
    tmp_path: Path, server: ScriptedModelServer, prefix: object
) -> None:
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(SCHEMA)
    assert callable(prefix)
    done = multitask(
        tmp_path,
        "extract",
        "--schema",
        "myapp.models:User",
        "--model",
        "openai:test",
        "--base-url",
        server.openai_base_url,
        "--no-progress",
        stdin="Ada is 36.\n",
        prefix=prefix(),
    )
    assert done.returncode == 0, done.stderr
    assert '{"key": "stdin:1", "item": {"name": "Ada", "age": 36}}' in done.stdout
