import io

import pytest
from django.core.management import CommandError, call_command

from tenants import selectors
from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_tenant_with_limits():
    _run("create_tenant", "acme", "--name", "Acme", "--requests-per-minute", "5", "--requests-per-hour", "50",
         "--monthly-characters", "1000")
    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.name, tenant.requests_per_minute, tenant.requests_per_hour, tenant.monthly_character_quota) == (
        "Acme", 5, 50, 1000,
    )


def test_create_tenant_defaults_follow_the_seed():
    _run("create_tenant", "plain")
    tenant = Tenant.objects.get(slug="plain")
    assert (tenant.requests_per_minute, tenant.requests_per_hour, tenant.monthly_character_quota) == (1000, 10000, None)


def test_duplicate_or_invalid_slug_is_a_clear_error():
    _run("create_tenant", "acme")
    with pytest.raises(CommandError, match="slug"):
        _run("create_tenant", "acme")
    with pytest.raises(CommandError, match="slug"):
        _run("create_tenant", "not a slug!")


def test_create_api_key_prints_only_a_working_key():
    _run("create_tenant", "acme")
    out = _run("create_api_key", "--tenant", "acme", "--kind", "prod", "--scopes", "synthesize,voices", "--name", "ci")
    plaintext = out.strip()
    assert out == plaintext + "\n" and plaintext.startswith("sk_prod_")
    key = selectors.api_key_authenticate(plaintext=plaintext)
    assert key.scopes == ["synthesize", "voices"] and key.name == "ci" and key.tenant.slug == "acme"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tenant", "ghost", "--kind", "test", "--scopes", "voices"], "No tenant"),
        (["--tenant", "acme", "--kind", "test", "--scopes", "voices,root"], "unknown scope"),
    ],
)
def test_create_api_key_errors(args, message):
    _run("create_tenant", "acme")
    with pytest.raises(CommandError, match=message):
        _run("create_api_key", *args)
    assert not ApiKey.objects.exists()


def test_bootstrap_demo_is_idempotent_and_each_run_prints_a_working_key():
    first = _run("bootstrap_demo").rsplit(" ", 1)[-1].strip()
    second = _run("bootstrap_demo").rsplit(" ", 1)[-1].strip()
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert selectors.api_key_authenticate(plaintext=second).tenant.slug == "demo"
    with pytest.raises(selectors.KeyRejected):
        selectors.api_key_authenticate(plaintext=first)  # the previous demo key was rotated out
    assert ApiKey.objects.filter(tenant__slug="demo", revoked_at__isnull=True).count() == 1
