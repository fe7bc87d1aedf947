"""Debian's Chromium driven by Selenium (chromium-driver, headless, nothing downloaded), and the console as
an operator sees it: sign in, wait for what appears, read text, click, screenshot. Not a test module.

Selenium is blocking: async tests run a whole browser scenario in a worker thread (`asyncio.to_thread`), so
that the agent on the test's event loop keeps working meanwhile.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT_S = 20.0


def need_chromium() -> None:
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        pytest.skip("Debian chromium and chromium-driver are not installed (make deb)")


@contextmanager
def chromium(downloads: Path | None = None) -> Iterator[WebDriver]:
    need_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,950",
                "--autoplay-policy=no-user-gesture-required", "--lang=ko-KR", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Console:
    driver: WebDriver
    base_url: str
    shots: Path

    def open(self) -> None:
        self.driver.get(f"{self.base_url}/")

    def sign_in(self, token: str) -> None:
        self.open()
        self.fill("#token", token)
        self.click("#signin-button")
        self.visible("#who")

    def sign_out(self) -> None:
        self.click("#signout")
        self.visible("#signin")

    def tabs(self) -> list[str]:
        """The views the signed-in role is offered."""
        return [str(b.get_attribute("data-view")) for b in self.all("#tabs button") if b.is_displayed()]

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css: str, timeout_s: float = WAIT_S) -> WebElement:
        """The first element matching `css` once it is displayed."""

        def shown(_d: WebDriver) -> WebElement | bool:
            found = [e for e in self.all(css) if e.is_displayed()]
            return found[0] if found else False

        element: WebElement = self.until(shown, f"{css} to show", timeout_s)
        return element

    def until(self, check: Any, what: str, timeout_s: float = WAIT_S) -> Any:
        """`check(driver)`'s first true value; an element replaced meanwhile (a reload) is looked up again."""
        wait = WebDriverWait(
            self.driver, timeout_s, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(check, f"waiting for {what}")

    def click(self, css: str) -> None:
        self.visible(css).click()

    def fill(self, css: str, value: str) -> None:
        field = self.visible(css)
        field.clear()
        field.send_keys(value)

    def text(self, css: str) -> str:
        return str(self.visible(css).text)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def problems(self) -> list[str]:
        """Script errors and Content-Security-Policy violations the page logged since the last call (refused
        API calls, which the page shows as messages, are logged as network errors: not problems)."""
        log = self.driver.get_log("browser")
        return [e["message"] for e in log if e["level"] == "SEVERE" and e["source"] != "network"]
