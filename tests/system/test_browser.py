"""The web demo in a real browser: Debian's headless Chromium, driven by Playwright.

The demo app (examples/web_demo/app.py) runs under uvicorn on 127.0.0.1 with its scripted model
server. The test presses the button, checks that the rows appear one at a time, greyed out while
in progress, before the final "done", that each person's name lights up in the text the moment
their row is done (at its span, counted in characters, also after emoji and CJK), and that
closing the page cancels the model request. Screenshots go to artifacts/.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "web_demo" / "app.py"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Records, in the page, every change of the table, the highlighted text and the status line
# with its time.
RECORD = """() => {
  window.__timeline = [];
  const t0 = performance.now();
  const snap = () => {
    const partial = document.querySelector("#items tbody tr.partial");
    window.__timeline.push({
      t: performance.now() - t0,
      done: document.querySelectorAll("#items tbody tr.done").length,
      marks: document.querySelectorAll("#source mark").length,
      partial: partial ? partial.textContent : null,
      partialColor: partial ? getComputedStyle(partial).color : null,
      state: document.getElementById("status").dataset.state,
    });
  };
  new MutationObserver(snap).observe(document.body, {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
}"""


def require_browser() -> None:
    """Skip, loudly, when the browser or its driver is missing; say how to install them."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append(
            "the Playwright Python package (pip install playwright; do NOT run "
            "`playwright install`: the test drives the system Chromium)"
        )
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Debian's Chromium at {CHROMIUM} (apt-get install -y chromium)")
    for module in ("fastapi", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} (pip install -e '.[dev]')")
    if missing:
        pytest.skip("BROWSER TEST SKIPPED, missing: " + "; ".join(missing))


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("multitask_web_demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import has it: pydantic resolves names there
    spec.loader.exec_module(module)
    return module


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 in a thread (its own asyncio loop)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def first_times(timeline: list[dict[str, Any]], key: str = "done") -> dict[int, float]:
    """When each count of completed rows (or of highlighted spans) was first seen."""
    seen: dict[int, float] = {}
    for entry in timeline:
        seen.setdefault(entry[key], entry["t"])
    return seen


def marked(page: Any) -> list[tuple[str, str]]:
    """The highlighted spans of the shown text: (words, items)."""
    found: list[tuple[str, str]] = page.eval_on_selector_all(
        "#source mark", "ms => ms.map(m => [m.textContent, m.dataset.items])"
    )
    return [tuple(pair) for pair in found]  # type: ignore[misc]


def test_demo_streams_rows_and_closing_the_page_cancels_the_model() -> None:
    require_browser()
    from playwright.sync_api import sync_playwright

    demo = load_demo()
    people = demo.DEMO_PEOPLE
    app = demo.create_app(tokens_per_second=60.0, keep_alive=1.0)
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(app) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 640})
            page.set_default_timeout(10_000)
            page.goto(url)
            page.evaluate(RECORD)
            page.click("#go")

            # A screenshot while an item is in progress, after at least one is done.
            page.wait_for_function(
                "document.querySelectorAll('#items tr.done').length >= 1 &&"
                " (document.querySelector('#items tr.partial td[data-field=name]') || {})"
                ".textContent"
            )
            page.screenshot(path=str(ARTIFACTS / "web_demo_streaming.png"))
            page.wait_for_function(
                "document.getElementById('status').dataset.state !== 'streaming'"
            )
            page.screenshot(path=str(ARTIFACTS / "web_demo_done.png"))
            timeline: list[dict[str, Any]] = page.evaluate("window.__timeline")

            # Every person arrived, in order, solid.
            names = page.locator("#items tbody tr.done td[data-field=name]").all_text_contents()
            assert names == [p["name"] for p in people]
            assert page.locator("#items tbody tr.partial").count() == 0
            assert page.get_attribute("#status", "data-state") == "done"

            # Rows appeared one at a time, at distinct times, all before the final "done".
            seen = first_times(timeline)
            assert sorted(seen) == list(range(len(people) + 1)), seen
            times = [seen[n] for n in range(1, len(people) + 1)]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(gap > 20 for gap in gaps), f"rows appeared together: {times}"
            done_at = next(e["t"] for e in timeline if e["state"] == "done")
            # The last row and the end may come in one read; every other row came before.
            assert times[-1] <= done_at
            assert times[-2] < done_at
            assert done_at - times[0] > 300, "the first row came well before the end"

            # Each name lit up in the text, one by one, the moment its row was done: in every
            # snapshot as many highlighted spans as completed rows; in the end one per person.
            marks = first_times(timeline, "marks")
            assert sorted(marks) == list(range(len(people) + 1)), marks
            assert all(e["marks"] == e["done"] for e in timeline), timeline
            mark_times = [marks[n] for n in range(1, len(people) + 1)]
            assert mark_times == times
            assert marked(page) == [(p["name"], str(i)) for i, p in enumerate(people)]
            shown = page.text_content("#source")
            assert shown == demo.DEMO_TEXT

            # The row in progress was greyed out and grew as the model wrote it.
            partials = [e for e in timeline if e["partial"]]
            assert len({e["partial"] for e in partials}) > len(people), "rows grew in place"
            colors = {e["partialColor"] for e in partials}
            assert colors
            assert all(c not in ("rgb(0, 0, 0)", "rgb(28, 28, 28)") for c in colors)

            # Spans count characters (code points, as Python's str), not UTF-16 units: names
            # after emoji (two units each, or a sequence of them) and CJK are marked exactly.
            text = "👩‍💻 東京で Ada Lovelace, 36, met 🇫🇷 Alan Turing, 41. Zoë Ångström e\u0301 too."
            page.fill("#text", text)
            page.click("#go")
            page.wait_for_function("document.getElementById('status').dataset.state === 'done'")
            assert marked(page) == [("Ada Lovelace", "0"), ("Alan Turing", "1")]
            assert page.text_content("#source") == text
            assert page.locator("#items tbody tr.done").count() == 2
            page.screenshot(path=str(ARTIFACTS / "web_demo_highlights.png"))

            # Closing the page mid-stream makes the model server see the request cancelled.
            page.fill("#text", demo.DEMO_TEXT)
            server = app.state.server
            before = len(server.requests)
            page.click("#go")
            page.wait_for_selector("#items tbody tr.partial")
            deadline = time.monotonic() + 5
            while len(server.requests) <= before:
                assert time.monotonic() < deadline, "the model request never came"
                time.sleep(0.01)
            page.close()
            request = server.requests[before]
            while not request.disconnected:
                assert time.monotonic() < deadline, "closing the page did not cancel upstream"
                time.sleep(0.02)
            assert not request.completed
        finally:
            browser.close()
