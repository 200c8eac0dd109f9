"""A real headless Chromium (Debian's chromium and chromium-driver) driven by Selenium against
pytest-django's live server: the admin's audit log, its dashboard, search and actions, and the
demo page's walk-through.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from django_authfw.models import AuditLog

from .http_support import fast_hashing, user_factory

__all__ = ["fast_hashing", "user_factory"]

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 15


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile; ``.ci/run`` installs both binaries."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        assert Path(binary).exists(), (
            f"{binary} is missing: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_SECONDS)


def wait_for_text(driver: WebDriver, element_id: str, text: str) -> str:
    """The element's text once it holds ``text``. Read inside the wait, in one step: the demo
    page re-renders its status lines, so an element found after the wait can already be gone
    (a stale element reference, seen once in CI under load)."""

    def shown(driver: WebDriver) -> str | bool:
        try:
            current = str(driver.find_element(By.ID, element_id).text)
        except StaleElementReferenceException:
            return False
        return current if text in current else False

    return str(wait(driver).until(shown))


def post_json(url: str, data: dict[str, str]) -> int:
    request = urllib.request.Request(
        url, json.dumps(data).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_sees_the_failed_login_in_the_audit_log(
    browser: WebDriver, live_server: Any, user_factory: Any
) -> None:
    user_factory(
        username="auditor", password="auditor passphrase", is_staff=True, is_superuser=True
    )
    user_factory(username="regular")
    intruder = f"intruder-{uuid.uuid4().hex[:6]}"
    # The failed login this test looks for, over HTTP like any client.
    assert (
        post_json(f"{live_server.url}/auth/token/", {"username": intruder, "password": "x"}) == 400
    )
    # And a successful one, which the failure filter must hide.
    from .factories import PASSWORD

    assert (
        post_json(f"{live_server.url}/auth/token/", {"username": "regular", "password": PASSWORD})
        == 200
    )

    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("auditor")
    browser.find_element(By.NAME, "password").send_keys("auditor passphrase")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "site-name")))

    browser.find_element(By.LINK_TEXT, "Audit events").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "result_list")))
    rows = browser.find_element(By.ID, "result_list").text
    assert f"{intruder} (attempted)" in rows
    assert "regular" in rows

    filters = browser.find_element(By.ID, "changelist-filter")
    filters.find_element(By.LINK_TEXT, "Failure").click()
    wait(browser).until(ec.url_contains("outcome=failure"))
    table = browser.find_element(By.ID, "result_list")
    rows = table.text
    assert f"{intruder} (attempted)" in rows
    assert "127.0.0.1" in rows
    assert "regular" not in rows  # the success is filtered out
    assert "success" not in rows
    # Read-only: no add button, no delete action.
    assert not browser.find_elements(By.CSS_SELECTOR, ".object-tools a.addlink")
    assert "delete_selected" not in browser.page_source


def test_demo_page_walkthrough(browser: WebDriver, live_server: Any, fast_hashing: None) -> None:
    browser.get(f"{live_server.url}/")
    assert browser.title == "django_authfw demo"
    username = f"demo-{uuid.uuid4().hex[:6]}"
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys("a demo passphrase")

    browser.find_element(By.ID, "register").click()
    assert "201" in wait_for_text(browser, "status-register", "201")

    browser.find_element(By.ID, "login").click()
    wait_for_text(browser, "status-login", "200")
    login_body = browser.find_element(By.ID, "body-login").text
    assert "Bearer" in login_body
    assert "expires_in" in login_body
    access_shown = browser.find_element(By.ID, "access-token").text
    assert access_shown.startswith("afw_at_")
    assert "(50 characters)" in access_shown

    browser.find_element(By.ID, "call").click()
    wait_for_text(browser, "status-call", "200")
    assert username in browser.find_element(By.ID, "body-call").text

    browser.find_element(By.ID, "call-anonymous").click()
    wait_for_text(browser, "status-call", "401")
    assert "WWW-Authenticate: Bearer" in browser.find_element(By.ID, "result-call").text

    # Replaying before any refresh: the page says what to do, nothing is sent.
    browser.find_element(By.ID, "replay").click()
    assert "refresh (step 4) first" in wait_for_text(browser, "status-replay", "first")

    browser.find_element(By.ID, "refresh").click()
    assert "/auth/token/" in wait_for_text(browser, "status-refresh", "200")
    assert browser.find_element(By.ID, "access-token").text != access_shown

    browser.find_element(By.ID, "call").click()
    wait_for_text(browser, "status-call", "200")

    # The refresh token from before the refresh, sent again: reuse, the whole login revoked.
    browser.find_element(By.ID, "replay").click()
    wait_for_text(browser, "status-replay", "400")
    assert "invalid_grant" in browser.find_element(By.ID, "body-replay").text
    wait_for_text(browser, "status-replay-check", "401")
    assert "whole login was revoked" in browser.find_element(By.ID, "replay-verdict").text
    assert AuditLog.objects.filter(action="refresh_reuse").count() == 1
    browser.find_element(By.ID, "call").click()
    wait_for_text(browser, "status-call", "401")

    # A new login, then log out: the refresh step then asks for a login, not a raw 400.
    browser.find_element(By.ID, "login").click()
    wait_for_text(browser, "status-login", "200")
    browser.find_element(By.ID, "logout").click()
    wait_for_text(browser, "status-logout", "200")
    assert browser.find_element(By.ID, "refresh-token").text == "none"

    browser.find_element(By.ID, "call").click()
    wait_for_text(browser, "status-call", "401")
    assert 'error="invalid_token"' in browser.find_element(By.ID, "result-call").text

    browser.find_element(By.ID, "refresh").click()
    refused = wait_for_text(browser, "status-refresh", "log in first")
    assert refused == "There is no refresh token: log in first (step 2)."

    # The page shows masked tokens only; a raw one never lands in the document.
    assert not re.search(r"afw_(at|rt)_[A-Za-z0-9_-]{43}", browser.page_source)
    admin = browser.find_element(By.ID, "admin-link")
    assert admin.get_attribute("href") == f"{live_server.url}/admin/"


# The admin's dashboard, search and actions -----------------------------------------------------

DASHBOARD = "/admin/django_authfw/auditlog/dashboard/"


def admin_login(browser: WebDriver, live_server: Any, user_factory: Any) -> None:
    """A fresh superuser, logged in through the admin's login form."""
    name = f"staff-{uuid.uuid4().hex[:6]}"
    user_factory(username=name, password="staff passphrase", is_staff=True, is_superuser=True)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys("staff passphrase")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "site-name")))


