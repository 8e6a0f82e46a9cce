import pytest

from tests.factories import TenantFactory, bearer, issue_key

pytestmark = pytest.mark.django_db


def test_requests_past_the_minute_limit_get_429_with_retry_after(api_client):
    key = issue_key(TenantFactory(requests_per_minute=3))
    statuses = [api_client.get("/v1/voices", **bearer(key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = api_client.get("/v1/voices", **bearer(key))
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_hour_limit_applies_too(api_client):
    key = issue_key(TenantFactory(requests_per_minute=100, requests_per_hour=2))
    assert [api_client.get("/v1/voices", **bearer(key)).status_code for _ in range(3)] == [200, 200, 429]
    assert 1 <= int(api_client.get("/v1/voices", **bearer(key)).headers["Retry-After"]) <= 3600


def test_limits_are_per_tenant_not_per_key(api_client):
    tenant = TenantFactory(requests_per_minute=2)
    first, second = issue_key(tenant), issue_key(tenant)
    assert api_client.get("/v1/voices", **bearer(first)).status_code == 200
    assert api_client.get("/v1/voices", **bearer(second)).status_code == 200
    assert api_client.get("/v1/voices", **bearer(first)).status_code == 429


def test_one_tenant_hitting_its_limit_does_not_limit_another(api_client):
    busy = issue_key(TenantFactory(requests_per_minute=1))
    quiet = issue_key(TenantFactory(requests_per_minute=1))
    api_client.get("/v1/voices", **bearer(busy))
    assert api_client.get("/v1/voices", **bearer(busy)).status_code == 429
    assert api_client.get("/v1/voices", **bearer(quiet)).status_code == 200


def test_unauthenticated_requests_do_not_spend_the_budget(api_client):
    tenant = TenantFactory(requests_per_minute=1)
    key = issue_key(tenant)
    for _ in range(3):
        assert api_client.get("/v1/voices", HTTP_AUTHORIZATION="Bearer sk_test_" + "x" * 44).status_code == 401
    assert api_client.get("/v1/voices", **bearer(key)).status_code == 200
