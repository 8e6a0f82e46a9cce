"""What every portal page stands on: login, membership of the current tenant, tenant switching, tenant isolation,
CSRF, HTML error pages, and the static files served by the ASGI application."""
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.urls import reverse

from tenants.models import ApiKey, TenantMembership
from tenants.services import api_key_issue
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, staff_member

pytestmark = pytest.mark.django_db

PAGES = ["/portal/", "/portal/keys/", "/portal/voices/", "/portal/playground/", "/portal/usage/", "/portal/members/",
         "/portal/audit/", "/portal/accounts/password/change/", "/portal/accounts/2fa/"]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_sends_an_anonymous_visitor_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/portal/accounts/login/?next={path}")


def test_every_management_action_needs_a_login(client, owner):
    key = api_key_issue(tenant=owner.tenant, kind="test", scopes=["voices"], name="ci").api_key
    for path in ["/portal/keys/", f"/portal/keys/{key.pk}/revoke/", "/portal/members/",
                 f"/portal/members/{owner.pk}/role/", f"/portal/members/{owner.pk}/remove/"]:
        response = client.post(path, {"name": "x", "kind": "test", "scopes": ["voices"], "email": "a@b.c",
                                      "role": "member"})
        assert response.status_code == 302 and "/portal/accounts/login/" in response["Location"], path
    key.refresh_from_db()
    assert not key.is_revoked and ApiKey.objects.count() == 1
    assert TenantMembership.objects.get(pk=owner.pk).role == "owner"


@pytest.mark.parametrize("path", ["/portal/", "/portal/keys/", "/portal/members/"])
def test_a_user_of_no_tenant_gets_a_page_saying_so(client_for, path, db):
    stranger = staff_member(TenantFactory(), "member", email="stranger@example.com")
    stranger.delete()
    response = client_for(stranger).get(path)
    assert response.status_code == 403
    assert b"You do not belong to a tenant" in response.content


@pytest.mark.parametrize("path", PAGES)
def test_every_page_opens_for_a_member(member_client, path):
    response = member_client.get(path)
    expected = 403 if path == "/portal/audit/" else 200  # the audit log is for owners and admins
    assert response.status_code == expected
    assert b'id="main"' in response.content and b"Skip to content" in response.content


def test_another_tenants_key_is_not_found_even_for_an_owner(owner_client, other_tenant):
    theirs = api_key_issue(tenant=other_tenant, kind="prod", scopes=["synthesize"], name="theirs").api_key
    assert owner_client.get(f"/portal/keys/{theirs.pk}/revoke/").status_code == 404
    assert owner_client.post(f"/portal/keys/{theirs.pk}/revoke/").status_code == 404
    theirs.refresh_from_db()
    assert not theirs.is_revoked
    page = owner_client.get("/portal/keys/").content.decode()
    assert "theirs" not in page and theirs.last_four not in page


