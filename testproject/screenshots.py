"""Screenshots of the admin's auth dashboard and audit list, for docs/admin.md.

    .venv/bin/python testproject/screenshots.py [--out docs/images] [--width 1400]

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``), as the browser tests do. It touches nothing of yours: a fresh SQLite
database in a temporary directory, migrated and filled with the sample activity of
testproject/dashboard_sample.py; the site served on a free loopback port in a thread; a
headless Chromium that logs into the admin and saves, as PNG files in ``--out``:

* ``dashboard.png``: the dashboard, last 7 days, the admin's light theme;
* ``dashboard-dark.png``: the same in the admin's dark theme;
* ``audit-list.png``: the audit list, filtered to failed logins.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_PASSWORD = "screenshots passphrase"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="where PNGs go")
    parser.add_argument("--width", type=int, default=1400, help="window width (1400)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="authfw-screenshots-") as scratch:
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch}/site.sqlite3"
        os.environ.pop("REDIS_URL", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "testproject.settings"
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.core.management import call_command
        from django.test.utils import override_settings

        # Cheap hashing: the sample logs in a few dozen times.
        override_settings(
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
        ).enable()
        call_command("migrate", verbosity=0)
        from django.contrib.auth import get_user_model

        from testproject.dashboard_sample import populate

        populate()
        get_user_model()._default_manager.create_superuser(
            "admin", "admin@example.invalid", ADMIN_PASSWORD
        )
        url = serve()
        shoot(url, out, args.width)
    for name in ("dashboard.png", "dashboard-dark.png", "audit-list.png"):
        print(out / name)


def serve() -> str:
    """Serve the site (static files included) on a free loopback port; return its URL."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer
    from django.core.wsgi import get_wsgi_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = WSGIServer(("127.0.0.1", 0), Quiet)
    server.set_app(StaticFilesHandler(get_wsgi_application()))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"


def shoot(url: str, out: Path, width: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        driver.get(f"{url}/admin/login/")
        driver.find_element(By.NAME, "username").send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys(ADMIN_PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        driver.find_element(By.ID, "site-name")

        def full_page(path: str, name: str) -> None:
            driver.get(f"{url}{path}")
            # The viewport as tall as the page, so that one screenshot holds all of it.
            height = driver.execute_script("return document.documentElement.scrollHeight")
            metrics = {"width": width, "height": int(height), "deviceScaleFactor": 1}
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride", {**metrics, "mobile": False}
            )
            driver.save_screenshot(str(out / name))
            driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        dashboard = "/admin/django_authfw/auditlog/dashboard/?window=7d"
        full_page(dashboard, "dashboard.png")
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
        )
        full_page(dashboard, "dashboard-dark.png")
        driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "light"}]},
        )
        driver.get(f"{url}/admin/django_authfw/auditlog/?action=login&outcome=failure")
        driver.save_screenshot(str(out / "audit-list.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
