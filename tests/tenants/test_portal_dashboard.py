"""The dashboard: this month's quota with its warning and error looks, and the period's usage per day, by voice
and by key, as the json_script payload the charts draw (and tables under them); another tenant's rows never."""
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from django.utils import timezone as django_timezone

from tenants.models import UsageRecord
from tenants.services import api_key_issue

pytestmark = pytest.mark.django_db


def usage(tenant, *, days_ago=0, api_key=None, **fields):
    values = {"voice_id": "en_us_amy", "characters": 100, "audio_seconds": 6.0, "status": "success",
              "time_to_first_audio_ms": 200.0, **fields}
    return UsageRecord.objects.create(tenant=tenant, api_key=api_key,
                                      created_at=django_timezone.now() - timedelta(days=days_ago), **values)


def payload(response) -> dict:
    page = response.content.decode()
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the dashboard's chart data is missing"
    return json.loads(match.group(1))


def test_the_charts_data_counts_the_period_per_day_by_voice_and_by_key(owner_client, portal_tenant, other_tenant):
    ivr = api_key_issue(tenant=portal_tenant, name="IVR", kind="prod", scopes=["synthesize"]).api_key
    web = api_key_issue(tenant=portal_tenant, name="Web", kind="test", scopes=["synthesize"]).api_key
    usage(portal_tenant, api_key=ivr, characters=100, time_to_first_audio_ms=100.0)
    usage(portal_tenant, api_key=ivr, characters=50, cached=True, time_to_first_audio_ms=300.0)
    usage(portal_tenant, api_key=web, voice_id="en_gb_bob", status="error", error_code="engine_failed",
          characters=20, audio_seconds=0.0, time_to_first_audio_ms=None)
    usage(portal_tenant, api_key=web, days_ago=3, characters=40, audio_seconds=120.0)
    usage(portal_tenant, days_ago=45, characters=9999)  # before the period
    usage(other_tenant, voice_id="globex_secret_voice", characters=777)

    data = payload(owner_client.get("/portal/"))

    assert data["days"] == 30 and len(data["by_day"]) == 30
    assert data["totals"] == {"requests": 4, "characters": 210, "audio_minutes": 2.2, "errors": 1, "cached": 1,
                              "ttfa_avg_ms": 200.0}
    today, three_days_ago = data["by_day"][-1], data["by_day"][-4]
    assert today["date"] == django_timezone.now().astimezone(timezone.utc).date().isoformat()
    assert (today["requests"], today["characters"], today["errors"], today["cached"]) == (3, 170, 1, 1)
    assert today["ttfa_avg_ms"] == 200.0  # the error had no first audio: not averaged in
    assert three_days_ago["requests"] == 1 and three_days_ago["audio_minutes"] == 2.0
    assert data["by_day"][0]["requests"] == 0 and data["by_day"][0]["ttfa_avg_ms"] is None
    assert [(v["voice_id"], v["requests"], v["errors"]) for v in data["by_voice"]] == [("en_us_amy", 3, 0),
                                                                                     ("en_gb_bob", 1, 1)]
    by_key = {row["api_key"]: row for row in data["by_key"]}
    assert set(by_key) == {f"IVR …{ivr.last_four}", f"Web …{web.last_four}"}
    assert by_key[f"IVR …{ivr.last_four}"]["cached"] == 1 and by_key[f"Web …{web.last_four}"]["characters"] == 60
    assert "globex_secret_voice" not in owner_client.get("/portal/").content.decode()


def test_the_period_selector_widens_the_window(member_client, portal_tenant):
    usage(portal_tenant, days_ago=45)
    assert payload(member_client.get("/portal/"))["totals"]["requests"] == 0
    wide = payload(member_client.get("/portal/?days=90"))
    assert wide["days"] == 90 and wide["totals"]["requests"] == 1
    assert payload(member_client.get("/portal/?days=9999"))["days"] == 30  # not a period offered: the default


def test_the_page_loads_the_vendored_chart_library_not_a_cdn(owner_client):
    page = owner_client.get("/portal/").content.decode()
    assert '/static/portal/vendor/chart.umd.min.js' in page and "cdn" not in page.lower()
    for chart in ("chart-requests", "chart-volume", "chart-ttfa", "chart-voices", "chart-keys"):
        assert f'<canvas id="{chart}"' in page


def quota_section(response) -> str:
    return re.search(r'<section class="card quota.*?</section>', response.content.decode(), re.S).group(0)


@pytest.mark.parametrize("used, look, banner", [
    (500, "quota-ok", None),
    (850, "quota-warning", "85.0% of the monthly quota is used"),
    (1000, "quota-exhausted", "The monthly quota is used up"),
])
def test_the_quota_used_and_left_with_a_warning_then_an_error(owner_client, portal_tenant, used, look, banner):
    portal_tenant.monthly_character_quota = 1000
    portal_tenant.save()
    usage(portal_tenant, characters=used)
    usage(portal_tenant, characters=5000, status="error")  # failed requests are not billed
    section = quota_section(owner_client.get("/portal/"))
    assert look in section
    assert re.search(rf">{used:,}</strong> of 1,000 characters used", section)
    assert re.search(rf">{1000 - used:,}</strong> left", section)
    if banner:
        assert 'role="alert"' in section and banner in section
    else:
        assert 'role="alert"' not in section


def test_without_a_quota_the_usage_is_shown_without_a_meter(owner_client, portal_tenant):
    usage(portal_tenant, characters=1234)
    section = quota_section(owner_client.get("/portal/"))
    assert "1,234</strong> characters used this month; no monthly quota" in section and "meter" not in section


def test_the_dashboard_needs_a_login_and_a_membership(client, django_user_model):
    assert client.get("/portal/").status_code == 302
    outsider = django_user_model.objects.create_user(username="x@example.com", email="x@example.com", password="p")
    client.force_login(outsider, backend="allauth.account.auth_backends.AuthenticationBackend")
    assert client.get("/portal/").status_code == 403


def test_the_warning_starts_at_the_lowest_alert_threshold(owner_client, portal_tenant, settings):
    settings.TTS_QUOTA_ALERT_PERCENTS = [50, 90, 100]
    portal_tenant.monthly_character_quota = 1000
    portal_tenant.save()
    usage(portal_tenant, characters=499)
    assert "quota-ok" in quota_section(owner_client.get("/portal/"))
    usage(portal_tenant, characters=1)
    assert "50.0% of the monthly quota is used" in quota_section(owner_client.get("/portal/"))
