"""Fixtures of the browser tests: one `sipledger up` and one headless Chromium
(Debian's `chromium` + `chromium-driver`, driven by Selenium) for the module,
and a ``Panel`` helper that speaks in the panel's terms (log in, open a page,
wait for text, take a screenshot).

Screenshots go to tests/panel/output/ (ignored by git), one per test, named
after it: a test that fails leaves its last screen there for a post-mortem."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import sipp_dir, uas_factory  # noqa: F401  (SIPp callees, as in tests/e2e)
from tests.harness.calls import start_sipledger
from tests.harness.poll import eventually

OUTPUT = Path(__file__).parent / "output"
CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
WAIT_S = 15.0


def chromium_paths() -> tuple[str, str] | None:
    browser = next((p for p in map(shutil.which, CHROMIUM) if p), None)
    driver = shutil.which(DRIVER) or (DRIVER if Path(f"/usr/bin/{DRIVER}").exists() else None)
    return (browser, driver) if browser and driver else None


def pytest_collection_modifyitems(config, items):
    if chromium_paths() is not None:
        return
    skip = pytest.mark.skip(reason="chromium and chromium-driver (Debian packages) are not installed: "
                                   "./quickstart.sh test installs them")
    for item in items:
        if "tests/panel/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


class Panel:
    """The browser at the panel of one `up`."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    # -- pages -------------------------------------------------------------------------
    def open(self, route: str) -> None:
        """``route`` is the part after '#', e.g. '/cdrs'."""
        self.driver.get(f"{self.base_url}/panel/#{route}")

    def logout(self) -> None:
        self.driver.get(f"{self.base_url}/panel/")
        self.driver.execute_script("sessionStorage.clear()")
        self.open("/login")
        self.find("#login-token")

    def login_token(self, token: str) -> None:
        self.logout()
        self.type("#token", token)
        self.click("#login-token-submit")
        self.find("#logout")

    def login_user(self, user: str, password: str) -> None:
        self.logout()
        self.type("#user", user)
        self.type("#password", password)
        self.click("#login-user-submit")

    # -- elements ----------------------------------------------------------------------
    def find(self, css: str, timeout: float = WAIT_S):
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        def visible():
            try:
                el = self.driver.find_element(By.CSS_SELECTOR, css)
                return el if el.is_displayed() else None
            except (NoSuchElementException, StaleElementReferenceException):
                return None
        return eventually(visible, f"{css} on the page ({self.driver.current_url})", timeout, interval=0.1)

    def all(self, css: str) -> list:
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def gone(self, css: str, timeout: float = WAIT_S) -> None:
        eventually(lambda: not self.all(css), f"{css} gone from the page", timeout, interval=0.1)

    def text(self, css: str) -> str:
        return self.find(css).text

    def wait_text(self, css: str, want: str | Callable[[str], bool], timeout: float = WAIT_S) -> str:
        from selenium.common.exceptions import StaleElementReferenceException
        check = want if callable(want) else (lambda t: want in t)

        def has() -> str | None:
            try:
                texts = [el.text for el in self.all(css)]
            except StaleElementReferenceException:
                return None
            return next((t for t in texts if check(t)), None)
        return eventually(has, f"{css} with {want!r} ({self.driver.current_url})", timeout, interval=0.1)

    def type(self, css: str, text: str) -> None:
        el = self.find(css)
        el.clear()
        el.send_keys(text)

    def click(self, css: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException

        def clicked() -> bool:
            try:
                self.find(css).click()
                return True
            except StaleElementReferenceException:     # redrawn under us (live lists): find it again
                return False
        eventually(clicked, f"click {css}", WAIT_S, interval=0.1)

    def screenshot(self, name: str) -> Path:
        OUTPUT.mkdir(exist_ok=True)
        path = OUTPUT / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """`sipledger up` with example.test (alice, bob, carol), SIP capture on (the call
    page's ladder) and an admin REST client."""
    sl = start_sipledger(tmp_path_factory.mktemp("panel") / "data", extra_config="[trace]\nenabled = true\n")
    try:
        sl.admin_client()
        sl.admin_token = sl.client.headers["Authorization"].split()[1]
        yield sl
    finally:
        sl.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    assert paths is not None
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1300", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        options.add_argument(arg)
    service = Service(paths[1])
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()          # stops chromium and chromedriver (started here, by their handles)


@pytest.fixture(scope="module")
def panel(browser, up) -> Panel:
    return Panel(browser, up.api_url)


@pytest.fixture
def shot(panel, request):
    """Take this test's screenshot: ``shot()`` (at the moment worth seeing); a test
    that failed before gets its last screen."""
    taken: list[Path] = []

    def take(suffix: str = "") -> Path:
        taken.append(panel.screenshot(request.node.name + suffix))
        return taken[-1]
    yield take
    if not taken:
        take("-last")
