from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import selectors
from tenants.models import ApiKey
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.factories import TenantFactory, bearer, issue_key

pytestmark = pytest.mark.django_db


def _error(response):
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def test_valid_key_lists_voices(api_client, api_key):
    response = api_client.get("/v1/voices", **bearer(api_key))
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "authentication_required"),
        ("Basic dXNlcjpwYXNz", "malformed_authorization"),
        ("Bearer", "malformed_authorization"),
        ("Bearer not-a-key", "malformed_api_key"),
        ("Bearer sk_live_" + "a" * 44, "malformed_api_key"),
        ("Bearer sk_test_" + "a" * 44, "invalid_api_key"),
    ],
)
def test_missing_or_malformed_key_is_401(api_client, header, code):
    headers = {"HTTP_AUTHORIZATION": header} if header else {}
    response = api_client.get("/v1/voices", **headers)
    assert response.status_code == 401
    assert _error(response) == code
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_secret_for_a_real_lookup_id_is_401(api_client, api_key):
    forged = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")
    response = api_client.get("/v1/voices", **bearer(forged))
    assert response.status_code == 401 and _error(response) == "invalid_api_key"


def test_kind_prefix_is_part_of_the_key(api_client, api_key):
    assert api_key.startswith("sk_test_")
    response = api_client.get("/v1/voices", **bearer(api_key.replace("sk_test_", "sk_prod_", 1)))
    assert response.status_code == 401


def test_revoked_key_is_401(api_client, tenant):
    issued = api_key_issue(tenant=tenant, kind="prod", scopes=["voices"])
    api_key_revoke(api_key=issued.api_key)
    response = api_client.get("/v1/voices", **bearer(issued.plaintext))
    assert response.status_code == 401 and _error(response) == "api_key_revoked"


def test_expired_key_is_401(api_client, tenant):
    plaintext = issue_key(tenant, expires_at=timezone.now() - timedelta(seconds=1))
    response = api_client.get("/v1/voices", **bearer(plaintext))
    assert response.status_code == 401 and _error(response) == "api_key_expired"


def test_key_of_suspended_tenant_is_401(api_client, tenant, api_key):
    tenant_set_active(tenant=tenant, active=False)
    response = api_client.get("/v1/voices", **bearer(api_key))
    assert response.status_code == 401 and _error(response) == "tenant_suspended"


@pytest.mark.parametrize(
    "path, scope",
    [("/v1/voices", "voices"), ("/v1/voices/default", "voices")],
)
def test_missing_scope_is_403(api_client, tenant, path, scope):
    other_scopes = [s for s in ("synthesize", "voices", "upload", "admin") if s != scope]
    plaintext = issue_key(tenant, scopes=other_scopes)
    response = api_client.get(path, **bearer(plaintext))
    assert response.status_code == 403 and _error(response) == "missing_scope"
    assert scope in response.json()["error"]["message"]


def test_synthesize_needs_the_synthesize_scope(api_client, tenant):
    plaintext = issue_key(tenant, scopes=["voices"])
    response = api_client.post("/v1/synthesize", {"text": "hi"}, format="json", **bearer(plaintext))
    assert response.status_code == 403 and _error(response) == "missing_scope"


def test_only_a_hash_and_the_last_four_are_stored(tenant):
    issued = api_key_issue(tenant=tenant, kind="admin", scopes=["admin"])
    stored = ApiKey.objects.get(pk=issued.api_key.pk)
    secret = issued.plaintext[len("sk_admin_") + 12 :]
    row = {field.name: str(getattr(stored, field.attname)) for field in ApiKey._meta.concrete_fields}
    assert all(secret not in value and issued.plaintext not in value for value in row.values())
    assert stored.last_four == issued.plaintext[-4:]
    assert selectors.api_key_authenticate(plaintext=issued.plaintext) == stored


def test_use_is_recorded_on_the_key(api_client, tenant):
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["voices"])
    assert issued.api_key.last_used_at is None
    api_client.get("/v1/voices", **bearer(issued.plaintext))
    issued.api_key.refresh_from_db()
    assert issued.api_key.last_used_at is not None


def test_unknown_scope_is_refused_at_issue(tenant):
    with pytest.raises(ValueError, match="unknown scope"):
        api_key_issue(tenant=tenant, kind="test", scopes=["synthesize", "root"])


def test_keys_of_two_tenants_resolve_to_their_own_tenant():
    first, second = TenantFactory(), TenantFactory()
    assert selectors.api_key_authenticate(plaintext=issue_key(first)).tenant == first
    assert selectors.api_key_authenticate(plaintext=issue_key(second)).tenant == second
