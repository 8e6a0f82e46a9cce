"""Writes over tenants, keys and usage."""
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from tenants import keys, selectors
from tenants.models import ApiKey, Scope, Tenant, UsageRecord

# last_used_at is informational: refreshing it at most once a minute keeps a write off every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str  # shown to the caller exactly once, never stored


def tenant_create(*, slug: str, name: str = "", **limits) -> Tenant:
    tenant = Tenant(slug=slug, name=name or slug, **limits)
    tenant.full_clean()
    tenant.save()
    return tenant


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    tenant.is_active = active
    tenant.save(update_fields=["is_active"])
    return tenant


def validate_scopes(scopes) -> list[str]:
    valid = set(Scope.values)
    unknown = [scope for scope in scopes if scope not in valid]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; expected any of {', '.join(Scope.values)}")
    # Keep the order stable and drop repeats.
    return [scope for scope in Scope.values if scope in set(scopes)]


def api_key_issue(*, tenant: Tenant, kind: str, scopes, name: str = "", expires_at=None) -> IssuedKey:
    scopes = validate_scopes(scopes)
    plaintext, parsed = keys.generate_key(kind)
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        kind=kind,
        lookup_id=parsed.lookup_id,
        secret_hash=keys.hash_secret(parsed.secret),
        last_four=plaintext[-4:],
        scopes=scopes,
        expires_at=expires_at,
    )
    return IssuedKey(api_key=api_key, plaintext=plaintext)


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


@dataclass(frozen=True)
class IssuedStreamToken:
    token: str  # shown to the caller once; the cache holds only its hash
    expires_in: int  # seconds


_STREAM_TOKEN_REFUSED = (
    "The stream token is invalid, expired or already used; get a new one from POST /v1/stream/token."
)


def stream_token_issue(*, api_key: ApiKey) -> IssuedStreamToken:
    """A single-use token that opens one WebSocket connection (/v1/stream?token=...) as `api_key`, for
    browsers, which cannot set an Authorization header on a WebSocket. It lives in the cache (Redis in
    production: any web process can redeem it) under its hash, and expires after TTS_STREAM_TOKEN_SECONDS."""
    token = keys.generate_stream_token()
    lifetime = settings.TTS_STREAM_TOKEN_SECONDS
    cache.set(keys.stream_token_cache_key(token), api_key.pk, timeout=lifetime)
    return IssuedStreamToken(token=token, expires_in=lifetime)


def stream_token_redeem(*, token: str) -> ApiKey:
    """The key a token was issued for, now that it is used up; raises selectors.KeyRejected for an unknown,
    expired or already used token, and for a key that is no longer usable (revoked since issuance...).
    Exactly one redemption wins: the cache's delete reports whether it removed the entry (Redis DEL is atomic),
    so of two connections racing with one token, the second finds nothing to delete."""
    cache_key = keys.stream_token_cache_key(token)
    api_key_id = cache.get(cache_key) if cache_key else None
    if api_key_id is None or not cache.delete(cache_key):
        raise selectors.KeyRejected("invalid_stream_token", _STREAM_TOKEN_REFUSED)
    return selectors.api_key_get_usable(api_key_id=api_key_id)


# A retry keeps the best outcome of its attempts: a failure after a success must not unbill it.
_OUTCOME_RANK = {UsageRecord.Status.ERROR: 0, UsageRecord.Status.CLIENT_DISCONNECTED: 1, UsageRecord.Status.SUCCESS: 2}


def usage_record(*, request_id, tenant_id: int, api_key_id: int | None, **fields) -> UsageRecord:
    """Write the request's usage row. A retry (the tenant's same request id) updates that row instead of adding
    one, so it is billed once; the row keeps the best outcome of its attempts and counts them."""
    with transaction.atomic():
        row, created = UsageRecord.objects.select_for_update().get_or_create(
            tenant_id=tenant_id, request_id=request_id, defaults={"api_key_id": api_key_id, **fields}
        )
        if created:
            return row
        row.attempts += 1
        if _OUTCOME_RANK[fields["status"]] >= _OUTCOME_RANK[row.status]:
            for name, value in {"api_key_id": api_key_id, **fields}.items():
                if value or name != "request_fingerprint":  # an early refusal knows no fingerprint
                    setattr(row, name, value)
        row.save()
        return row
