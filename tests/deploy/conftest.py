"""The deployment tests drive Chromium with the browser tests' fixtures."""

from tests.browser.conftest import _chromium, browser, watch  # noqa: F401