def panel(browser: WebDriver, name: str) -> Any:
    return browser.find_element(By.ID, f"authfw-{name}")


def rows(element: Any) -> list[str]:
    return [str(row.text) for row in element.find_elements(By.CSS_SELECTOR, "tbody tr")]


@pytest.fixture
def sample(transactional_db: None, fast_hashing: None) -> Any:
    from django.core.cache import cache

    from testproject.dashboard_sample import populate

    cache.clear()  # the dashboard's cached storage statistics of an earlier test
    return populate()


def test_dashboard_shows_data_in_every_panel(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    admin_login(browser, live_server, user_factory)
    browser.get(f"{live_server.url}/admin/django_authfw/")
    browser.find_element(By.LINK_TEXT, "Auth dashboard").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "authfw-events")))
    browser.find_element(By.LINK_TEXT, "Last 7 days").click()
    wait(browser).until(ec.url_contains("window=7d"))
    for total in ("events", "failures", "issued", "revocations", "reuse", "lockouts"):
        shown = browser.find_element(By.ID, f"authfw-total-{total}").text
        assert int(shown) > 0, total
    events = panel(browser, "events")
    assert len(events.find_elements(By.CSS_SELECTOR, "svg[role=img] rect.authfw-success")) > 100
    assert events.find_elements(By.CSS_SELECTOR, "svg[role=img] rect.authfw-failure")
    assert "admin" in rows(panel(browser, "usernames"))[1]  # behind the most failed user
    assert sample.attackers[0] in rows(panel(browser, "addresses"))[0]
    assert sample.locked_username in panel(browser, "lockouts").text
    assert len(rows(panel(browser, "reuse"))) >= 2
    assert any(row.startswith("Login ") for row in rows(panel(browser, "actions")))
    storages = {row.split()[0]: row for row in rows(panel(browser, "storages"))}
    assert set(storages) == {"default", "cache"}
    assert storages["cache"].split()[-2:] != ["0", "0"]
    tokens = panel(browser, "tokens")
    assert len(tokens.find_elements(By.CSS_SELECTOR, "polyline")) == 2
    # Each window has its own numbers.
    browser.find_element(By.LINK_TEXT, "Last hour").click()
    wait(browser).until(ec.url_contains("window=1h"))
    assert int(browser.find_element(By.ID, "authfw-total-events").text) > 0
    current = browser.find_element(By.CSS_SELECTOR, ".authfw-windows [aria-current=page]")
    assert current.text == "Last hour"


