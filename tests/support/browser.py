"""A real headless Chromium for the console's tests: Debian's `chromium` package (the system
browser; .ci/run installs it), driven by Playwright's Python package. Playwright downloads no
browser of its own here: it is pointed at the system's executable."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def chromium_path() -> str | None:
    return shutil.which("chromium") or (CHROMIUM if shutil.which(CHROMIUM) else None)


@contextmanager
def headless_chromium() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no system Chromium: apt-get install -y chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageProblems:
    """What a page reported while a test used it: uncaught errors and console errors (a script the
    Content-Security-Policy blocked shows here)."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")
