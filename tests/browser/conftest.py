"""Browser tests: the responder page in Debian's headless Chromium, driven by Selenium through Debian's chromedriver,
against a real `herald api` process on the session's real Postgres and Redis.

The database, Redis prefix and their fixtures are tests/integration/conftest.py's, reused here (its session hooks
run once, even when both directories are collected in one run). No browser is ever downloaded: without
/usr/bin/chromium and /usr/bin/chromedriver this tries `apt-get install chromium chromium-driver` (as root), and
only if that fails too are the tests skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import conftest as integration
from tests.integration.conftest import (  # noqa: F401  (fixtures, found by name)
    DATA_DIR,
    ROOT,
    clean,
    no_unexpected_errors,
    sample_directory,
    track_log,
    wait_until,
)

CHROMIUM = Path(os.environ.get("HERALD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("HERALD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = Path(os.environ.get("HERALD_SCREENSHOTS") or ROOT / "build" / "screenshots")
PHONE, DESKTOP = (390, 844), (1280, 900)


def _integration_loaded(config: pytest.Config) -> bool:
    return config.pluginmanager.is_registered(integration)


def pytest_configure(config: pytest.Config) -> None:
    if not _integration_loaded(config):  # `pytest tests/browser` alone: create the session's database here
        integration.pytest_configure(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not _integration_loaded(config):
        integration.pytest_unconfigure(config)


def _install_chromium() -> str | None:
    """None once Chromium and its driver are there; else why not (the tests are skipped with that reason)."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return (f"{CHROMIUM} or {CHROMEDRIVER} is missing and cannot be installed here (needs apt-get as root: "
                "apt-get install chromium chromium-driver)")
    done = subprocess.run([apt, "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    return f"apt-get install chromium chromium-driver failed: {(done.stderr or done.stdout).strip()[-300:]}"


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    why = _install_chromium()
    if why is not None:
        pytest.skip(why)
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


class Browser:
    """One headless Chromium with its own profile (so its own storage, service workers and permissions)."""

    def __init__(self, paths: tuple[Path, Path], profile: Path, size: tuple[int, int] = DESKTOP) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(paths[0])
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                    f"--user-data-dir={profile}", "--lang=en-US", f"--window-size={size[0]},{size[1]}"):
            options.add_argument(arg)
        log = track_log(DATA_DIR / f"chromedriver-{profile.name}.log")
        self.driver = webdriver.Chrome(service=Service(str(paths[1]), log_output=str(log)), options=options)
        self.driver.set_script_timeout(30)
        self.resize(size)

    def resize(self, size: tuple[int, int]) -> None:
        """The page's viewport, exactly (a phone is also mobile: touch, no scrollbars)."""
        width, height = size
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()


@pytest.fixture
def browsers(chromium: tuple[Path, Path], tmp_path: Path) -> Iterator[Any]:
    """Open browsers with ``browsers()``: each its own profile; all closed after the test."""
    opened: list[Browser] = []

    def open_one(size: tuple[int, int] = DESKTOP) -> Browser:
        browser = Browser(chromium, tmp_path / f"profile-{len(opened)}", size)
        opened.append(browser)
        return browser

    yield open_one
    for browser in opened:
        browser.quit()
