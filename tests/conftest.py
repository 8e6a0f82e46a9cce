import pytest
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.factories import TenantFactory, issue_key


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters, stream slots and worker heartbeats never leak between tests."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def preloaded_voices(db):
    call_command("sync_voices", verbosity=0, stdout=open("/dev/null", "w"))


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def api_key(tenant) -> str:
    return issue_key(tenant)


@pytest.fixture
def api_client():
    return APIClient()
