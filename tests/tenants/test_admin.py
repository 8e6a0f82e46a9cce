"""What an operator sees and does in Django admin."""
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from synthesis import heartbeats

from tenants.keys import parse_key
from tenants.models import ApiKey, Tenant, TenantMembership, UsageRecord
from tenants.selectors import KeyRejected, api_key_authenticate, month_start
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


def _usage(tenant, *, characters, status="success", audio_seconds=0.0, created_at=None, voice_id="voice_0"):
    return UsageRecord.objects.create(
        tenant=tenant, voice_id=voice_id, engine="espeak", characters=characters, audio_seconds=audio_seconds,
        total_ms=100.0, status=status, created_at=created_at or timezone.now(),
    )


def test_tenant_page_summarizes_this_months_usage_against_the_quota(admin_client):
    tenant = TenantFactory(monthly_character_quota=1000)
    _usage(tenant, characters=300, audio_seconds=90.0)
    _usage(tenant, characters=100, audio_seconds=30.0, status="client_disconnected")
    _usage(tenant, characters=50, status="error")  # counted as an error, not billed
    _usage(tenant, characters=999, created_at=month_start() - timedelta(days=3))  # last month
    _usage(TenantFactory(), characters=777)  # another tenant

    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()

    summary = page[page.index('id="usage-summary"'):]
    summary = re.sub(r"\s+", " ", summary[: summary.index("</table>")])
    for row in ("Requests</th><td>3<", "Characters billed</th><td>400<", "Audio minutes</th><td>2.0<",
                "Errors</th><td>1<", "400 of 1000 characters (40.0%)", "Quota left</th><td>600 characters"):
        assert row in summary
    listing = admin_client.get(reverse("admin:tenants_tenant_changelist")).content.decode()
    assert "400 of 1,000 (40%)" in listing


def test_a_tenant_without_quota_is_unlimited(admin_client, tenant):
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()
    assert "none (unlimited)" in page


def _tenant_form(tenant, **changes):
    data = {
        "slug": tenant.slug, "name": tenant.name, "is_active": "on", "requests_per_minute": 1000,
        "requests_per_hour": 10000, "max_concurrent_streams": 50, "monthly_character_quota": "",
        "created_at_0": "2026-01-01", "created_at_1": "00:00:00",
        "memberships-TOTAL_FORMS": 0, "memberships-INITIAL_FORMS": 0,
        "memberships-MIN_NUM_FORMS": 0, "memberships-MAX_NUM_FORMS": 1000, **changes,
    }
    return {key: value for key, value in data.items() if value is not None}


def test_operator_sets_limits_and_quota_and_adds_staff_inline(admin_client, tenant):
    user = get_user_model().objects.create_user("owner@example.com", password="x")
    data = _tenant_form(
        tenant, requests_per_minute=5, requests_per_hour=60, max_concurrent_streams=2, monthly_character_quota=5000,
        **{"memberships-TOTAL_FORMS": 1, "memberships-0-user": user.pk, "memberships-0-role": "owner"},
    )

    response = admin_client.post(reverse("admin:tenants_tenant_change", args=[tenant.pk]), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    tenant.refresh_from_db()
    assert (tenant.requests_per_minute, tenant.requests_per_hour, tenant.max_concurrent_streams,
            tenant.monthly_character_quota) == (5, 60, 2, 5000)
    assert TenantMembership.objects.get(tenant=tenant).user == user
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk])).content.decode()
    assert "Limits and quota" in page and "owner@example.com" in page


def test_suspending_from_the_change_form_stops_the_keys(admin_client, tenant):
    plaintext = issue_key(tenant)
    data = _tenant_form(tenant, is_active=None)  # the box unticked

    assert admin_client.post(reverse("admin:tenants_tenant_change", args=[tenant.pk]), data).status_code == 302

    with pytest.raises(KeyRejected) as rejected:
        api_key_authenticate(plaintext=plaintext)
    assert rejected.value.code == "tenant_suspended"


def test_staff_membership_admin_adds_and_lists_memberships(admin_client, tenant):
    user = get_user_model().objects.create_user("member@example.com", password="x")

    response = admin_client.post(
        reverse("admin:tenants_tenantmembership_add"), {"user": user.pk, "tenant": tenant.pk, "role": "member"}
    )

    assert response.status_code == 302
    assert TenantMembership.objects.get().role == "member"
    listing = admin_client.get(reverse("admin:tenants_tenantmembership_changelist"), {"role__exact": "member"})
    assert "member@example.com" in listing.content.decode() and tenant.slug in listing.content.decode()
    duplicate = admin_client.post(
        reverse("admin:tenants_tenantmembership_add"), {"user": user.pk, "tenant": tenant.pk, "role": "owner"}
    )
    assert duplicate.status_code == 200 and TenantMembership.objects.count() == 1