def test_another_tenants_member_is_not_found(owner_client, other_tenant):
    theirs = other_tenant.memberships.get()
    assert owner_client.post(f"/portal/members/{theirs.pk}/role/", {"role": "member"}).status_code == 404
    assert owner_client.get(f"/portal/members/{theirs.pk}/remove/").status_code == 404
    assert owner_client.post(f"/portal/members/{theirs.pk}/remove/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.role == "owner"
    assert "owner@globex.example" not in owner_client.get("/portal/members/").content.decode()


def test_a_user_in_two_tenants_switches_between_them(owner, other_tenant, client_for):
    staff_member(other_tenant, "member", email=owner.user.email)
    api_key_issue(tenant=owner.tenant, kind="test", scopes=["voices"], name="acme-key")
    api_key_issue(tenant=other_tenant, kind="test", scopes=["voices"], name="globex-key")
    client = client_for(owner)

    page = client.get("/portal/keys/").content.decode()
    assert 'id="tenant-switch"' in page and "acme-key" in page and "globex-key" not in page

    response = client.post("/portal/switch/", {"tenant": other_tenant.slug})
    assert response.status_code == 302
    page = client.get("/portal/keys/").content.decode()
    assert "globex-key" in page and "acme-key" not in page
    assert client.get("/portal/audit/").status_code == 403  # a member there, whatever they are elsewhere


def test_switching_to_a_tenant_one_does_not_belong_to_is_not_found(owner_client, other_tenant):
    assert owner_client.post("/portal/switch/", {"tenant": other_tenant.slug}).status_code == 404
    assert "Acme Calls" in owner_client.get("/portal/").content.decode()


def test_a_removed_membership_loses_the_tenant_at_the_next_request(owner, member, member_client):
    assert member_client.get("/portal/keys/").status_code == 200
    member.delete()
    assert member_client.get("/portal/keys/").status_code == 403


def test_forms_need_a_csrf_token(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner.user, backend="allauth.account.auth_backends.AuthenticationBackend")
    form = {"name": "ci", "kind": "test", "scopes": ["voices"]}
    assert client.post("/portal/keys/", form).status_code == 403
    assert ApiKey.objects.count() == 0

    page = client.get("/portal/keys/")
    token = page.cookies["csrftoken"].value
    assert client.post("/portal/keys/", {**form, "csrfmiddlewaretoken": token}).status_code == 201
    assert ApiKey.objects.count() == 1


def test_csrf_guards_switching_and_logout(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner.user, backend="allauth.account.auth_backends.AuthenticationBackend")
    assert client.post("/portal/switch/", {"tenant": owner.tenant.slug}).status_code == 403
    assert client.post(reverse("account_logout")).status_code == 403
    assert client.get("/portal/").status_code == 200  # still logged in


def test_portal_errors_are_html_pages_and_the_api_keeps_json(owner_client, client):
    page = owner_client.get("/portal/no-such-page/")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    assert b"Not found" in page.content
    api = client.get("/v1/no-such-endpoint")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_the_base_page_is_accessible_and_fits_a_phone(owner_client):
    page = owner_client.get("/portal/").content.decode()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<a class="skip-link" href="#main">' in page and '<main id="main"' in page
    assert '<nav class="sidebar" aria-label="Portal">' in page
    for label in ["Dashboard", "API keys", "Voices", "Playground", "Usage", "Members", "Audit log"]:
        assert f">{label}</a>" in page
    assert 'aria-current="page">Dashboard' in page
    assert "/static/portal/portal.css" in page and "/static/django_htmx/htmx" in page


def test_members_do_not_see_the_audit_log_in_the_navigation(member_client):
    assert ">Audit log</a>" not in member_client.get("/portal/").content.decode()


@pytest.mark.parametrize("path, content_type", [
    ("/static/portal/portal.css", "text/css"),
    ("/static/portal/portal.js", "text/javascript"),
    ("/static/django_htmx/htmx-2.min.js", "text/javascript"),
])
def test_static_files_are_served_by_the_asgi_application(path, content_type, transactional_db):
    response = async_to_sync(AsgiClient().request)("GET", path)
    assert response.status == 200 and response.headers["content-type"].startswith(content_type)
    assert len(response.body) > 100


def test_a_failing_portal_page_is_an_html_500(owner, monkeypatch):
    from tenants.portal.views import dashboard

    def broken(self, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(dashboard.DashboardView, "get_context_data", broken)
    client = Client(raise_request_exception=False)
    client.force_login(owner.user, backend="allauth.account.auth_backends.AuthenticationBackend")
    response = client.get("/portal/")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    assert b"Something went wrong" in response.content and b"boom" not in response.content


def test_the_function_view_decorator_applies_the_same_checks(rf, owner, member, other_tenant):
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.exceptions import PermissionDenied
    from django.http import HttpResponse

    from tenants.portal.mixins import portal_view

    @portal_view(manager_required=True)
    def managers_page(request):
        return HttpResponse(f"{request.tenant.slug} {request.membership.role}")

    def call(user):
        request = rf.get("/portal/something/")
        request.user, request.session = user, SessionStore()
        return managers_page(request)

    assert call(owner.user).content.decode() == f"{owner.tenant.slug} owner"
    with pytest.raises(PermissionDenied):
        call(member.user)
    assert call(AnonymousUser()).status_code == 302
