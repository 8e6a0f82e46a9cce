"""Members: invitations by email (single-use, hashed, expiring links), roles, removal; the last owner stays."""
import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from tenants.models import AuditLogEntry, Invitation, TenantMembership
from tests.factories import STAFF_PASSWORD, staff_member

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a-long-new-password-42"


def _invite(client, email="new.hire@acme.example", role="admin"):
    response = client.post("/portal/members/", {"email": email, "role": role})
    assert response.status_code == 302, response.content.decode()[-2000:]
    link = re.search(r"http://testserver(/portal/invitations/[^/\s]+/)", mail.outbox[-1].body)
    return link.group(1)


def test_an_owner_invites_by_email_and_only_a_hash_of_the_link_is_stored(owner_client, portal_tenant):
    link = _invite(owner_client)
    message = mail.outbox[-1]
    assert message.to == ["new.hire@acme.example"] and "Acme Calls" in message.subject
    assert "as admin" in message.body and "works once" in message.body
    token = link.rstrip("/").rsplit("/", 1)[-1]
    invitation = Invitation.objects.get()
    assert invitation.tenant == portal_tenant and invitation.role == "admin"
    assert token not in invitation.token_hash and len(invitation.token_hash) == 64
    assert "new.hire@acme.example" in owner_client.get("/portal/members/").content.decode()  # pending


def test_a_new_colleague_accepts_by_choosing_a_password_and_the_link_then_stops_working(owner_client, portal_tenant):
    link = _invite(owner_client)
    visitor = Client()
    page = visitor.get(link)
    assert page.status_code == 200 and b"Join Acme Calls" in page.content and b"Choose a password" in page.content

    mismatch = visitor.post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD + "x"})
    assert mismatch.status_code == 400 and b"differ" in mismatch.content
    assert not get_user_model().objects.filter(email="new.hire@acme.example").exists()

    accepted = visitor.post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert accepted.status_code == 302 and accepted["Location"] == "/portal/"
    membership = TenantMembership.objects.get(user__email="new.hire@acme.example")
    assert (membership.tenant, membership.role) == (portal_tenant, "admin")
    assert visitor.get("/portal/members/").status_code == 200  # logged in as the new user

    assert Client().get(link).status_code == 404  # single use
    fresh = Client()
    assert fresh.post("/portal/accounts/login/", {"login": "new.hire@acme.example", "password": NEW_PASSWORD}).status_code == 302
    assert fresh.get("/portal/").status_code == 200


def test_an_existing_user_logs_in_to_accept(owner_client, portal_tenant, other_tenant):
    elsewhere = staff_member(other_tenant, "owner", email="known@example.com")
    link = _invite(owner_client, email="Known@Example.com", role="member")
    anonymous = Client()
    page = anonymous.get(link)
    assert b"log in" in page.content and b"Choose a password" not in page.content
    assert anonymous.post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 302
    elsewhere.user.refresh_from_db()
    assert elsewhere.user.check_password(STAFF_PASSWORD)  # nobody took over the account through the link
    assert not portal_tenant.memberships.filter(user=elsewhere.user).exists()

    known = Client()
    known.post("/portal/accounts/login/", {"login": "known@example.com", "password": STAFF_PASSWORD})
    assert known.post(link).status_code == 302
    assert portal_tenant.memberships.get(user=elsewhere.user).role == "member"
    assert other_tenant.memberships.get(user=elsewhere.user).role == "owner"  # still there too


def test_an_invitation_is_for_its_address_only(owner_client, portal_tenant, member, client_for):
    link = _invite(owner_client, email="someone.else@example.com", role="owner")
    response = client_for(member).post(link)
    assert response.status_code == 400 and b"This invitation is for someone.else@example.com" in response.content
    assert TenantMembership.objects.get(pk=member.pk).role == "member"
    assert Invitation.objects.get().accepted_at is None


def test_an_expired_invitation_cannot_be_used(owner_client):
    link = _invite(owner_client)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = Client().get(link)
    assert response.status_code == 404 and b"cannot be used" in response.content
    assert Client().post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD}).status_code == 404
    assert not get_user_model().objects.filter(email="new.hire@acme.example").exists()


def test_a_made_up_link_is_not_found(client):
    assert client.get("/portal/invitations/not-a-real-token/").status_code == 404


def test_inviting_someone_already_in_the_tenant_says_so(owner_client, member):
    response = owner_client.post("/portal/members/", {"email": "MEMBER@acme.example", "role": "admin"})
    assert response.status_code == 400 and b"already a member" in response.content
    assert not mail.outbox


def test_only_owners_invite_owners(tenant_admin_client):
    response = tenant_admin_client.post("/portal/members/", {"email": "boss@acme.example", "role": "owner"})
    assert response.status_code == 400 and b"Only owners grant" in response.content
    assert not Invitation.objects.exists()
    _invite(tenant_admin_client, role="admin")


def test_a_member_cannot_invite_change_roles_or_remove(member_client, owner, member):
    page = member_client.get("/portal/members/").content.decode()
    assert "owner@acme.example" in page and "Send invitation" not in page and "/remove/" not in page
    assert member_client.post("/portal/members/", {"email": "x@acme.example", "role": "member"}).status_code == 403
    assert member_client.post(f"/portal/members/{owner.pk}/role/", {"role": "member"}).status_code == 403
    assert member_client.post(f"/portal/members/{member.pk}/role/", {"role": "owner"}).status_code == 403
    assert member_client.get(f"/portal/members/{owner.pk}/remove/").status_code == 403
    assert member_client.post(f"/portal/members/{owner.pk}/remove/").status_code == 403
    assert {m.role for m in TenantMembership.objects.all()} == {"owner", "member"}
    assert not mail.outbox


