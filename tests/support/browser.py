"""A real browser for the tests: Debian's headless Chromium, driven by its chromedriver.

Tests wait on conditions (WebDriverWait), never on time, and every call that waits runs
in a thread (`await browser.one(...)`): the test's event loop stays free for what it
serves meanwhile (the fake providers). Every browser a test opened is
photographed into var/test-artifacts/ when the test fails, and whenever a test asks
(`Browser.screenshot`). Without Chromium a browser test fails with the install line,
and is skipped only on a machine that could not install it (no apt) outside CI.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver"
# A closed network: nothing that phones home (updates, sync, QUIC probes, first-run pages).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT = 30.0


def require_chromium() -> None:
    """Fail (or, off CI on a machine without apt, skip) with how to install Chromium."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if not missing:
        return
    message = f"browser tests need headless Chromium: {', '.join(missing)} missing; run {INSTALL}"
    if os.environ.get("CI") or shutil.which("apt-get"):
        pytest.fail(message)
    pytest.skip(message)


class Browser:
    """One Chromium window, with the waits and lookups the tests use."""

    def __init__(self, name: str, size: tuple[int, int], *, javascript: bool = True) -> None:
        self.name = name
        self._profile = tempfile.TemporaryDirectory(prefix=f"chromium-{name}-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile.name}")
        options.add_argument(f"--window-size={size[0]},{size[1]}")
        if not javascript:  # a page as it was served: nothing updates it
            options.add_experimental_option(
                "prefs", {"profile.managed_default_content_settings.javascript": 2}
            )
        service = Service(executable_path=CHROMEDRIVER)
        self.driver = webdriver.Chrome(options=options, service=service)
        if size[0] < 500:  # below the narrowest headless window: emulate the device
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": size[0], "height": size[1], "deviceScaleFactor": 2, "mobile": True},
            )

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._profile.cleanup()

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def click(self, element: WebElement) -> None:
        """A click, and whatever page load it starts."""
        await asyncio.to_thread(element.click)

    async def until(self, condition: Callable[[webdriver.Chrome], T], what: str) -> T:
        """The condition's first truthy value; a failure names what was awaited."""
        # A live page replaces its parts as news comes: an element read a moment ago may be
        # gone, which is a reason to look again, not a failure.
        wait = WebDriverWait(
            self.driver,
            WAIT,
            poll_frequency=0.05,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        try:
            return await asyncio.to_thread(wait.until, condition)
        except TimeoutException:
            raise AssertionError(f"{self.name}: waited {WAIT}s for {what}") from None

    def all(self, testid: str, extra: str = "") -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]{extra}')

    async def one(self, testid: str, extra: str = "") -> WebElement:
        """The element, once it is there."""
        selector = f'[data-testid="{testid}"]{extra}'

        def found(_: webdriver.Chrome) -> WebElement | bool:
            elements = self.all(testid, extra)
            return elements[0] if elements else False

        element = await self.until(found, selector)
        assert isinstance(element, WebElement)
        return element

    def texts(self, testid: str, extra: str = "") -> list[str]:
        """The text of every matching element, read at one instant (in the page)."""
        texts = self.script(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.innerText);",
            f'[data-testid="{testid}"]{extra}',
        )
        return [str(text) for text in texts]

    def script(self, source: str, *args: Any) -> Any:
        return self.driver.execute_script(source, *args)

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{_safe(label)}-{_safe(self.name)}.png"
        self.driver.save_screenshot(str(path))
        return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[-120:]


@pytest.fixture
def browsers(request: pytest.FixtureRequest) -> Iterator[Callable[..., Browser]]:
    """`browsers(name, size=DESKTOP, javascript=True)` opens a browser; all are
    photographed when the test fails, and closed at its end."""
    require_chromium()
    opened: list[Browser] = []

    def open_browser(
        name: str, size: tuple[int, int] = DESKTOP, *, javascript: bool = True
    ) -> Browser:
        browser = Browser(name, size, javascript=javascript)
        opened.append(browser)
        return browser

    yield open_browser
    report = getattr(request.node, "rep_call", None)
    for browser in opened:
        try:
            if report is not None and report.failed:
                browser.screenshot(f"FAILED-{request.node.name}")
        finally:
            browser.close()
