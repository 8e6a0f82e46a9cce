"""The audit log page: owners and admins only, the current tenant's entries only, newest first, paginated."""
import pytest

from tenants.services import audit_record

pytestmark = pytest.mark.django_db


def test_owners_and_admins_read_their_tenants_log_newest_first(owner_client, tenant_admin_client, owner, portal_tenant,
                                                                 other_tenant):
    audit_record(tenant=portal_tenant, actor=owner.user, action="api_key.created", target="target-one")
    audit_record(tenant=portal_tenant, actor=None, action="member.added", target="target-two", details={"role": "admin"})
    audit_record(tenant=other_tenant, actor=None, action="api_key.revoked", target="globex-secret-thing")
    for client in (owner_client, tenant_admin_client):
        page = client.get("/portal/audit/").content.decode()
        assert page.index("target-two") < page.index("target-one")
        assert "owner@acme.example" in page and "operator" in page and "role: admin" in page
        assert "globex-secret-thing" not in page


def test_members_are_refused(member_client):
    response = member_client.get("/portal/audit/")
    assert response.status_code == 403 and b"owners and admins" in response.content


def test_the_log_is_paginated(owner_client, portal_tenant):
    for number in range(60):
        audit_record(tenant=portal_tenant, actor=None, action="api_key.created", target=f"key-{number:02d}")
    first = owner_client.get("/portal/audit/").content.decode()
    assert "key-59" in first and "key-10" in first and "key-09" not in first and "Page 1 of 2" in first
    second = owner_client.get("/portal/audit/?page=2").content.decode()
    assert "key-09" in second and "key-00" in second and "key-10" not in second
    assert owner_client.get("/portal/audit/?page=3").status_code == 404