def test_an_owner_changes_roles_and_the_last_owner_stays_owner(owner_client, owner, member):
    response = owner_client.post(f"/portal/members/{member.pk}/role/", {"role": "admin"}, follow=True)
    assert "member@acme.example is now admin" in response.content.decode()
    assert TenantMembership.objects.get(pk=member.pk).role == "admin"

    response = owner_client.post(f"/portal/members/{owner.pk}/role/", {"role": "member"}, follow=True)
    assert "needs an owner" in response.content.decode()
    assert TenantMembership.objects.get(pk=owner.pk).role == "owner"

    owner_client.post(f"/portal/members/{member.pk}/role/", {"role": "owner"})
    owner_client.post(f"/portal/members/{owner.pk}/role/", {"role": "admin"})  # another owner exists now
    assert TenantMembership.objects.get(pk=owner.pk).role == "admin"


def test_an_admin_manages_members_but_not_owners(tenant_admin_client, owner, member):
    tenant_admin_client.post(f"/portal/members/{member.pk}/role/", {"role": "admin"})
    assert TenantMembership.objects.get(pk=member.pk).role == "admin"
    response = tenant_admin_client.post(f"/portal/members/{owner.pk}/role/", {"role": "member"}, follow=True)
    assert "Only owners grant or take away the owner role" in response.content.decode()
    tenant_admin_client.post(f"/portal/members/{owner.pk}/remove/")
    assert TenantMembership.objects.get(pk=owner.pk).role == "owner"


def test_removing_a_member_after_confirmation(owner_client, member, client_for):
    member_client = client_for(member)
    confirm = owner_client.get(f"/portal/members/{member.pk}/remove/")
    assert confirm.status_code == 200 and b"Remove member@acme.example?" in confirm.content
    owner_client.post(f"/portal/members/{member.pk}/remove/")
    assert not TenantMembership.objects.filter(pk=member.pk).exists()
    assert get_user_model().objects.filter(email="member@acme.example").exists()  # the user stays
    assert member_client.get("/portal/keys/").status_code == 403  # no tenant any more


def test_the_last_owner_cannot_be_removed(owner_client, owner):
    response = owner_client.post(f"/portal/members/{owner.pk}/remove/", follow=True)
    assert "last owner cannot be removed" in response.content.decode()
    assert TenantMembership.objects.filter(pk=owner.pk).exists()


def test_member_changes_are_in_the_audit_log(owner_client, owner, member, portal_tenant):
    link = _invite(owner_client, email="new.hire@acme.example", role="member")
    Client().post(link, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    owner_client.post(f"/portal/members/{member.pk}/role/", {"role": "admin"})
    owner_client.post(f"/portal/members/{member.pk}/remove/")
    entries = AuditLogEntry.objects.filter(tenant=portal_tenant).order_by("created_at", "id")
    assert [(e.actor_email, e.action, e.target, e.details) for e in entries] == [
        ("owner@acme.example", "member.invited", "new.hire@acme.example", {"role": "member"}),
        ("new.hire@acme.example", "member.joined", "new.hire@acme.example", {"role": "member"}),
        ("owner@acme.example", "member.role_changed", "member@acme.example", {"from": "member", "to": "admin"}),
        ("owner@acme.example", "member.removed", "member@acme.example", {"role": "admin"}),
    ]


def test_a_pending_invitation_can_be_withdrawn(owner_client, member_client, portal_tenant, other_tenant):
    link = _invite(owner_client)
    invitation = Invitation.objects.get()
    assert member_client.post(f"/portal/members/invitations/{invitation.pk}/cancel/").status_code == 403
    assert Client().get(link).status_code == 200

    response = owner_client.post(f"/portal/members/invitations/{invitation.pk}/cancel/", follow=True)
    assert "is withdrawn" in response.content.decode()
    assert Client().get(link).status_code == 404
    assert AuditLogEntry.objects.filter(tenant=portal_tenant, action="member.invitation_cancelled").count() == 1

    from tenants.services import member_invite
    theirs = member_invite(actor=other_tenant.memberships.get(), email="x@globex.example", role="member",
                           accept_url=lambda token: token)
    assert owner_client.post(f"/portal/members/invitations/{theirs.pk}/cancel/").status_code == 404
    assert Invitation.objects.get(pk=theirs.pk).is_usable()


def test_invitations_are_limited_per_hour_so_a_staff_account_cannot_spam_addresses(owner_client, portal_tenant, settings):
    settings.PORTAL_INVITATIONS_PER_HOUR = 2
    for number in range(2):
        assert owner_client.post("/portal/members/", {"email": f"hire{number}@acme.example", "role": "member"}).status_code == 302
    refused = owner_client.post("/portal/members/", {"email": "hire2@acme.example", "role": "member"})
    assert refused.status_code == 400 and "PORTAL_INVITATIONS_PER_HOUR" in refused.content.decode()
    assert len(mail.outbox) == 2 and portal_tenant.invitations.count() == 2