def _listed_request_ids(admin_client, **filters) -> set[str]:
    response = admin_client.get(reverse("admin:tenants_usagerecord_changelist"), filters)
    assert response.status_code == 200
    return {str(row.request_id) for row in response.context["cl"].result_list}


def test_usage_records_filter_by_tenant_voice_status_and_date(admin_client):
    alpha, beta = TenantFactory(), TenantFactory()
    hello = _usage(alpha, characters=5, voice_id="hello")
    failed = _usage(alpha, characters=5, voice_id="other", status="error")
    last_year = _usage(alpha, characters=5, voice_id="hello", created_at=timezone.now() - timedelta(days=400))
    theirs = _usage(beta, characters=5, voice_id="hello")
    ids = lambda *records: {str(record.request_id) for record in records}  # noqa: E731

    assert _listed_request_ids(admin_client, tenant__id__exact=alpha.pk) == ids(hello, failed, last_year)
    assert _listed_request_ids(admin_client, voice_id="hello") == ids(hello, last_year, theirs)
    assert _listed_request_ids(admin_client, status__exact="error") == ids(failed)
    this_year = timezone.now().year
    assert _listed_request_ids(admin_client, created_at__year=this_year, voice_id="hello") == ids(hello, theirs)
    page = admin_client.get(reverse("admin:tenants_usagerecord_changelist")).content.decode()
    assert "By voice id" in page and "By tenant" in page and "By status" in page


def test_usage_record_change_page_is_view_only(admin_client, populated):
    record = UsageRecord.objects.get()

    page = admin_client.get(reverse("admin:tenants_usagerecord_change", args=[record.pk])).content.decode()

    assert str(record.request_id) in page
    assert 'name="characters"' not in page and 'name="_save"' not in page
    changelist = admin_client.post(
        reverse("admin:tenants_usagerecord_changelist"), {"action": "delete_selected", "_selected_action": [record.pk]}
    )
    assert changelist.status_code == 200 and UsageRecord.objects.filter(pk=record.pk).exists()


# --- the Workers page ---------------------------------------------------------------------------------------------
def test_workers_page_shows_live_workers_and_engine_status(admin_client, settings):
    settings.TTS_ENGINES = ["espeak", "xtts"]
    heartbeats.worker_heartbeat(worker_id="gpu-box-1", info={
        "engines": {"espeak": {"available": True, "languages": ["en", "fr"]},
                    "xtts": {"available": False, "reason": "XTTS weights not found in /models"}},
        "capacity": 8, "load": 3, "accepting": True, "jobs_started": 42, "host": "gpu-box", "pid": 4242,
    })

    index = admin_client.get(reverse("admin:index")).content.decode()
    assert f'href="{reverse("admin-workers")}"' in index
    response = admin_client.get(reverse("admin-workers"))

    assert response.status_code == 200
    page = re.sub(r"\s+", " ", response.content.decode())
    assert "gpu-box-1" in page and "gpu-box" in page and "4242" in page and "3 / 8" in page
    assert "XTTS weights not found in /models" in page
    engines = dict(response.context["engines"])
    assert engines["espeak"]["state"] == "available" and engines["xtts"]["state"] == "unavailable"
    assert response.context["health"]["status"] == "degraded"  # what /v1/health says too


def test_workers_page_says_when_no_worker_is_live(admin_client, settings):
    settings.TTS_ENGINES = ["espeak"]
    page = admin_client.get(reverse("admin-workers")).content.decode()
    assert "No live model worker" in page and "no live model worker serves the &#x27;espeak&#x27; engine" in page


def test_workers_page_is_for_staff_only(client):
    url = reverse("admin-workers")
    assert client.get(url)["Location"].startswith(reverse("admin:login"))
    client.force_login(get_user_model().objects.create_user("portal-user", password="x"))
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_staff_actions_and_invitations_are_visible_to_operators_and_read_only(admin_client, populated):
    from datetime import timedelta

    from tenants.models import AuditLogEntry, Invitation

    entry = AuditLogEntry.objects.create(tenant=populated, actor_email="owner@example.com", action="api_key.revoked",
                                         target="ci key")
    invitation = Invitation.objects.create(tenant=populated, email="new@example.com", token_hash="0" * 64,
                                           expires_at=timezone.now() + timedelta(days=7))
    audit = admin_client.get(reverse("admin:tenants_auditlogentry_changelist")).content.decode()
    assert "api_key.revoked" in audit and "owner@example.com" in audit
    invitations = admin_client.get(reverse("admin:tenants_invitation_changelist")).content.decode()
    assert "new@example.com" in invitations
    assert "0" * 64 not in admin_client.get(reverse("admin:tenants_invitation_change", args=[invitation.pk])).content.decode()
    assert admin_client.get(reverse("admin:tenants_auditlogentry_add")).status_code == 403
    assert admin_client.get(reverse("admin:tenants_auditlogentry_delete", args=[entry.pk])).status_code == 403
    assert admin_client.get(reverse("admin:tenants_invitation_add")).status_code == 403
