"""The explorer page in a real browser: Debian's chromium, driven by Playwright, on real uvicorn.

Playwright's own browser download needs a CDN that is not reachable here, so the browser is
Debian's `chromium` (installed by `scripts/install-chromium.sh`, which `make test` runs; set
`CHROMIUM` to use another binary). Without it these tests fail and say how to get it: they never
skip. The page runs under its real Content-Security-Policy (Playwright's `bypass_csp` is off), so
an inline script or an asset from elsewhere would show up as a console error.

Screenshots land in `artifacts/explorer/` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from tests.app.test_server import uvicorn_server

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "explorer"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
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
SHARED_TEXT = "I loved the acting, but the plot was thin and the ending awful :("
LONG_TEXT = " ".join(["The food was great but the service was painfully slow today ."] * 17)
TIMEOUT_MS = 20_000
LOADED = re.compile(r"^Read \d+ tokens?\.$")  # the status once states and attributions are drawn


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which(CHROMIUM)
    if executable is None:
        pytest.fail(
            f"Debian's chromium is needed for the explorer page test and was not found at "
            f"{CHROMIUM!r}. Install it with `scripts/install-chromium.sh` (as root it runs "
            f"`apt-get install -y chromium`; `make test` does this), or set CHROMIUM=/path."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (or `make install`)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageWatch:
    """A page with every console message and uncaught error recorded."""

    def __init__(self, browser: Any, width: int = 1200) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.console.append((message.type, message.text)))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watch(browser: Any) -> Iterator[Any]:
    def open_page(width: int = 1200) -> PageWatch:
        opened = PageWatch(browser, width)
        pages.append(opened)
        return opened

    pages: list[PageWatch] = []
    yield open_page
    for opened in pages:
        opened.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def token_texts(base_url: str, text: str, headers: dict[str, str] | None = None) -> list[str]:
    response = httpx.post(f"{base_url}/tokenize", json={"text": text}, headers=headers, timeout=10)
    return [token["text"] for token in response.raise_for_status().json()["tokens"]]


def test_the_page_reads_a_shared_text_and_follows_typing(
    checkpoints: dict[str, Path], tmp_path: Path, watch: Any
) -> None:
    from playwright.sync_api import expect

    with uvicorn_server(checkpoints["lstm"], tmp_path / "server.log") as base_url:
        predicted = httpx.post(f"{base_url}/predict", json={"text": SHARED_TEXT}, timeout=10)
        label = predicted.raise_for_status().json()["label"]
        tokens = token_texts(base_url, SHARED_TEXT)

        watched = watch()
        page = watched.page
        page.goto(f"{base_url}/?text={quote(SHARED_TEXT)}")
        expect(page.locator("#status")).to_have_text(LOADED)
        expect(page.locator("#text")).to_have_value(SHARED_TEXT)
        expect(page.locator("#label")).to_have_text(label)
        expect(page.locator("#model-info")).to_contain_text("LSTM")
        assert page.locator("#tokens .token").all_text_contents() == tokens
        assert page.locator("#probabilities .prob-row").count() == 3

        lines = page.locator("#curve svg polyline.curve-line")
        expect(lines).to_have_count(3)
        for index in range(3):
            points = lines.nth(index).get_attribute("points") or ""
            assert len(points.split()) == len(tokens)
        assert {lines.nth(i).get_attribute("data-label") for i in range(3)} == {
            "negative",
            "neutral",
            "positive",
        }
        heatmap = page.locator("#heatmap")
        assert (heatmap.bounding_box() or {"width": 0})["width"] > 100
        expect(page.locator("#gates-body")).to_be_visible()
        expect(page.locator("#gate")).to_have_value("forget")
        expect(page.locator("#attr-note")).to_contain_text("Integrated gradients toward")
        shaded = page.locator("#tokens .token").first.evaluate("node => node.style.background")
        assert shaded.startswith("rgba(")
        shot = screenshot(page, "explorer-lstm.png")
        assert shot.stat().st_size > 10_000

        # Keyboard: the heatmap reads out the cell under its cursor.
        heatmap.focus()
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowDown")
        expect(page.locator("#heat-readout")).to_contain_text(f"after “{tokens[1]}” (#1)")
        page.get_by_label("Occlusion (word replaced by <unk>)").check()
        expect(page.locator("#attr-note")).to_contain_text("Occlusion")

        # A new text: the page follows typing, and the address keeps the text for sharing.
        started = time.perf_counter()
        page.locator("#text").fill(LONG_TEXT)
        long_tokens = token_texts(base_url, LONG_TEXT)
        assert len(long_tokens) >= 200
        expect(page.locator("#tokens .token")).to_have_count(len(long_tokens))
        expect(page.locator("#status")).to_have_text(f"Read {len(long_tokens)} tokens.")
        seconds = time.perf_counter() - started
        print(f"a {len(long_tokens)}-token text was drawn {seconds:.2f} s after typing")
        assert page.locator("#tokens .token").all_text_contents() == long_tokens
        points = lines.first.get_attribute("points") or ""
        assert len(points.split()) == len(long_tokens)
        query = parse_qs(urlsplit(page.url).query)
        assert query["text"] == [LONG_TEXT]
        screenshot(page, "explorer-lstm-200-tokens.png")

    assert watched.errors == []
    assert watched.console_errors() == []


@pytest.mark.parametrize("kind", ["rnn", "bilstm"])
def test_the_page_adapts_to_the_cell(
    checkpoints: dict[str, Path], tmp_path: Path, watch: Any, kind: str
) -> None:
    from playwright.sync_api import expect

    with uvicorn_server(checkpoints[kind], tmp_path / "server.log") as base_url:
        watched = watch(width=390)  # a phone
        page = watched.page
        page.goto(f"{base_url}/?text={quote('not bad at all, really')}")
        expect(page.locator("#status")).to_have_text(LOADED)
        if kind == "rnn":
            expect(page.locator("#no-gates")).to_be_visible()
            expect(page.locator("#gates-body")).to_be_hidden()
            expect(page.locator("#curve svg polyline.curve-line")).to_have_count(3)
        else:
            expect(page.locator("#steps-note")).to_contain_text("bidirectional")
            expect(page.locator("#curve svg")).to_have_count(0)
            expect(page.locator("#layer option")).to_have_count(2)  # forward and backward
        screenshot(page, f"explorer-{kind}-phone.png")
    assert watched.errors == []
    assert watched.console_errors() == []


def test_the_page_asks_for_an_api_key_and_keeps_it_in_the_tab(
    checkpoints: dict[str, Path], tmp_path: Path, watch: Any
) -> None:
    from playwright.sync_api import expect

    key = "explorer-key-123"
    log = tmp_path / "server.log"
    with uvicorn_server(checkpoints["gru"], log, APP_API_KEYS=key) as base_url:
        watched = watch()
        page = watched.page
        page.goto(f"{base_url}/?text=lovely")
        expect(page.locator("#status")).to_contain_text("needs an API key")
        expect(page.locator("#key-box")).to_have_attribute("open", "")
        page.get_by_label("Key", exact=True).fill(key)
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#status")).to_have_text(LOADED)
        expect(page.locator("#model-info")).to_contain_text("GRU")
        assert page.evaluate("sessionStorage.getItem('rnn-sentiment.api-key')") == key
        page.reload()  # same tab: the key is still there
        expect(page.locator("#status")).to_have_text(LOADED)
    assert watched.errors == []
    # The first calls were refused with 401 on purpose; the browser logs those, nothing else.
    assert watched.console_errors()
    assert all("401" in text for text in watched.console_errors())
