import pytest
from django.test import Client

from tests.factories import TenantFactory, staff_member


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Portal tests log users in many times: a fast hasher (production keeps Django's PBKDF2)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _client_for(membership) -> Client:
    client = Client()
    client.force_login(membership.user, backend="allauth.account.auth_backends.AuthenticationBackend")
    return client


@pytest.fixture
def portal_tenant(db):
    return TenantFactory(name="Acme Calls")


@pytest.fixture
def owner(portal_tenant):
    return staff_member(portal_tenant, "owner", email="owner@acme.example")


@pytest.fixture
def tenant_admin(portal_tenant):
    return staff_member(portal_tenant, "admin", email="admin@acme.example")


@pytest.fixture
def member(portal_tenant):
    return staff_member(portal_tenant, "member", email="member@acme.example")


@pytest.fixture
def owner_client(owner) -> Client:
    """Logged in as an owner of `portal_tenant`."""
    return _client_for(owner)


@pytest.fixture
def tenant_admin_client(tenant_admin) -> Client:
    return _client_for(tenant_admin)


@pytest.fixture
def member_client(member) -> Client:
    """Logged in as a plain member of `portal_tenant` (sees everything, changes nothing)."""
    return _client_for(member)


@pytest.fixture
def other_tenant(db):
    """Another tenant with its own owner: nothing of it may be reachable from `portal_tenant`'s staff."""
    tenant = TenantFactory(name="Globex")
    staff_member(tenant, "owner", email="owner@globex.example")
    return tenant


@pytest.fixture
def client_for():
    """client_for(membership): a client logged in as that membership's user."""
    return _client_for
