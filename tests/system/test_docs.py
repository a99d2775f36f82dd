"""Every ```python block of README.md and docs/*.md runs, against the scripted model server.

Each page runs in a fresh interpreter, so that its environment, the provider registry and
whatever its blocks leave behind are its own: its blocks run in order in one namespace, as a
reader pasting them into `python -m asyncio` (or a Jupyter notebook) would run them. A block
with `await`, `async for` or `async with` at the top level runs as the body of a coroutine on
the event loop the server runs on; any other block runs in the main thread (so the `*_sync`
functions can start their own loop in a worker thread while the server answers).

The environment points every provider a snippet names at one `ScriptedModelServer`:
`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`, `AZURE_OPENAI_ENDPOINT`, `GOOGLE_GEMINI_BASE_URL`,
`OLLAMA_HOST`, with dummy keys, so that `model="openai:gpt-4o-mini"` in a snippet reaches it.
By default the server answers every request with the two people of `PEOPLE`.

Two HTML comments, on the line right before a block, change that:

- `<!-- not run: why -->`: the block is not run; each one is reported as a skipped test with
  its reason (and counted in `test_every_python_block_is_run_or_says_why`).
- `<!-- script: {"items": [...], ...} -->`: the server answers that block's requests with
  `Script(**json)` instead.

Other fences (`sh`, `text`, plain) are not Python and are not run.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PEOPLE = [{"name": "Jason", "age": 10}, {"name": "John", "age": 30}]
#: How long one page may take, all its blocks together.
PAGE_TIMEOUT = 45.0

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--\s*(?P<kind>not run|script)\s*:\s*(?P<text>.*?)\s*-->\s*$")


@dataclass
class Block:
    """One fenced code block of a page: where it starts (1-based, its first code line)."""

    page: Path
    line: int
    language: str
    code: str
    not_run: str | None = None
    script: dict[str, Any] | None = None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of a markdown page, with the directive comment before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        language = match["info"].strip().split(" ")[0].lower()
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        body = [line.removeprefix(indent) for line in lines[start:i]]
        block = Block(page, start + 1, language, "\n".join(body) + "\n")
        comment = _COMMENT.match(before)
        if comment is not None and comment["kind"] == "not run":
            block.not_run = comment["text"]
        elif comment is not None:
            block.script = json.loads(comment["text"])
        yield block
        i += 1


def python_blocks() -> list[Block]:
    return [b for page in PAGES for b in blocks(page) if b.language in ("python", "py")]


# -- the tests -------------------------------------------------------------------------------


def _pages_with_code() -> list[Path]:
    return [p for p in PAGES if any(b.not_run is None for b in python_blocks() if b.page == p)]


def pytest_generate_tests(metafunc: Any) -> None:
    if "page" in metafunc.fixturenames:
        pages = _pages_with_code()
        metafunc.parametrize("page", pages, ids=[str(p.relative_to(ROOT)) for p in pages])
    if "unrun" in metafunc.fixturenames:
        unrun = [b for b in python_blocks() if b.not_run is not None]
        metafunc.parametrize("unrun", unrun, ids=[b.where for b in unrun])


def test_page_runs(page: Path) -> None:
    """The page's blocks run, in order, in a fresh interpreter, against the scripted server."""
    with tempfile.TemporaryDirectory() as cwd:  # a block that writes files writes them here
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        done = subprocess.run(
            [sys.executable, __file__, str(page)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT + 15,
        )
    assert done.returncode == 0, f"{page.name}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    ran = [line for line in done.stdout.splitlines() if line.startswith("docs-test: ran ")]
    expected = [b for b in python_blocks() if b.page == page and b.not_run is None]
    assert len(ran) == len(expected), done.stdout


def test_block_not_run(unrun: Block) -> None:
    """A block marked `<!-- not run: why -->`: reported as skipped, with its reason."""
    assert unrun.not_run, f"{unrun.where}: say why the block is not run"
    pytest.skip(f"{unrun.where}: not run: {unrun.not_run}")


def test_every_python_block_is_run_or_says_why() -> None:
    """The count: every Python block either runs or is marked, and most of them run."""
    found = python_blocks()
    unrun = [b for b in found if b.not_run is not None]
    assert found, "no python blocks found"
    print(f"\n{len(found)} python blocks: {len(found) - len(unrun)} run, {len(unrun)} not run")
    for b in unrun:
        print(f"  not run: {b.where}: {b.not_run}")
    assert len(unrun) * 5 <= len(found), "most blocks must run"


def test_blocks_define_what_they_use() -> None:
    """The browser snippet once used an undefined `User`: every page's blocks, taken in order,
    define (or import) every name they use (a check that needs no server)."""
    for page in PAGES:
        defined = set(dir(builtins)) | {"__name__"}
        for block in blocks(page):
            if block.language not in ("python", "py") or block.not_run is not None:
                continue
            tree = ast.parse(block.code)
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    defined.add(node.id)
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    defined.add(node.name)
                elif isinstance(node, ast.Import | ast.ImportFrom):
                    defined.update((a.asname or a.name).partition(".")[0] for a in node.names)
                elif isinstance(node, ast.arg):
                    defined.add(node.arg)
                elif (
                    isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name
                ):
                    defined.add(node.name)
            used = {
                n.id
                for n in ast.walk(tree)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            }
            missing = used - defined
            assert not missing, f"{block.where}: undefined {sorted(missing)}"


# -- the benchmarks page, generated from run.py's JSON ----------------------------------------

REPORT = ROOT / "benchmarks" / "report.py"
BENCH_PAGE = ROOT / "docs" / "benchmarks.md"
#: The JSON of `benchmarks/run.py --quick --only parser --json ...`, as it wrote it.
QUICK_PARSER_RUN = ROOT / "tests" / "data" / "benchmarks_quick_parser.json"
_REGION = re.compile(
    r"<!-- generated: (?P<name>[a-z0-9_]+) -->\n(?P<body>.*?)<!-- /generated -->", re.S
)


def _regions(text: str) -> dict[str, str]:
    return {m["name"]: m["body"].strip() for m in _REGION.finditer(text)}


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPORT), *args], capture_output=True, text=True, timeout=60
    )


