"""The deployment tests drive Chromium with the browser tests' fixtures."""

from tests.browser.conftest import browser, watch  # noqa: F401
