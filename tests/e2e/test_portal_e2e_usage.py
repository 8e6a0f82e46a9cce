"""End to end in headless Chromium against a live daphne (`make run`'s setup): the demo owner logs in, sees the
dashboard's charts drawn from the requests the API just served, opens the usage log and exports it as CSV, which
holds exactly those requests. Screenshots of both pages: tests/e2e/screenshots.py."""
import csv
import json
import sqlite3
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.screenshots import screenshot
from tests.live import start_server

CHROMIUM = "/usr/bin/chromium"
DEMO_PASSWORD = "demo-password-for-e2e"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("portal-e2e"), DEMO_PASSWORD=DEMO_PASSWORD)


def synthesize(port: int, key: str, request_id: str, text: str) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/synthesize", method="POST",
        data=json.dumps({"text": text, "voice_id": "default"}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", "X-Request-ID": request_id},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200 and response.read()


def set_demo_quota(database: Path, characters: int) -> None:
    """What an operator sets in the admin, written straight into the live server's SQLite database."""
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE tenants_tenant SET monthly_character_quota = ? WHERE slug = 'demo'", (characters,))


def quota_alerts_recorded(database: Path) -> list[int]:
    with sqlite3.connect(database) as connection:
        return [percent for (percent,) in connection.execute("SELECT percent FROM tenants_quotaalert ORDER BY percent")]


def test_dashboard_charts_and_usage_csv_in_a_browser(server):
    port, base = server["port"], f"http://127.0.0.1:{server['port']}"
    texts = [f"Hello number {number} from the browser test." for number in range(3)]
    # A quota the requests take past 80% (not 100%): the dashboard warns, and the owner was emailed once.
    set_demo_quota(server["db"], round(sum(map(len, texts)) / 0.85))
    request_ids = {str(uuid.uuid4()) for _ in texts}
    for text, request_id in zip(texts, sorted(request_ids)):
        synthesize(port, server["key"], request_id, text)
    assert quota_alerts_recorded(server["db"]) == [80]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
            page = context.new_page()
            page.goto(f"{base}/portal/")
            page.get_by_label("Email").fill("demo@example.com")
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Log in").click()

            page.wait_for_url(f"{base}/portal/")
            page.wait_for_selector("html[data-charts-ready=true]")
            drawn = page.evaluate("""() => [...document.querySelectorAll('canvas')].map(
                canvas => ({id: canvas.id, drawn: !!Chart.getChart(canvas), width: canvas.width}))""")
            assert {chart["id"] for chart in drawn} >= {"chart-requests", "chart-volume", "chart-ttfa", "chart-voices",
                                                      "chart-keys"}
            assert all(chart["drawn"] and chart["width"] > 0 for chart in drawn)
            requests_today = page.evaluate("() => Chart.getChart('chart-requests').data.datasets[0].data.at(-1)")
            assert requests_today == 3
            warning = page.locator("#quota [role=alert]")
            assert warning.is_visible() and "of the monthly quota is used" in warning.inner_text()
            screenshot(page, "portal-dashboard")

            page.get_by_role("navigation", name="Portal").get_by_role("link", name="Usage").click()
            page.wait_for_url(f"{base}/portal/usage/")
            page.get_by_label("Status").select_option("success")
            page.get_by_role("button", name="Filter").click()
            page.wait_for_url("**/portal/usage/?*status=success*")
            assert page.get_by_text("3 requests match these filters").is_visible()
            screenshot(page, "portal-usage")

            with page.expect_download() as download_info:
                page.get_by_role("link", name="Export CSV").click()
            download = download_info.value
            assert download.suggested_filename.startswith("usage-demo") and download.suggested_filename.endswith(".csv")
            with open(download.path(), newline="") as exported:
                rows = list(csv.DictReader(exported))
            assert {row["request_id"] for row in rows} == request_ids
            assert {row["status"] for row in rows} == {"success"} and all(int(row["characters"]) > 0 for row in rows)
        finally:
            browser.close()


def test_every_page_fits_a_phone_screen(server):
    """At a phone's width (390 px) no portal page scrolls sideways: tables scroll in their own box, the navigation
    and forms wrap. Wide content that pushed the page out would hide the nav and the forms' buttons."""
    base = f"http://127.0.0.1:{server['port']}"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
            page.goto(f"{base}/portal/")
            page.get_by_label("Email").fill("demo@example.com")
            page.get_by_label("Password").fill(DEMO_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{base}/portal/")
            for path in ("/portal/", "/portal/keys/", "/portal/voices/", "/portal/playground/", "/portal/usage/",
                         "/portal/members/", "/portal/audit/"):
                page.goto(f"{base}{path}")
                overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{path} is {overflow} px wider than the screen"
        finally:
            browser.close()