def test_benchmark_page_renders_from_a_run(tmp_path: Path) -> None:
    """report.py puts run.py's own tables for the sections a run has into the page, keeps
    everything else (prose, and the sections the run did not measure) as it was, and
    `--check` tells a stale page from a fresh one."""
    page = tmp_path / "benchmarks.md"
    page.write_text(BENCH_PAGE.read_text(encoding="utf-8"), encoding="utf-8")
    done = _report(str(QUICK_PARSER_RUN), "--page", str(page))
    assert done.returncode == 0, done.stderr
    # In one more interpreter: run.py's tables for the same rows, and `--check` both ways.
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import report, run\n"
        "results = json.load(open(sys.argv[2], encoding='utf-8'))\n"
        "check = [sys.argv[2], '--check', '--page']\n"
        "print(json.dumps({\n"
        "    'parser': run.parser_table(results['parser']),\n"
        "    'targets': run.targets_table(results['targets']),\n"
        "    'fresh': report.main([*check, sys.argv[3]]),\n"
        "    'stale': report.main([*check, sys.argv[4]]),\n"
        "}))\n"
    )
    args = [str(ROOT / "benchmarks"), str(QUICK_PARSER_RUN), str(page), str(BENCH_PAGE)]
    expected = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert expected.returncode == 0, expected.stderr
    figures = json.loads(expected.stdout.splitlines()[-1])
    assert (figures["fresh"], figures["stale"]) == (0, 1)
    before, after = _regions(BENCH_PAGE.read_text(encoding="utf-8")), _regions(page.read_text())
    assert set(before) == set(after) == {"run", "parser", "e2e", "uvloop", "memory", "targets"}
    assert after["parser"] == figures["parser"].strip()
    assert after["targets"] == figures["targets"].strip()
    assert "2026-12-02T15:53:04+00:00" in after["run"]
    for name in ("e2e", "uvloop", "memory"):  # not in a `--only parser` run: kept as they were
        assert after[name] == before[name]
    outside = _REGION.sub("", BENCH_PAGE.read_text(encoding="utf-8"))
    assert _REGION.sub("", page.read_text(encoding="utf-8")) == outside


def test_benchmark_page_is_what_the_committed_run_renders() -> None:
    """Once benchmarks/results.json is committed, the page must be what it renders."""
    results = ROOT / "benchmarks" / "results.json"
    if not results.exists():
        pytest.skip("benchmarks/results.json is not committed yet: the page keeps its tables")
    done = _report(str(results), "--check")
    assert done.returncode == 0, done.stdout + done.stderr


# -- the runner, in the page's own interpreter -----------------------------------------------


def _run_page(page: Path) -> None:
    """Run the page's Python blocks in order (see the module docstring)."""
    import anyio
    import anyio.from_thread

    from multitask.testing import RecordedRequest, Script, ScriptedModelServer

    current: dict[str, Script] = {"script": Script(items=PEOPLE)}

    def answer(request: RecordedRequest) -> Script:
        return current["script"]

    namespace: dict[str, Any] = {"__name__": "__main__"}
    with anyio.from_thread.start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(ScriptedModelServer(answer)) as server:
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "MULTITASK_MODEL"):
                os.environ.pop(name, None)
            os.environ.update(
                {
                    "OPENAI_BASE_URL": server.openai_base_url,
                    "OPENAI_API_KEY": "sk-docs-test",
                    "ANTHROPIC_BASE_URL": server.anthropic_base_url,
                    "ANTHROPIC_API_KEY": "sk-ant-docs-test",
                    "AZURE_OPENAI_ENDPOINT": server.url,
                    "AZURE_OPENAI_API_KEY": "azure-docs-test",
                    "GOOGLE_GEMINI_BASE_URL": server.url,
                    "GEMINI_API_KEY": "gemini-docs-test",
                    "OLLAMA_HOST": server.url,
                }
            )
            for block in blocks(page):
                if block.language not in ("python", "py") or block.not_run is not None:
                    continue
                current["script"] = Script(**block.script) if block.script else Script(PEOPLE)
                # Padded so that a traceback names the page's own line numbers. Not inheriting
                # this file's `from __future__ import annotations`: a block runs as pasted, its
                # annotations evaluated (a string one could not be resolved in `namespace`).
                source = "\n" * (block.line - 1) + block.code
                code = compile(
                    source,
                    str(block.page),
                    "exec",
                    flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                    dont_inherit=True,
                )
                if code.co_flags & inspect.CO_COROUTINE:

                    async def body(code: Any = code) -> None:
                        with anyio.fail_after(PAGE_TIMEOUT):
                            await eval(code, namespace)

                    portal.call(body)
                else:
                    exec(code, namespace)
                print(f"docs-test: ran {block.where}", flush=True)


if __name__ == "__main__":
    _run_page(Path(sys.argv[1]).resolve())
