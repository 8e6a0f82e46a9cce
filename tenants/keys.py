"""API key format and hashing.

A key reads `sk_<kind>_<lookup id><secret>`: the lookup id (12 chars) finds the row with one indexed query,
the secret (32 chars) is checked against a SHA-256 hash with a constant-time compare. Keys carry 190 bits
of randomness, so a fast hash is the right choice (a slow password hash would only add latency to every
request without adding security against guessing).
"""
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from django.conf import settings

KINDS = ("prod", "test", "admin")
LOOKUP_LENGTH = 12
SECRET_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits
_KEY_RE = re.compile(rf"^sk_(prod|test|admin)_([A-Za-z0-9]{{{LOOKUP_LENGTH}}})([A-Za-z0-9]{{{SECRET_LENGTH}}})$")


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    lookup_id: str
    secret: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_key(kind: str) -> tuple[str, ParsedKey]:
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}; expected one of {', '.join(KINDS)}")
    parsed = ParsedKey(kind=kind, lookup_id=_random(LOOKUP_LENGTH), secret=_random(SECRET_LENGTH))
    return f"sk_{kind}_{parsed.lookup_id}{parsed.secret}", parsed


def parse_key(plaintext: str) -> ParsedKey | None:
    match = _KEY_RE.match(plaintext or "")
    if not match:
        return None
    return ParsedKey(kind=match.group(1), lookup_id=match.group(2), secret=match.group(3))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


# WebSocket tokens (POST /v1/stream/token): 256 random bits, URL-safe, with a prefix unlike a key's so that
# neither can be taken for the other. Short-lived and single-use; only their hash is stored.
STREAM_TOKEN_PREFIX = "wst_"
_STREAM_TOKEN_RE = re.compile(rf"^{STREAM_TOKEN_PREFIX}[A-Za-z0-9_-]{{43}}$")


def generate_stream_token() -> str:
    return STREAM_TOKEN_PREFIX + secrets.token_urlsafe(32)  # 32 bytes: 43 characters


def stream_token_cache_key(token: str) -> str | None:
    """The cache entry a token is kept under, named by its SHA-256; None for anything not shaped like a token."""
    return f"stream-token:{hash_secret(token)}" if _STREAM_TOKEN_RE.match(token or "") else None


def operator_token_matches(presented: str) -> bool:
    """Whether `presented` is the operator token (settings.METRICS_TOKEN). Digests of equal length compared in
    constant time, so neither the token's content nor its length leaks through timing."""
    expected = settings.METRICS_TOKEN
    if not expected or not presented:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest())
