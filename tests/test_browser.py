"""A real headless Chromium (Debian's chromium and chromium-driver) driven by Selenium against
pytest-django's live server: the admin's audit log, and the demo page's walk-through.
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
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, element_id), text))
    return str(driver.find_element(By.ID, element_id).text)


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
