"""The web terminal and code-server of a launched instance in a real browser (Debian's
Chromium), through the URLs the API returns: what a customer clicks on. The terminal's
page loads xterm.js, opens its websocket (the browser's basic-auth login and the
session cookie it got) and shows what the shell prints; code-server's login form takes
the generated password and opens VS Code's workbench."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.access.customer import launch_services
from tests.containers import labelled_containers_remove

pytestmark = [pytest.mark.docker, pytest.mark.celery, pytest.mark.browser]


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    labelled_containers_remove()


def test_a_customer_uses_the_terminal_and_code_server_in_a_browser(celery_worker, this_host, alice, browser, shoot):
    access = launch_services(alice)

    terminal = browser.new_context(http_credentials={"username": "root", "password": access["token"]})
    try:
        page = terminal.new_page()
        page.goto(access["terminal"])
        screen = page.locator(".xterm-rows")
        expect(screen).to_contain_text("/workspace#", timeout=30_000)  # bash's prompt, in /workspace
        page.locator(".xterm-helper-textarea").focus()
        page.keyboard.type("echo I am $(id -un) on $((6*7))\n")
        expect(screen).to_contain_text("I am root on 42", timeout=30_000)
        shoot(page, "instance-terminal")
    finally:
        terminal.close()

    editor = browser.new_context()
    try:
        page = editor.new_page()
        page.goto(access["code-server"])
        page.locator("input[name=password]").fill("not the password")
        page.locator("input[name=password]").press("Enter")
        expect(page.locator(".error")).to_contain_text("Incorrect password", timeout=30_000)
        page.locator("input[name=password]").fill(access["token"])
        page.locator("input[name=password]").press("Enter")
        expect(page.locator(".monaco-workbench")).to_be_visible(timeout=90_000)
        assert page.url.endswith("folder=/workspace")
        shoot(page, "instance-code-server")
    finally:
        editor.close()
