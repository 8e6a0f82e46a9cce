"""The production cache (callwaiting.redis_cache and the shared pool of callwaiting.redis_client) on a real Redis:
Django's cache semantics, counters in one round trip, and one connection pool per process whatever the thread."""
import os
import threading

import pytest
from django.core.cache import cache, caches

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production cache is Redis")


def test_a_counter_counts_as_djangos_does():
    with pytest.raises(ValueError):
        cache.incr("counter")  # no such key: Django's contract, which the rate limiter and slot counters rely on
    assert cache.get("counter") is None  # ... and the failed increment made none
    cache.add("counter", 0, timeout=60)
    assert [cache.incr("counter") for _ in range(3)] == [1, 2, 3]
    assert cache.incr("counter", 10) == 13 and cache.decr("counter", 4) == 9 and cache.get("counter") == 9


def test_an_increment_keeps_the_counters_expiry():
    cache.add("expiring", 0, timeout=60)
    cache.incr("expiring")
    ttl = cache._cache.get_client(cache.make_and_validate_key("expiring")).ttl(cache.make_and_validate_key("expiring"))
    assert 0 < ttl <= 60


def test_increments_from_many_threads_are_all_counted():
    cache.add("shared", 0, timeout=60)
    threads = [threading.Thread(target=lambda: [caches["default"].incr("shared") for _ in range(50)]) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("shared") == 400


def test_every_thread_s_cache_uses_the_one_connection_pool():
    """Django makes a cache object per thread (and a request under ASGI is a thread of its own)."""
    pools = []

    def read():
        caches["default"].get("anything")
        pools.append(caches["default"]._cache._get_connection_pool(False))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read()
    assert len({id(pool) for pool in pools}) == 1
