import uuid
from datetime import datetime, timedelta, timezone

import pytest

from tenants.models import UsageRecord
from tenants.services import usage_record
from tests.factories import TenantFactory, bearer, issue_key

pytestmark = pytest.mark.django_db


def _record(tenant, when, **fields):
    values = {"voice_id": "default", "characters": 10, "audio_seconds": 1.5, "status": "success"} | fields
    row = usage_record(request_id=uuid.uuid4(), tenant_id=tenant.pk, api_key_id=None, **values)
    UsageRecord.objects.filter(pk=row.pk).update(created_at=when)


def test_stats_aggregate_the_tenants_rows_by_day_and_by_voice(api_client):
    tenant = TenantFactory()
    day1 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
    day2 = day1 + timedelta(days=1)
    _record(tenant, day1, time_to_first_audio_ms=10.0)
    _record(tenant, day1, voice_id="fr_female", characters=4, audio_seconds=0.5, time_to_first_audio_ms=30.0,
            cached=True)  # a phrase-cache hit
    _record(tenant, day2, status="error", error_code="engine_unavailable", characters=7, audio_seconds=0)
    _record(tenant, day2, status="client_disconnected", characters=3, audio_seconds=0.25)
    _record(TenantFactory(), day1, characters=999)  # someone else's
    _record(tenant, day2 + timedelta(days=5))  # outside the period

    response = api_client.get("/v1/tenant/stats", {"start": "2026-03-01", "end": "2026-03-02"}, **bearer(issue_key(tenant)))
    body = response.json()
    assert response.status_code == 200 and body["tenant_id"] == tenant.slug
    assert body["totals"] == {
        "requests": 4, "characters": 24, "audio_seconds": 2.25, "errors": 1, "client_disconnects": 1,
        "cached": 1, "cached_characters": 4, "time_to_first_audio_ms": {"avg": 20.0, "max": 30.0},
    }
    assert body["errors_by_code"] == {"engine_unavailable": 1}
    assert [(d["date"], d["requests"], d["characters"]) for d in body["by_day"]] == [
        ("2026-03-01", 2, 14),
        ("2026-03-02", 2, 10),
    ]
    assert {v["voice_id"]: v["requests"] for v in body["by_voice"]} == {"default": 3, "fr_female": 1}


def test_stats_default_to_the_last_30_days(api_client):
    tenant = TenantFactory(monthly_character_quota=1000)
    _record(tenant, datetime.now(timezone.utc) - timedelta(days=2))
    _record(tenant, datetime.now(timezone.utc) - timedelta(days=40))
    body = api_client.get("/v1/tenant/stats", **bearer(issue_key(tenant))).json()
    assert body["totals"]["requests"] == 1
    assert body["quota"]["monthly_characters"] == 1000
    assert body["limits"]["requests_per_minute"] == tenant.requests_per_minute


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"start": "yesterday"}, "start="),
        ({"start": "2026-13-45"}, "start="),  # well-formed, impossible: was a 500 (ValueError)
        ({"start": "2026-02-30", "end": "2026-03-01"}, "start="),
        ({"end": "2026-03-01T25:00:00"}, "end="),
        ({"start": "9999-12-31", "end": "9999-12-31"}, "end="),  # the day after is no date: was a 500 (OverflowError)
        ({"end": "0001-01-01", "days": "30"}, "end="),  # 30 days before the first date: OverflowError
        ({"start": "0001-01-01T00:00:00+05:00"}, "start="),  # before year 1 in UTC
        ({"days": "0"}, "days="),
        ({"days": "abc"}, "days="),
        ({"days": "²"}, "days="),  # str.isdigit() says yes, int() says no
        ({"days": "9" * 5000}, "days="),  # past int()'s digit limit
        ({"start": "2026-03-05", "end": "2026-03-01"}, "start must be before end"),
        ({"start": "2020-01-01", "end": "2026-01-01"}, "366 days"),
    ],
)
def test_bad_periods_are_400_naming_the_parameter(api_client, params, named):
    response = api_client.get("/v1/tenant/stats", params, **bearer(issue_key()))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and named in error["message"]


def test_usage_record_is_idempotent_on_request_id():
    tenant = TenantFactory()
    request_id = uuid.uuid4()
    first = usage_record(request_id=request_id, tenant_id=tenant.pk, api_key_id=None, characters=5, status="success")
    again = usage_record(request_id=request_id, tenant_id=tenant.pk, api_key_id=None, characters=5, status="success")
    assert first.pk == again.pk and UsageRecord.objects.count() == 1
