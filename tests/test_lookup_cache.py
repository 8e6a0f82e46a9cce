"""The per-process cache of the rows each synthesis reads (callwaiting.lookup_cache): a request reads its key and
voice from memory, yet what an operator or a tenant changes through the service is seen by the very next
request, in this process and in any other sharing the cache."""
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from callwaiting import lookup_cache
from callwaiting.lookup_cache import LookupCache
from tenants.models import ApiKey, Tenant
from tenants.selectors import KeyRejected, api_key_authenticate
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active
from tests.factories import TenantFactory, VoiceFactory
from voices.services import voice_delete
from voices.selectors import voice_get_for_synthesis


@pytest.fixture
def issued(db):
    return api_key_issue(tenant=TenantFactory(), kind="test", scopes=["synthesize"])


def _queries(function, *args, **kwargs) -> int:
    with CaptureQueriesContext(connection) as captured:
        function(*args, **kwargs)
    return len([query for query in captured.captured_queries if query["sql"].startswith("SELECT")])


def test_a_key_is_read_from_the_database_once_then_from_memory(issued):
    assert _queries(api_key_authenticate, plaintext=issued.plaintext) == 1
    assert _queries(api_key_authenticate, plaintext=issued.plaintext) == 0


def test_the_secret_is_checked_on_every_request_even_from_memory(issued):
    api_key_authenticate(plaintext=issued.plaintext)
    last = issued.plaintext[-1]
    forged = issued.plaintext[:-1] + ("A" if last != "A" else "B")  # the same lookup id, a wrong secret
    with pytest.raises(KeyRejected) as refused:
        api_key_authenticate(plaintext=forged)
    assert refused.value.code == "invalid_api_key"


def test_a_revoked_key_is_refused_at_the_next_request(issued):
    api_key_authenticate(plaintext=issued.plaintext)
    api_key_revoke(api_key=ApiKey.objects.get(pk=issued.api_key.pk))
    with pytest.raises(KeyRejected) as refused:
        api_key_authenticate(plaintext=issued.plaintext)
    assert refused.value.code == "api_key_revoked"


def test_a_suspended_tenant_and_a_changed_limit_are_seen_at_the_next_request(issued):
    assert api_key_authenticate(plaintext=issued.plaintext).tenant.requests_per_minute != 7
    tenant = Tenant.objects.get(pk=issued.api_key.tenant_id)
    tenant.requests_per_minute = 7
    tenant.save()
    assert api_key_authenticate(plaintext=issued.plaintext).tenant.requests_per_minute == 7
    tenant_set_active(tenant=tenant, active=False)
    with pytest.raises(KeyRejected) as refused:
        api_key_authenticate(plaintext=issued.plaintext)
    assert refused.value.code == "tenant_suspended"


def test_a_change_made_by_another_process_sharing_the_cache_is_seen(issued):
    """Two caches of the same kind stand for two web processes: the token lives in the shared cache."""
    this_process, other_process = LookupCache("api-key"), LookupCache("api-key")
    load = lambda: ApiKey.objects.get(pk=issued.api_key.pk)  # noqa: E731
    assert this_process.get("k", load).revoked_at is None
    other_process.invalidate()  # what its signal handler does after its write
    ApiKey.objects.filter(pk=issued.api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    assert this_process.get("k", load).revoked_at is not None


def test_a_write_that_sends_no_signal_is_seen_once_the_time_limit_passes(issued, monkeypatch, settings):
    settings.TTS_LOOKUP_CACHE_SECONDS = 10
    now = [1000.0]
    monkeypatch.setattr(lookup_cache.time, "monotonic", lambda: now[0])
    api_key_authenticate(plaintext=issued.plaintext)
    ApiKey.objects.filter(pk=issued.api_key.pk).update(revoked_at="2026-01-01T00:00:00Z")  # no signal
    api_key_authenticate(plaintext=issued.plaintext)  # still the row read before: within the limit
    now[0] += 10
    with pytest.raises(KeyRejected):
        api_key_authenticate(plaintext=issued.plaintext)


def test_zero_seconds_turns_the_cache_off(issued, settings):
    settings.TTS_LOOKUP_CACHE_SECONDS = 0
    api_key_authenticate(plaintext=issued.plaintext)
    assert _queries(api_key_authenticate, plaintext=issued.plaintext) == 1


def test_a_cleared_cache_trusts_nothing_read_before(issued):
    from django.core.cache import cache

    api_key_authenticate(plaintext=issued.plaintext)
    cache.clear()  # Redis restarted empty, say: a change made meanwhile would have no token to replace
    assert _queries(api_key_authenticate, plaintext=issued.plaintext) == 1


def test_an_unknown_key_is_never_cached(db):
    cache = LookupCache("test-misses")
    loads = []
    assert cache.get("nope", lambda: loads.append(1)) is None
    assert cache.get("nope", lambda: loads.append(1)) is None
    assert len(loads) == 2


def test_the_cache_keeps_at_most_its_size(db):
    cache = LookupCache("test-size", max_entries=3)
    for key in range(5):
        cache.get(key, lambda key=key: key)
    loads = []
    assert cache.get(0, lambda: loads.append(0) or 0) == 0 and loads == [0]  # the oldest went first
    assert cache.get(4, lambda: loads.append(4) or 4) == 4 and loads == [0]


def test_a_deleted_voice_and_a_voice_changed_through_the_service_are_seen_at_once(db):
    voice = VoiceFactory()
    tenant = voice.tenant
    assert voice_get_for_synthesis(tenant=tenant, voice_id=voice.voice_id).name == voice.name
    voice.name = "Renamed"
    voice.save()
    assert voice_get_for_synthesis(tenant=tenant, voice_id=voice.voice_id).name == "Renamed"
    voice_delete(voice=voice)
    assert voice_get_for_synthesis(tenant=tenant, voice_id=voice.voice_id) is None


def test_a_write_goes_through_while_the_shared_cache_is_down(issued, monkeypatch):
    """Revoking a key during a Redis outage is still saved; requests meanwhile get 503 from their own checks."""
    from django.core.cache import cache

    def down(*args, **kwargs):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(cache, "set", down)
    api_key_revoke(api_key=ApiKey.objects.get(pk=issued.api_key.pk))
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
