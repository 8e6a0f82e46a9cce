"""The usage log: the current tenant's requests only, filtered by date, voice, key and status, paginated with the
filters kept; its CSV export holds exactly the filtered rows of the current tenant."""
import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.models import UsageRecord
from tenants.services import api_key_issue

pytestmark = pytest.mark.django_db


def usage(tenant, *, days_ago=0, **fields):
    values = {"voice_id": "en_us_amy", "characters": 10, "audio_seconds": 1.0, "status": "success", **fields}
    return UsageRecord.objects.create(tenant=tenant, created_at=timezone.now() - timedelta(days=days_ago), **values)


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def log(portal_tenant, other_tenant):
    """Rows of two keys, two voices, three statuses over ten days; and another tenant's."""
    ivr = api_key_issue(tenant=portal_tenant, name="IVR", kind="prod", scopes=["synthesize"]).api_key
    web = api_key_issue(tenant=portal_tenant, name="Web", kind="test", scopes=["synthesize"]).api_key
    globex = api_key_issue(tenant=other_tenant, name="Globex key", kind="prod", scopes=["synthesize"]).api_key
    rows = {
        "old": usage(portal_tenant, days_ago=10, api_key=ivr),
        "ivr_ok": usage(portal_tenant, days_ago=1, api_key=ivr, time_to_first_audio_ms=180.0),
        "ivr_error": usage(portal_tenant, api_key=ivr, status="error", error_code="engine_failed"),
        "web_bob": usage(portal_tenant, api_key=web, voice_id="en_gb_bob", cached=True),
        "web_gone": usage(portal_tenant, api_key=web, status="client_disconnected"),
        "globex": usage(other_tenant, api_key=globex, voice_id="globex_secret_voice"),
    }
    return {"ivr": ivr, "web": web, "globex": globex, "rows": rows}


def ids(*rows) -> set[str]:
    return {str(row.request_id) for row in rows}


def test_the_log_lists_the_tenants_requests_only(member_client, log):
    page = member_client.get("/portal/usage/").content.decode()
    for row in log["rows"].values():
        assert (str(row.request_id) in page) == (row.tenant_id == log["ivr"].tenant_id)
    assert "globex_secret_voice" not in page and "Globex key" not in page
    assert "5 requests" in page and "engine_failed" in page


def test_the_export_holds_every_row_of_the_tenant_and_no_other(member_client, log):
    rows = csv_rows(member_client.get("/portal/usage/export.csv"))
    assert {row["request_id"] for row in rows} == ids(*[r for name, r in log["rows"].items() if name != "globex"])
    bob = next(row for row in rows if row["voice_id"] == "en_gb_bob")
    assert bob["api_key"] == "Web" and bob["api_key_last_four"] == log["web"].last_four and bob["cached"] == "true"
    assert list(rows[0]) == ["created_at", "request_id", "api_key", "api_key_last_four", "voice_id", "engine",
                             "language", "characters", "audio_seconds", "time_to_first_audio_ms", "total_ms",
                             "status", "error_code", "cached", "attempts"]


@pytest.mark.parametrize("query, expected", [
    ({"status": "error"}, ["ivr_error"]),
    ({"voice": "en_gb_bob"}, ["web_bob"]),
    ({"api_key": "web"}, ["web_bob", "web_gone"]),
    ({"api_key": "ivr", "status": "success"}, ["old", "ivr_ok"]),
    ({"date_from": 1}, ["ivr_error", "web_bob", "web_gone", "ivr_ok"]),
    ({"date_to": 1}, ["old", "ivr_ok"]),
    ({"date_from": 1, "date_to": 1}, ["ivr_ok"]),
])
def test_filters_narrow_the_page_and_the_export_alike(member_client, log, query, expected):
    """Dates are given in days ago, keys by name."""
    today = timezone.now().date()
    params = {}
    for name, value in query.items():
        if name == "api_key":
            value = log[value].pk
        elif name.startswith("date_"):  # days ago
            value = (today - timedelta(days=value)).isoformat()
        params[name] = value
    wanted = ids(*[log["rows"][name] for name in expected])
    page = member_client.get("/portal/usage/", params).content.decode()
    listed = {str(row.request_id) for row in log["rows"].values() if str(row.request_id) in page}
    assert listed == wanted
    exported = {row["request_id"] for row in csv_rows(member_client.get("/portal/usage/export.csv", params))}
    assert exported == wanted


def test_another_tenants_key_or_voice_is_no_way_to_its_rows(member_client, log):
    for params in ({"api_key": log["globex"].pk}, {"voice": "globex_secret_voice"}):
        response = member_client.get("/portal/usage/", params)
        assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
        assert "globex_secret_voice" not in response.content.decode().split("<table")[1]
        export = member_client.get("/portal/usage/export.csv", params)
        assert export.status_code == 400
        assert len(list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))) == 1  # header only


def test_the_log_is_paginated_and_pages_keep_the_filters(member_client, portal_tenant):
    for number in range(60):
        usage(portal_tenant, voice_id="en_gb_bob", characters=number)
    for number in range(10):
        usage(portal_tenant, voice_id="en_us_amy")
    first = member_client.get("/portal/usage/", {"voice": "en_gb_bob"}).content.decode()
    assert "60 requests match these filters" in first and "Page 1 of 2" in first
    assert 'href="?voice=en_gb_bob&amp;page=2"' in first
    second = member_client.get("/portal/usage/", {"voice": "en_gb_bob", "page": 2}).content.decode()
    table = second.split("<tbody>")[1].split("</tbody>")[0]
    assert "Page 2 of 2" in second and table.count("<tr>") == 10 and "en_us_amy" not in table


def test_spreadsheet_formulas_in_a_key_name_are_quoted(owner_client, portal_tenant):
    key = api_key_issue(tenant=portal_tenant, name="=HYPERLINK(\"http://evil\")", kind="test",
                        scopes=["synthesize"]).api_key
    usage(portal_tenant, api_key=key)
    (row,) = csv_rows(owner_client.get("/portal/usage/export.csv"))
    assert row["api_key"].startswith("'=")


def test_the_log_and_export_need_a_login(client, log):
    assert client.get("/portal/usage/").status_code == 302
    assert client.get("/portal/usage/export.csv").status_code == 302
