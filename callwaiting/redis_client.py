"""How every Redis client of the service connects, and which errors mean "Redis cannot be reached".

A Redis outage must never turn into a 500 or a dead process: clients fail fast while Redis is down (the
callers answer 503 with Retry-After, or retry in their loops), and heal by themselves once it is back.
After a restart every pooled connection is stale; one retry on a connection error reconnects it instead of
failing the request that happens to pick it up (measured: without it, the first command on each stale
connection of redis.asyncio raised "Connection closed by server" after Redis came back).
"""
import redis.exceptions

# What a client raises while Redis is down, restarting (LOADING) or unreachable.
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

# Seconds a client waits to connect: a partitioned Redis answers nothing, and a request must not hang on it.
_CONNECT_TIMEOUT = 1.0
# A command that gets no answer for this long fails (Redis hangs or the network is partitioned). Cache
# commands never block; the job queue's blocking reads wait at most 1 s, well under its timeout.
_SYNC_TIMEOUT = 2.0
_ASYNC_TIMEOUT = 5.0
# Two retries 20-80 ms apart: enough for a stale pooled connection (the first retry reconnects), short enough
# that a request during an outage gets its 503 at once.
_RETRIES = 2


def _backoff():
    from redis.backoff import ExponentialBackoff

    return ExponentialBackoff(cap=0.1, base=0.02)


def sync_options() -> dict:
    """Connection options for redis-py's blocking client (Django's RedisCache OPTIONS)."""
    from redis.retry import Retry

    return {
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": _SYNC_TIMEOUT,
        "retry": Retry(_backoff(), _RETRIES),
        "retry_on_error": list(REDIS_ERRORS),
    }


def async_options() -> dict:
    """Connection options for redis.asyncio (the job queue and inboxes)."""
    from redis.asyncio.retry import Retry

    return {
        "socket_connect_timeout": _CONNECT_TIMEOUT,
        "socket_timeout": _ASYNC_TIMEOUT,
        "retry": Retry(_backoff(), _RETRIES),
        "retry_on_error": list(REDIS_ERRORS),
    }


def is_redis_error(exc: BaseException) -> bool:
    return isinstance(exc, REDIS_ERRORS)