def test_dashboard_links_filter_the_audit_list_and_lift_lifts(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    from django_authfw import AuthFramework
    from django_authfw.models import AuditLog

    admin_login(browser, live_server, user_factory)
    browser.get(f"{live_server.url}{DASHBOARD}?window=7d")
    panel(browser, "addresses").find_element(By.LINK_TEXT, sample.attackers[0]).click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "result_list")))
    listed = rows(browser.find_element(By.ID, "result_list"))
    assert listed
    assert all(sample.attackers[0] in row and "Failure" in row for row in listed)
    assert all("Login" in row for row in listed)
    # The sidebar says what the list is filtered by.
    assert sample.attackers[0] in browser.find_element(By.ID, "changelist-filter").text

    browser.get(f"{live_server.url}{DASHBOARD}?window=24h")
    lockouts = panel(browser, "lockouts")
    assert sample.locked_username in lockouts.text
    assert AuthFramework().lockout_remaining(sample.locked_username, None) > 0
    lockouts.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    assert (
        f"Lifted the lockout of {sample.locked_username}"
        in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    )
    assert "Nobody is locked out now." in panel(browser, "lockouts").text
    assert AuthFramework().lockout_remaining(sample.locked_username, None) == 0
    unlock = AuditLog.objects.get(action="unlock")
    assert unlock.metadata["via"] == "admin"
    assert unlock.resource == f"username:{sample.locked_username}"


def _rgb(css: str) -> tuple[float, ...]:
    numbers = [float(n) for n in re.findall(r"[\d.]+", css)[:3]]
    return tuple(numbers)


