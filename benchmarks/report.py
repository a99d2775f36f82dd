"""Render the tables of docs/benchmarks.md from the JSON `run.py --json` writes.

    python benchmarks/report.py benchmarks/results.json            # rewrites docs/benchmarks.md
    python benchmarks/report.py results.json --page other.md --stdout
    python benchmarks/report.py benchmarks/results.json --check    # exit 1 if the page is stale

The page keeps its prose; what is generated sits between two comments:

    <!-- generated: parser -->

    | stream | workload | ... |

    <!-- /generated -->

Sections: `run` (when, where and how the run was made, and its notes), `parser`, `e2e`,
`uvloop`, `memory` and `targets`. Each table is made by run.py's own function
(`parser_table`, `e2e_table`, `uvloop_table`, `memory_table`, `targets_table`), so the page
shows exactly what the run printed. A section the JSON has no figures for (a run with
`--only parser`, say) keeps what the page already holds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run.py imports its siblings (`_common`, ...) by name

import run  # noqa: E402

PAGE = HERE.parent / "docs" / "benchmarks.md"

_REGION = re.compile(
    r"(?P<open><!-- generated: (?P<name>[a-z0-9_]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /generated -->)",
    re.DOTALL,
)


def _run_summary(results: dict[str, Any]) -> str | None:
    """When, where and how the run was made: a few lines of markdown."""
    meta = results.get("meta")
    if not meta:
        return None
    load = meta.get("load_average") or {}
    loads = ", ".join(f"{k} {v[0]:.1f}" for k, v in load.items())
    versions = ", ".join(f"{k} {v}" for k, v in sorted((meta.get("versions") or {}).items()))
    lines = [
        f"Run of {meta.get('date', '?')}"
        + (" (`--quick`)" if meta.get("quick") else "")
        + f", best of {meta.get('repeat', '?')}, in {meta.get('seconds', 0):.0f} s:"
        + f" Python {meta.get('python', '?')} on {meta.get('platform', '?')},"
        + f" {meta.get('cpus', '?')} CPUs.",
    ]
    if loads:
        lines.append(f"Load average (1 min) at each section's start and end: {loads}.")
    if versions:
        lines.append(f"Versions: {versions}.")
    text = "\n".join(lines) + "\n"
    notes = results.get("notes") or []
    if notes:
        text += "\n" + "".join(f"- note: {note}\n" for note in notes)
    return text


def _table(render: Callable[[list[dict[str, Any]]], str], key: str) -> Callable[..., str | None]:
    def section(results: dict[str, Any]) -> str | None:
        rows = results.get(key)
        return render(rows) + "\n" if rows else None

    return section


def _uvloop(results: dict[str, Any]) -> str | None:
    rows = results.get("e2e") or []
    if not any(r.get("loop") == "uvloop" for r in rows):
        return None
    return run.uvloop_table(rows) + "\n"


SECTIONS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "run": _run_summary,
    "parser": _table(run.parser_table, "parser"),
    "e2e": _table(run.e2e_table, "e2e"),
    "uvloop": _uvloop,
    "memory": _table(run.memory_table, "memory"),
    "targets": _table(run.targets_table, "targets"),
}


def render(page: str, results: dict[str, Any]) -> str:
    """`page` with each generated region the JSON has figures for replaced."""
    unknown = {m["name"] for m in _REGION.finditer(page)} - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown generated sections in the page: {', '.join(sorted(unknown))}")

    def replace(match: re.Match[str]) -> str:
        body = SECTIONS[match["name"]](results)
        if body is None:
            return match[0]
        return f"{match['open']}\n{body}\n{match['close']}"  # blank lines: markdown, not HTML

    return _REGION.sub(replace, page)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="the file `run.py --json` wrote")
    parser.add_argument("--page", type=Path, default=PAGE, help=f"default: {PAGE}")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--stdout", action="store_true", help="print the page, leave the file")
    how.add_argument("--check", action="store_true", help="exit 1 if the page differs")
    args = parser.parse_args(argv)
    results = json.loads(args.json.read_text(encoding="utf-8"))
    page = args.page.read_text(encoding="utf-8")
    out = render(page, results)
    if args.stdout:
        sys.stdout.write(out)
    elif args.check:
        if out != page:
            print(f"{args.page} is not what {args.json} renders: run {parser.prog} {args.json}")
            return 1
    elif out != page:
        args.page.write_text(out, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
