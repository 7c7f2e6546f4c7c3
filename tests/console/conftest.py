from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.support.browser import headless_chromium


# Module-scoped, not session-scoped: Playwright's sync API keeps an asyncio loop running in this
# thread while it is open, and pytest-asyncio cannot run the async tests of other folders then.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with headless_chromium() as chromium:
        yield chromium
