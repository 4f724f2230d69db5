"""Logging in to the console in a real browser, and what it refuses: a wrong
password, a change without the CSRF token, a listener off loopback without a
password. Real Redis; the console served by `hivemind console` in a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from tests.console.console_kit import console_env, log_in, screenshot, start_console, stop_console
from tests.services_kit import ROOT

pytestmark = [pytest.mark.redis]


def test_log_in_shows_the_overview(page, console) -> None:
    page.goto("/")
    assert page.url.endswith("/login"), "an anonymous visit goes to the login page"
    screenshot(page, "login")
    log_in(page)
    assert page.url == console.url + "/", page.url
    assert page.locator("h1").inner_text() == "Overview"
    assert page.locator("#site-state .value").inner_text() in {"Idle", "Busy", "Paused", "Offline"}
    page.set_viewport_size({"width": 420, "height": 860})  # a narrow window: the menu goes on top
    screenshot(page, "overview-narrow")
    assert page.locator("nav.sidebar").bounding_box()["width"] > 400
    cookie = next(c for c in page.context.cookies() if c["name"] == "hivemind_console")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"


def test_a_wrong_password_is_refused(page) -> None:
    log_in(page, password="not the password")
    assert page.url.endswith("/login")
    assert page.locator("#login-error").inner_text() == "Wrong password."
    screenshot(page, "login-refused")
    # Still not in: a page sends the browser back to the login form.
    page.goto("/history")
    assert page.url.endswith("/login")


def test_a_change_without_the_csrf_token_is_refused(page, redis_client) -> None:
    from hivemind_celery.core import keys

    log_in(page)
    redis_client.delete(keys.site_prefs())
    # The session cookie is sent, the token is not: refused, nothing changes.
    reply = page.context.request.post("/pause", form={"hours": ""})
    assert reply.status == 403
    reply = page.context.request.post("/preferences", form={"run_mode": "never"})
    assert reply.status == 403
    assert redis_client.get(keys.site_prefs()) is None
    # A token that is not the session's is refused as well.
    reply = page.context.request.post("/pause", form={"csrf_token": "forged"})
    assert reply.status == 403
    assert redis_client.get(keys.site_prefs()) is None
    # The same change with the page's token goes through.
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    reply = page.context.request.post("/pause", form={"csrf_token": token}, max_redirects=0)
    assert reply.status == 303
    assert redis_client.get(keys.site_prefs()) is not None
    redis_client.delete(keys.site_prefs())


def test_an_api_call_without_a_session_is_refused(console) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(console.url + "/api/overview", timeout=5)
    assert refused.value.code == 401


def test_off_loopback_needs_a_password(redis_url, tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hivemind.cli", "console", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=console_env(redis_url, tmp_path / "state"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "HIVEMIND_CONSOLE_PASSWORD" in done.stderr
    assert not (tmp_path / "state" / "password").exists()


def test_a_generated_password_is_kept_private_and_printed_once(redis_url, tmp_path, browser) -> None:
    served = start_console(redis_url, tmp_path)
    try:
        password_file = tmp_path / "state" / "password"
        mode = stat.S_IMODE(os.stat(password_file).st_mode)
        assert mode == 0o600, oct(mode)
        password = password_file.read_text().strip()
        assert len(password) >= 12
        assert password in served.log()
        context = browser.new_context(base_url=served.url)
        tab = context.new_page()
        log_in(tab, password)
        assert tab.locator("h1").inner_text() == "Overview"
        context.close()
    finally:
        stop_console(served)
    again = start_console(redis_url, tmp_path)
    try:
        assert password not in again.log(), "printed only at first start"
        assert password_file.read_text().strip() == password
    finally:
        stop_console(again)