def _luminance(rgb: tuple[float, ...]) -> float:
    def channel(value: float) -> float:
        value /= 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (channel(v) for v in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(one: str, other: str) -> float:
    light, dark = sorted((_luminance(_rgb(one)), _luminance(_rgb(other))), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_dashboard_charts_are_readable_in_light_and_dark_themes(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    admin_login(browser, live_server, user_factory)
    seen = {}
    for theme in ("light", "dark"):
        browser.get(f"{live_server.url}/admin/")
        browser.execute_script(f"localStorage.setItem('theme', '{theme}')")
        browser.get(f"{live_server.url}{DASHBOARD}?window=7d")
        assert browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == theme
        colours = browser.execute_script(
            """
            const style = (selector, property) =>
                getComputedStyle(document.querySelector(selector))[property];
            return {
                background: style('#content', 'backgroundColor') === 'rgba(0, 0, 0, 0)'
                    ? style('body', 'backgroundColor') : style('#content', 'backgroundColor'),
                success: style('#authfw-events rect.authfw-success', 'fill'),
                failure: style('#authfw-events rect.authfw-failure', 'fill'),
                axis: style('#authfw-events svg text', 'fill'),
                issued: style('#authfw-tokens polyline.authfw-issued', 'stroke'),
                revoked: style('#authfw-tokens polyline.authfw-revoked', 'stroke'),
            };
            """
        )
        for part in ("success", "failure", "issued", "revoked"):
            # WCAG 2.1 non-text contrast: 3:1 against the page.
            assert contrast(colours[part], colours["background"]) >= 3, (theme, part, colours)
        assert contrast(colours["axis"], colours["background"]) >= 4.5, (theme, colours)
        seen[theme] = colours
    assert seen["light"]["background"] != seen["dark"]["background"]
    assert seen["light"]["success"] != seen["dark"]["success"]
    browser.execute_script("localStorage.removeItem('theme')")


def test_audit_search_finds_a_word_in_the_browser(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    from django.db import connection

    from django_authfw import AuthFramework
    from django_authfw.request_info import RequestInfo

    AuthFramework().audit(
        "device_check",
        False,
        request_info=RequestInfo("192.0.2.99"),
        metadata={"finding": "quarantined firmware"},
    )
    admin_login(browser, live_server, user_factory)
    browser.get(f"{live_server.url}/admin/django_authfw/auditlog/")
    box = browser.find_element(By.ID, "searchbar")
    if connection.vendor == "postgresql":
        box.send_keys("quarantined")
        box.submit()
        wait(browser).until(ec.url_contains("q=quarantined"))
        listed = rows(browser.find_element(By.ID, "result_list"))
        assert len(listed) == 1
        assert "Device check" in listed[0]
    browser.find_element(By.ID, "searchbar").clear()
    browser.find_element(By.ID, "searchbar").send_keys(sample.attackers[1])
    browser.find_element(By.ID, "searchbar").submit()
    wait(browser).until(ec.url_contains("q=203"))
    listed = rows(browser.find_element(By.ID, "result_list"))
    assert listed
    assert all(sample.attackers[1] in row for row in listed)


def run_action(browser: WebDriver, name: str, pick: int = 1) -> str:
    """Tick the first ``pick`` rows, run the action ``name``, return the message."""
    from selenium.webdriver.support.ui import Select

    boxes = browser.find_elements(By.CSS_SELECTOR, "#result_list input.action-select")
    for box in boxes[:pick]:
        box.click()
    Select(browser.find_element(By.CSS_SELECTOR, "select[name=action]")).select_by_value(name)
    browser.find_element(By.CSS_SELECTOR, "button[name=index], input[name=index]").click()
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".messagelist")))
    return str(browser.find_element(By.CSS_SELECTOR, ".messagelist").text)


def test_each_admin_action_in_the_browser(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    from django_authfw.models import AuditLog

    admin_login(browser, live_server, user_factory)
    browser.get(f"{live_server.url}/admin/django_authfw/token/?status=active")
    assert "Revoked 1 token(s)." in run_action(browser, "revoke_tokens")
    browser.get(f"{live_server.url}/admin/django_authfw/session/")
    assert "Ended 1 session(s)." in run_action(browser, "end_sessions")
    browser.get(f"{live_server.url}/admin/django_authfw/auditlog/?action=lockout")
    assert "Lifted the lockout of 1 username/IP pair(s)" in run_action(browser, "lift_lockout")
    for action_name in ("revoke", "session_end", "unlock"):
        event = AuditLog.objects.filter(action=action_name, metadata__via="admin").get()
        assert event.resource
        assert event.ip_address == "127.0.0.1"


def test_token_and_session_lists_fit_1400_pixels(
    browser: WebDriver, live_server: Any, user_factory: Any, sample: Any
) -> None:
    from django_authfw import AuthFramework

    from .factories import PASSWORD

    # A long username too: it must be cut, not push the list wider.
    long_name = "maximilian.von.longname-the-third@example.com"
    user_factory(username=long_name)
    AuthFramework().authenticate(long_name, PASSWORD)
    AuthFramework().create_session(long_name)
    admin_login(browser, live_server, user_factory)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        for model, headers in (
            ("token", ("Status", "Revoked at")),
            ("session", ("IP address", "User agent")),
            ("auditlog", ("IP address", "Resource")),
        ):
            browser.get(f"{live_server.url}/admin/django_authfw/{model}/")
            wait(browser).until(ec.presence_of_element_located((By.ID, "result_list")))
            assert browser.execute_script("return window.innerWidth") == 1400
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, (model, overflow)
            table = browser.execute_script(
                "const r = document.querySelector('#result_list').getBoundingClientRect();"
                "const c = document.querySelector('.results');"
                "return [r.right, c.getBoundingClientRect().right, c.scrollWidth - c.clientWidth]"
            )
            assert table[2] <= 0, (model, table)  # the results box does not scroll sideways
            headings = {
                th.text.strip().upper(): th
                for th in browser.find_elements(By.CSS_SELECTOR, "#result_list thead th")
            }
            for header in headers:
                assert header.upper() in headings, (model, list(headings))
                right = browser.execute_script(
                    "return arguments[0].getBoundingClientRect().right", headings[header.upper()]
                )
                assert right <= 1400, (model, header, right)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
