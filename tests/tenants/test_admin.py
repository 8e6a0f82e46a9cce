"""What an operator sees and does in Django admin."""
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants.keys import parse_key
from tenants.models import ApiKey, Tenant, TenantMembership, UsageRecord
from tenants.selectors import KeyRejected, api_key_authenticate
from tests.factories import TenantFactory, VoiceFactory, issue_key

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"sk_(?:prod|test|admin)_[A-Za-z0-9]{44}")


@pytest.fixture
def populated():
    """One row of every model, so changelists render real rows rather than the empty state."""
    tenant = TenantFactory()
    user = get_user_model().objects.create_user("staff", password="x")
    TenantMembership.objects.create(user=user, tenant=tenant, role="owner")
    VoiceFactory(tenant=tenant)
    VoiceFactory(tenant=None, is_preloaded=True)
    api_key = api_key_authenticate(plaintext=issue_key(tenant))
    UsageRecord.objects.create(
        tenant=tenant, api_key=api_key, voice_id="voice_0", engine="espeak", characters=12,
        audio_seconds=1.5, time_to_first_audio_ms=80.0, total_ms=300.0, status="success",
    )
    return tenant


@pytest.mark.parametrize(
    "model", ["tenants_tenant", "tenants_tenantmembership", "tenants_apikey", "tenants_usagerecord", "voices_voice"]
)
def test_every_changelist_renders(admin_client, populated, model):
    response = admin_client.get(reverse(f"admin:{model}_changelist"))
    assert response.status_code == 200
    assert populated.slug in response.content.decode()


@pytest.mark.parametrize("model", ["tenants_tenant", "tenants_tenantmembership", "tenants_apikey", "voices_voice"])
def test_add_forms_render(admin_client, model):
    assert admin_client.get(reverse(f"admin:{model}_add")).status_code == 200


def add_key(admin_client, tenant, follow=True, **overrides):
    data = {"tenant": tenant.pk, "name": "ci", "kind": "prod", "scopes": ["synthesize", "voices"], "expires_at_0": "",
            "expires_at_1": "", **overrides}
    return admin_client.post(reverse("admin:tenants_apikey_add"), data, follow=follow)


def test_adding_a_key_shows_plaintext_once_and_stores_only_its_hash(admin_client, tenant):
    response = add_key(admin_client, tenant, follow=False)

    # The answer to the form is the one page that shows the key, with a copy button; it is never cached.
    assert response.status_code == 200
    page = response.content.decode()
    plaintexts = set(KEY_RE.findall(page))
    assert len(plaintexts) == 1
    plaintext = plaintexts.pop()
    assert plaintext.startswith("sk_prod_")
    assert 'id="copy-api-key"' in page and "will not be shown again" in page
    assert "no-store" in response["Cache-Control"]
    # Nor does it travel anywhere else: no message cookie, nothing in the session.
    assert all(plaintext not in morsel.value for morsel in response.cookies.values())
    assert plaintext not in str(dict(admin_client.session))

    # Only the hash is stored: neither the key nor its secret is in any column of the row.
    api_key = ApiKey.objects.get()
    secret = parse_key(plaintext).secret
    for field in ApiKey._meta.concrete_fields:
        value = str(getattr(api_key, field.attname))
        assert plaintext not in value and secret not in value
    assert (api_key.tenant, api_key.name, api_key.scopes) == (tenant, "ci", ["synthesize", "voices"])

    # The key works, and it is never shown again nor written to the admin history.
    assert api_key_authenticate(plaintext=plaintext) == api_key
    for url in (reverse("admin:tenants_apikey_changelist"), reverse("admin:tenants_apikey_change", args=[api_key.pk])):
        again = admin_client.get(url).content.decode()
        assert plaintext not in again and secret not in again
    for entry in LogEntry.objects.all():
        assert secret not in entry.object_repr and secret not in entry.change_message


def test_add_key_rejects_an_expiry_in_the_past(admin_client, tenant):
    response = add_key(admin_client, tenant, expires_at_0="2000-01-01", expires_at_1="00:00:00")
    assert response.status_code == 200
    assert "Expiry must be in the future." in response.content.decode()
    assert not ApiKey.objects.exists()


def test_key_change_page_shows_neither_hash_nor_secret(admin_client, tenant):
    plaintext = issue_key(tenant)
    api_key = ApiKey.objects.get()

    page = admin_client.get(reverse("admin:tenants_apikey_change", args=[api_key.pk])).content.decode()

    assert f"{api_key.display_prefix}…{api_key.last_four}" in page
    assert api_key.secret_hash not in page
    assert parse_key(plaintext).secret not in page
    assert 'name="secret_hash"' not in page and 'name="lookup_id"' not in page


def test_revoke_action_stops_the_key_authenticating(admin_client, tenant):
    plaintext = issue_key(tenant)
    api_key = ApiKey.objects.get()

    response = admin_client.post(
        reverse("admin:tenants_apikey_changelist"), {"action": "revoke", "_selected_action": [api_key.pk]}
    )

    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    with pytest.raises(KeyRejected) as rejected:
        api_key_authenticate(plaintext=plaintext)
    assert rejected.value.code == "api_key_revoked"
    # The revoked filter finds it.
    revoked_page = admin_client.get(reverse("admin:tenants_apikey_changelist"), {"revoked": "yes"})
    assert api_key.last_four in revoked_page.content.decode()


def test_suspend_and_reactivate_actions(admin_client):
    tenant, other = TenantFactory(), TenantFactory()
    plaintext = issue_key(tenant)
    url = reverse("admin:tenants_tenant_changelist")

    admin_client.post(url, {"action": "suspend", "_selected_action": [tenant.pk]})

    assert Tenant.objects.get(pk=tenant.pk).is_active is False
    assert Tenant.objects.get(pk=other.pk).is_active is True
    with pytest.raises(KeyRejected):
        api_key_authenticate(plaintext=plaintext)

    admin_client.post(url, {"action": "reactivate", "_selected_action": [tenant.pk]})
    assert Tenant.objects.get(pk=tenant.pk).is_active is True
    assert api_key_authenticate(plaintext=plaintext).tenant == tenant


def test_usage_records_are_read_only(admin_client, populated):
    record = UsageRecord.objects.get()

    assert admin_client.get(reverse("admin:tenants_usagerecord_add")).status_code == 403
    change_url = reverse("admin:tenants_usagerecord_change", args=[record.pk])
    assert admin_client.post(change_url, {"characters": 0, "status": "error"}).status_code == 403
    assert admin_client.get(reverse("admin:tenants_usagerecord_delete", args=[record.pk])).status_code == 403
    record.refresh_from_db()
    assert (record.characters, record.status) == (12, "success")
