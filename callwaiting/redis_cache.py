"""Django's RedisCache (CACHES' BACKEND in production) with two changes that each save round trips on every
request before its first audio:

- one connection pool per Redis URL per process. Django makes a cache object, with a pool of its own, per
  thread, and under ASGI each request runs in a thread of its own: every request opened a connection to Redis
  (connect, HELLO, SELECT, two CLIENT SETINFO) before its first command. redis-py's pools are thread-safe and
  start afresh in a forked child;
- counters increment in one atomic script. Django's client takes two round trips, EXISTS then INCRBY (and the
  key may expire in between); rate limits and stream counters increment on every request."""
import threading

import redis
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient

_INCR_IF_EXISTS = (
    "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end return false"
)


class SharedConnectionPool(redis.ConnectionPool):
    _shared: dict[str, "SharedConnectionPool"] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **options):
        with cls._lock:
            if url not in cls._shared:
                cls._shared[url] = super().from_url(url, **options)
            return cls._shared[url]


class CacheClient(RedisCacheClient):
    def __init__(self, servers, pool_class=None, **options):
        super().__init__(servers, pool_class=pool_class or SharedConnectionPool, **options)

    def incr(self, key, delta):
        value = self.get_client(key, write=True).eval(_INCR_IF_EXISTS, 1, key, delta)
        if value is None:
            raise ValueError(f"Key '{key}' not found.")  # what Django's client raises
        return value


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = CacheClient
