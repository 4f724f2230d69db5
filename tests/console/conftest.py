"""The console modules' shared set-up: the console served for real with its password,
a headless chromium, and a fresh browser tab on the console for each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.console.console_kit import CHROMIUM, PASSWORD, Console, start_console, stop_console


@pytest.fixture(scope="module")
def console(redis_url: str, tmp_path_factory) -> Iterator[Console]:
    served = start_console(redis_url, tmp_path_factory.mktemp("console"), HIVEMIND_CONSOLE_PASSWORD=PASSWORD)
    yield served
    stop_console(served)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (dev extra)")
    with playwright_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, console: Console) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, base_url=console.url)
    tab = context.new_page()
    yield tab
    context.close()
