"""The API keys page: create (plaintext once), list with this month's usage, revoke with confirmation; members
see the keys and nothing more."""
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import selectors
from tenants.models import ApiKey, AuditLogEntry, UsageRecord
from tenants.services import api_key_issue

pytestmark = pytest.mark.django_db

NEW_KEY = {"name": "IVR production", "kind": "prod", "scopes": ["synthesize", "voices"]}


def _plaintext(response) -> str:
    match = re.search(r'id="new-key"[^>]*value="(sk_[a-z]+_[A-Za-z0-9]+)"', response.content.decode())
    assert match, "the new key is on the page"
    return match.group(1)


def test_an_owner_creates_a_key_and_sees_its_plaintext_exactly_once(owner_client, portal_tenant):
    response = owner_client.post("/portal/keys/", NEW_KEY)
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    plaintext = _plaintext(response)
    assert b"shown only this once" in response.content and b'data-copy="#new-key"' in response.content

    api_key = selectors.api_key_authenticate(plaintext=plaintext)  # the API takes it
    assert (api_key.tenant, api_key.name, api_key.kind, api_key.scopes) == (
        portal_tenant, "IVR production", "prod", ["synthesize", "voices"])
    assert plaintext not in owner_client.get("/portal/keys/").content.decode()
    assert api_key.secret_hash not in response.content.decode()


def test_an_admin_creates_keys_too(tenant_admin_client):
    assert tenant_admin_client.post("/portal/keys/", NEW_KEY).status_code == 201


def test_a_key_without_scopes_or_with_an_unknown_kind_is_refused_with_the_reason(owner_client):
    response = owner_client.post("/portal/keys/", {"name": "x", "kind": "root", "scopes": []})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Select a valid choice" in page and "This field is required" in page
    assert ApiKey.objects.count() == 0


def test_the_list_shows_each_key_with_its_usage_this_month(owner_client, portal_tenant, other_tenant):
    issued = api_key_issue(tenant=portal_tenant, kind="test", scopes=["synthesize"], name="batch")
    key = issued.api_key
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    now = timezone.now()
    for characters, created_at in [(120, now), (30, now), (999, now - timedelta(days=40))]:
        UsageRecord.objects.create(tenant=portal_tenant, api_key=key, characters=characters, status="success",
                                   created_at=created_at)
    page = owner_client.get("/portal/keys/").content.decode()
    row = page[page.index(">batch<"):]
    row = row[:row.index("</tr>")]
    assert "test" in row and "synthesize" in row and f"sk_test_{key.lookup_id}…{key.last_four}" in row
    assert "2 requests, 150 characters" in row
    assert "never" not in row  # last used is shown
    assert issued.plaintext not in page


def test_revoking_asks_for_confirmation_then_the_api_refuses_the_key(owner_client, portal_tenant):
    issued = api_key_issue(tenant=portal_tenant, kind="test", scopes=["voices"], name="old")
    confirm = owner_client.get(f"/portal/keys/{issued.api_key.pk}/revoke/")
    assert confirm.status_code == 200 and b"cannot be undone" in confirm.content
    assert not ApiKey.objects.get(pk=issued.api_key.pk).is_revoked  # the GET changed nothing

    response = owner_client.post(f"/portal/keys/{issued.api_key.pk}/revoke/", follow=True)
    assert response.redirect_chain[-1][0] == "/portal/keys/"
    assert "is revoked" in response.content.decode()
    with pytest.raises(selectors.KeyRejected) as refused:
        selectors.api_key_authenticate(plaintext=issued.plaintext)
    assert refused.value.code == "api_key_revoked"


def test_a_member_sees_the_keys_but_cannot_create_or_revoke(member_client, portal_tenant):
    issued = api_key_issue(tenant=portal_tenant, kind="test", scopes=["voices"], name="shared")
    page = member_client.get("/portal/keys/").content.decode()
    assert "shared" in page and "Create key" not in page and "/revoke/" not in page

    refused = member_client.post("/portal/keys/", NEW_KEY)
    assert refused.status_code == 403 and refused["Content-Type"].startswith("text/html")
    assert b"owners and admins" in refused.content
    assert member_client.get(f"/portal/keys/{issued.api_key.pk}/revoke/").status_code == 403
    assert member_client.post(f"/portal/keys/{issued.api_key.pk}/revoke/").status_code == 403
    assert ApiKey.objects.count() == 1 and not ApiKey.objects.get().is_revoked


def test_creating_and_revoking_are_in_the_audit_log(owner_client, owner, portal_tenant):
    plaintext = _plaintext(owner_client.post("/portal/keys/", NEW_KEY))
    api_key = selectors.api_key_authenticate(plaintext=plaintext)
    owner_client.post(f"/portal/keys/{api_key.pk}/revoke/")
    owner_client.post(f"/portal/keys/{api_key.pk}/revoke/")  # again: nothing more happens
    entries = list(AuditLogEntry.objects.filter(tenant=portal_tenant).order_by("created_at", "id"))
    assert [(e.action, e.actor, e.actor_email) for e in entries] == [
        ("api_key.created", owner.user, "owner@acme.example"),
        ("api_key.revoked", owner.user, "owner@acme.example"),
    ]
    assert entries[0].target == f"IVR production (sk_prod_{api_key.lookup_id}…{api_key.last_four})"
    assert entries[0].details == {"kind": "prod", "scopes": ["synthesize", "voices"]}
    assert plaintext not in str(entries[0].details) + entries[0].target


def test_sending_the_create_form_again_makes_no_second_key(owner_client):
    """The answer that shows the plaintext is a POST: a reload or a double click sends the same form again."""
    page = owner_client.get("/portal/keys/").content.decode()
    form_id = re.search(r'name="form_id" value="([0-9a-f-]{36})"', page).group(1)
    first = owner_client.post("/portal/keys/", {**NEW_KEY, "form_id": form_id})
    again = owner_client.post("/portal/keys/", {**NEW_KEY, "form_id": form_id}, follow=True)
    assert first.status_code == 201 and again.status_code == 200
    assert ApiKey.objects.filter(name=NEW_KEY["name"]).count() == 1
    assert "made its key already" in again.content.decode()
    assert not re.search(r"sk_(?:prod|test)_[A-Za-z0-9]{44}", again.content.decode())  # shown once, not again
