"""The clinicians' page in headless Chromium (Selenium 4 and Debian's chromium-driver), keyboard only.

Every host name but 127.0.0.1 fails to resolve, so a page that reached outside the service would fail and say so
in the console; the network log shows every request the browser made. Screenshots go to
``test-artifacts/clinic/`` (git-ignored). Skipped without ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``
(``make test`` installs them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service.test_model_endpoints import (  # noqa: F401 - the module-scoped fixtures, reused
    Case,
    Registry,
    Service,
    case,
    registry,
    service,
)

from .pages import ct_file

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "clinic"
pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
)
HEADINGS = {"kk": "Зерттеуді жүктеу", "ru": "Загрузка исследования", "en": "Upload a study"}
SIGN_OUT = {"kk": "Шығу", "ru": "Выйти", "en": "Sign out"}
MAX_TABS = 20

webdriver = pytest.importorskip("selenium.webdriver", reason="needs Selenium 4 (a dev dependency)")
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium that can reach 127.0.0.1 only, with its console and network logs kept."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,1400",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online: the path is given
        chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    chrome.set_page_load_timeout(120)
    try:
        yield chrome
    finally:
        chrome.quit()


def _tab_to(driver: WebDriver, element_id: str) -> Any:
    """Press Tab until the element ``element_id`` has the focus; returns the focused element."""
    for _ in range(MAX_TABS):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        focused = driver.switch_to.active_element
        if focused.get_attribute("id") == element_id:
            return focused
    raise AssertionError(f"#{element_id} was not reached with {MAX_TABS} presses of Tab")


def _sign_in(driver: WebDriver, base: str, token: str, lang: str = "en") -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/clinic/login?lang={lang}")
    _tab_to(driver, "token").send_keys(token)
    _tab_to(driver, "sign-in").send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "upload-heading")))


def _upload_with_the_keyboard(driver: WebDriver, path: Path) -> None:
    _tab_to(driver, "file").send_keys(str(path))  # the focused file input takes the path, as a file chooser would
    _tab_to(driver, "submit").send_keys(Keys.ENTER)
    WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.ID, "result")))


def _shot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.get_screenshot_as_file(str(path))
    return path


def _page_problems(driver: WebDriver, base: str) -> tuple[list[str], list[str]]:
    """Console errors since the last call, and every URL the browser requested outside the service."""
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[no-untyped-call]
    outside = []
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not (url.startswith(base + "/") or url.startswith("data:")):
                outside.append(url)
    return severe, outside


def test_sign_in_and_score_a_chest_radiograph_with_the_keyboard_only(
    driver: WebDriver,
    service: Service,  # noqa: F811
    case: Case,  # noqa: F811
) -> None:
    _page_problems(driver, service.base)  # start with empty logs
    _sign_in(driver, service.base, service.tokens["clinician"])
    _upload_with_the_keyboard(driver, case.dicom)
    probability = float(driver.find_element(By.ID, "probability").text)
    call = driver.find_element(By.ID, "call").text
    band = driver.find_element(By.ID, "band").text
    overlay = driver.find_element(By.ID, "overlay")
    shot = _shot(driver, "radiograph-en")
    assert 0.0 <= probability <= 1.0
    assert call.split(" (")[0] in ("Positive", "Negative") and "(threshold 0." in call
    assert band.split(" ")[0] in ("Low", "Moderate", "High"), band
    assert str(overlay.get_attribute("src")).startswith("data:image/png;base64,")
    width = overlay.get_property("naturalWidth")
    assert isinstance(width, int) and width > 0  # the browser decoded the PNG (the CSP allowed it)
    assert driver.find_element(By.ID, "result-heading").text == "Result"
    assert shot.stat().st_size > 10_000
    assert _page_problems(driver, service.base) == ([], [])


def test_a_ct_shows_the_refusal(
    driver: WebDriver,
    service: Service,  # noqa: F811
    tmp_path: Path,
) -> None:
    ct = tmp_path / "ct.dcm"
    ct.write_bytes(ct_file())
    _page_problems(driver, service.base)
    _sign_in(driver, service.base, service.tokens["clinician"])
    _upload_with_the_keyboard(driver, ct)
    refusal = driver.find_element(By.ID, "refusal").text
    _shot(driver, "ct-refused-en")
    assert driver.find_element(By.ID, "result-heading").text == "The service refused this study"
    assert "outside this model's intended use" in refusal
    assert driver.find_element(By.ID, "api-status").text == "HTTP 422"
    assert not driver.find_elements(By.ID, "probability") and not driver.find_elements(By.ID, "overlay")
    assert _page_problems(driver, service.base) == ([], [])


@pytest.mark.parametrize("lang", ["kk", "ru", "en"])
def test_the_page_in_each_language(
    driver: WebDriver,
    service: Service,  # noqa: F811
    lang: str,
) -> None:
    _page_problems(driver, service.base)
    _sign_in(driver, service.base, service.tokens["clinician"], lang)
    _shot(driver, f"upload-{lang}")
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == lang
    assert driver.find_element(By.ID, "upload-heading").text == HEADINGS[lang]
    assert driver.find_element(By.ID, "sign-out").text == SIGN_OUT[lang]
    assert _page_problems(driver, service.base) == ([], [])


def test_a_form_post_without_its_csrf_secret_is_refused(
    driver: WebDriver,
    service: Service,  # noqa: F811
    case: Case,  # noqa: F811
) -> None:
    _sign_in(driver, service.base, service.tokens["clinician"])
    before = sum(1 for _ in service.app.state.audit_log.iter_all())
    driver.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    _tab_to(driver, "file").send_keys(str(case.dicom))
    _tab_to(driver, "submit").send_keys(Keys.ENTER)
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "error")))
    _shot(driver, "csrf-refused-en")
    assert "The form has expired or was not sent from this page" in driver.find_element(By.ID, "error").text
    assert sum(1 for _ in service.app.state.audit_log.iter_all()) == before
    severe, outside = _page_problems(driver, service.base)
    assert outside == []
    # The refused post is answered 403, which Chromium reports as the one console error of this test.
    assert [m.split(" - ", 1)[1] for m in severe] == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
