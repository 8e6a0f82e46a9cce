"""create_staff_user and the demo owner of bootstrap_demo: users who can log in to the portal."""
import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from tenants.models import AuditLogEntry, TenantMembership
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _logs_in(email: str, password: str) -> bool:
    client = Client()
    response = client.post("/portal/accounts/login/", {"login": email, "password": password})
    return response.status_code == 302 and client.get("/portal/").status_code == 200


def test_create_staff_user_with_a_password():
    tenant = TenantFactory(slug="acme")
    out = _run("create_staff_user", "--tenant", "acme", "--email", "Ops@Acme.example", "--role", "owner",
               "--password", "s3cret-enough-pass")
    assert "ops@acme.example is owner of tenant 'acme'" in out and "s3cret" not in out
    membership = TenantMembership.objects.get(tenant=tenant)
    assert (membership.user.email, membership.role) == ("ops@acme.example", "owner")
    assert _logs_in("ops@acme.example", "s3cret-enough-pass")
    assert AuditLogEntry.objects.get(tenant=tenant).action == "member.added"


def test_create_staff_user_without_a_password_prints_a_generated_one_once():
    TenantFactory(slug="acme")
    out = _run("create_staff_user", "--tenant", "acme", "--email", "ops@acme.example", "--role", "admin")
    password = re.search(r"Password \(shown once\): (\S+)", out).group(1)
    assert _logs_in("ops@acme.example", password)
    again = _run("create_staff_user", "--tenant", "acme", "--email", "ops@acme.example", "--role", "member")
    assert "Password" not in again  # an existing user keeps theirs
    assert _logs_in("ops@acme.example", password)
    assert TenantMembership.objects.get().role == "member"


def test_one_user_joins_several_tenants():
    TenantFactory(slug="acme")
    TenantFactory(slug="globex")
    _run("create_staff_user", "--tenant", "acme", "--email", "ops@example.com", "--role", "owner", "--password", "pw-long-enough")
    _run("create_staff_user", "--tenant", "globex", "--email", "ops@example.com", "--role", "member")
    assert sorted(TenantMembership.objects.values_list("tenant__slug", "role")) == [("acme", "owner"), ("globex", "member")]


@pytest.mark.parametrize("args, message", [
    (["--tenant", "ghost", "--email", "a@b.example", "--role", "owner"], "No tenant"),
    (["--tenant", "acme", "--email", "not-an-email", "--role", "owner"], "not an email"),
])
def test_create_staff_user_errors(args, message):
    TenantFactory(slug="acme")
    with pytest.raises(CommandError, match=message):
        _run("create_staff_user", *args)
    with pytest.raises(CommandError, match="invalid choice"):
        _run("create_staff_user", "--tenant", "acme", "--email", "a@b.example", "--role", "king")


def test_bootstrap_demo_prints_the_portal_login_before_the_key(monkeypatch, settings):
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "8123")
    out = _run("bootstrap_demo")
    portal = re.search(r"Portal: (http://127\.0\.0\.1:8123/portal/) \(log in as (\S+) / (\S+)\)", out)
    assert portal, out
    assert out.strip().rsplit(" ", 1)[-1].startswith("sk_test_")  # the last word stays the demo key
    assert _logs_in(portal.group(2), portal.group(3))
    again = re.search(r"log in as (\S+) / (\S+)\)", _run("bootstrap_demo"))
    assert _logs_in(again.group(1), again.group(2))  # a fresh password per start, like the key
    assert TenantMembership.objects.get(user__email="demo@example.com").role == "owner"
