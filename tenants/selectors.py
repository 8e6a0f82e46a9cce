"""Reads over tenants, keys and usage."""
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db.models import Avg, Count, Max, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from callwaiting.lookup_cache import LookupCache
from tenants import keys
from tenants.models import ApiKey, AuditLogEntry, Invitation, Tenant, TenantMembership, UsageRecord


# Each key's row with its tenant's, by lookup id: read by every request (callwaiting.lookup_cache). The
# instances are shared between requests; only api_key_mark_used changes one (its last-used time, in place).
API_KEY_ROWS: LookupCache[ApiKey] = LookupCache("api-key")


class KeyRejected(Exception):
    """Why a presented key does not authenticate; the message is safe to show to the caller."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def api_key_authenticate(*, plaintext: str) -> ApiKey:
    parsed = keys.parse_key(plaintext)
    if parsed is None:
        raise KeyRejected("malformed_api_key", "API key is malformed; expected sk_<prod|test|admin>_...")
    api_key = API_KEY_ROWS.get(
        parsed.lookup_id, lambda: ApiKey.objects.select_related("tenant").filter(lookup_id=parsed.lookup_id).first()
    )
    # The secret and the key's state are checked on every request, cached row or not.
    if api_key is None or api_key.kind != parsed.kind or not keys.secret_matches(parsed.secret, api_key.secret_hash):
        raise KeyRejected("invalid_api_key", "API key is not valid.")
    return _usable(api_key)


def api_key_get_usable(*, api_key_id: int) -> ApiKey:
    """The key as it is now in the database, if it may still be used: how a WebSocket connection checks its key
    again (revoked, expired or suspended since the handshake), whichever way it authenticated."""
    api_key = ApiKey.objects.select_related("tenant").filter(pk=api_key_id).first()
    if api_key is None:
        raise KeyRejected("invalid_api_key", "API key is not valid.")
    return _usable(api_key)


def _usable(api_key: ApiKey) -> ApiKey:
    if api_key.is_revoked:
        raise KeyRejected("api_key_revoked", "API key has been revoked.")
    if api_key.is_expired():
        raise KeyRejected("api_key_expired", "API key has expired.")
    if not api_key.tenant.is_active:
        raise KeyRejected("tenant_suspended", "Tenant is suspended.")
    return api_key


def usage_get_by_request_id(*, tenant: Tenant, request_id) -> UsageRecord | None:
    return UsageRecord.objects.filter(tenant=tenant, request_id=request_id).first()


def month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.astimezone(dt_timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime | None = None) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def tenant_characters_this_month(*, tenant: Tenant) -> int:
    """Characters billed this calendar month (UTC). Failed requests are not billed, nor phrase-cache hits for a
    tenant whose plan does not bill them (Tenant.phrase_cache_billed, as it is set when the month is counted)."""
    rows = UsageRecord.objects.filter(tenant=tenant, created_at__gte=month_start()).exclude(status=UsageRecord.Status.ERROR)
    if not tenant.phrase_cache_billed:
        rows = rows.exclude(cached=True)
    return rows.aggregate(total=Sum("characters"))["total"] or 0


def _usage_aggregates() -> dict:
    return dict(
        # First: once the `characters` aggregate below exists, "characters" names it, not the field.
        cached_characters=Sum("characters", filter=Q(cached=True)),
        requests=Count("id"),
        characters=Sum("characters"),
        audio_seconds=Sum("audio_seconds"),
        errors=Count("id", filter=Q(status=UsageRecord.Status.ERROR)),
        disconnects=Count("id", filter=Q(status=UsageRecord.Status.CLIENT_DISCONNECTED)),
        cached=Count("id", filter=Q(cached=True)),
        ttfa_avg=Avg("time_to_first_audio_ms"),
        ttfa_max=Max("time_to_first_audio_ms"),
    )


def _clean(row: dict) -> dict:
    return {
        "requests": row["requests"] or 0,
        "characters": row["characters"] or 0,
        "audio_seconds": round(row["audio_seconds"] or 0.0, 3),
        "errors": row["errors"] or 0,
        "client_disconnects": row["disconnects"] or 0,
        # Served from the phrase cache (no model worker ran); included in the counts above.
        "cached": row["cached"] or 0,
        "cached_characters": row["cached_characters"] or 0,
        # The tenant's own latency (what /v1/metrics shows operators across all tenants).
        "time_to_first_audio_ms": {
            "avg": round(row["ttfa_avg"], 2) if row["ttfa_avg"] is not None else None,
            "max": round(row["ttfa_max"], 2) if row["ttfa_max"] is not None else None,
        },
    }


def tenant_usage_stats(*, tenant: Tenant, start: datetime, end: datetime) -> dict:
    """Aggregates of the tenant's usage rows in [start, end): totals, per UTC day and per voice."""
    rows = UsageRecord.objects.filter(tenant=tenant, created_at__gte=start, created_at__lt=end)
    aggregates = _usage_aggregates()
    by_day = (
        rows.annotate(day=TruncDate("created_at", tzinfo=dt_timezone.utc))
        .values("day")
        .annotate(**aggregates)
        .order_by("day")
    )
    by_voice = rows.values("voice_id").annotate(**aggregates).order_by("voice_id")
    quota = tenant.monthly_character_quota
    return {
        "tenant_id": tenant.slug,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "totals": _clean(rows.aggregate(**aggregates)),
        "by_day": [{"date": row["day"].isoformat(), **_clean(row)} for row in by_day],
        "by_voice": [{"voice_id": row["voice_id"], **_clean(row)} for row in by_voice],
        "errors_by_code": {
            row["error_code"]: row["count"]
            for row in rows.filter(status=UsageRecord.Status.ERROR)
            .values("error_code")
            .annotate(count=Count("id"))
            .order_by("error_code")
        },
        "quota": {
            "monthly_characters": quota,
            "used_this_month": tenant_characters_this_month(tenant=tenant),
            "cached_characters_billed": tenant.phrase_cache_billed,
        },
        "limits": {
            "requests_per_minute": tenant.requests_per_minute,
            "requests_per_hour": tenant.requests_per_hour,
            "max_concurrent_streams": tenant.max_concurrent_streams,
        },
    }


def tenant_month_summary(*, tenant: Tenant) -> dict:
    """This calendar month's (UTC) usage of a tenant as an operator reads it: all requests, billed characters,
    audio minutes, errors, and the quota used and left (None left when the tenant has no quota)."""
    start = month_start()
    totals = _clean(UsageRecord.objects.filter(tenant=tenant, created_at__gte=start).aggregate(**_usage_aggregates()))
    used = tenant_characters_this_month(tenant=tenant)
    quota = tenant.monthly_character_quota
    return {
        "month": start.strftime("%B %Y"),
        "requests": totals["requests"],
        "characters": used,
        "audio_minutes": round(totals["audio_seconds"] / 60, 1),
        "errors": totals["errors"],
        "quota": quota,
        "quota_used": used,
        "quota_left": None if quota is None else max(quota - used, 0),
        "quota_used_percent": None if not quota else round(100 * used / quota, 1),
    }


# --- the tenant-staff portal ------------------------------------------------------------------------------------

def user_memberships(*, user):
    """The tenants a staff user belongs to (active or suspended), by name."""
    return TenantMembership.objects.filter(user=user).select_related("tenant").order_by("tenant__name", "tenant__slug")


def api_keys_with_usage_this_month(*, tenant: Tenant):
    """The tenant's keys, newest first, each with `requests_this_month` and `characters_this_month`."""
    this_month = Q(usage_records__created_at__gte=month_start())
    return tenant.api_keys.annotate(
        requests_this_month=Count("usage_records", filter=this_month),
        characters_this_month=Sum("usage_records__characters", filter=this_month),
    ).order_by("revoked_at", "-created_at")


def tenant_members(*, tenant: Tenant):
    return tenant.memberships.select_related("user").order_by("user__email")


def tenant_pending_invitations(*, tenant: Tenant):
    return tenant.invitations.filter(accepted_at__isnull=True, expires_at__gt=timezone.now()).order_by("-created_at")


def invitation_by_token(*, token: str) -> Invitation | None:
    """The invitation a link's token opens, if it can still be used."""
    invitation = Invitation.objects.select_related("tenant").filter(token_hash=keys.hash_secret(token or "")).first()
    return invitation if invitation is not None and invitation.is_usable() else None


def tenant_audit_log(*, tenant: Tenant):
    return AuditLogEntry.objects.filter(tenant=tenant)


# --- the portal's dashboard and usage log -----------------------------------------------------------------------

DASHBOARD_PERIODS = (7, 30, 90)  # days the dashboard may show, ending today (UTC)


def _chart_row(row: dict) -> dict:
    """One day's, voice's or key's aggregates as the dashboard charts them."""
    clean = _clean(row)
    return {
        "requests": clean["requests"],
        "characters": clean["characters"],
        "audio_minutes": round(clean["audio_seconds"] / 60, 2),
        "errors": clean["errors"],
        "cached": clean["cached"],
        "ttfa_avg_ms": clean["time_to_first_audio_ms"]["avg"],
    }


def _key_label(name: str | None, last_four: str | None) -> str:
    if last_four is None:
        return "(deleted key)"
    return f"{name or 'unnamed'} …{last_four}"


def tenant_dashboard(*, tenant: Tenant, days: int = 30, today=None) -> dict:
    """The tenant's usage over the last `days` days up to and including today (UTC): totals, a row for every day
    (days without requests are zeros, so the charts' axes are even), by voice and by API key (most requests
    first); the same aggregates as /v1/tenant/stats. Time to first audio is the average of the requests that
    had one."""
    today = today or timezone.now().astimezone(dt_timezone.utc).date()
    first_day = today - timedelta(days=days - 1)
    start = datetime.combine(first_day, datetime.min.time(), tzinfo=dt_timezone.utc)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=dt_timezone.utc)
    rows = UsageRecord.objects.filter(tenant=tenant, created_at__gte=start, created_at__lt=end)
    aggregates = _usage_aggregates()
    per_day = {
        row["day"]: _chart_row(row)
        for row in rows.annotate(day=TruncDate("created_at", tzinfo=dt_timezone.utc)).values("day")
        .annotate(**aggregates).order_by("day")
    }
    empty = _chart_row({name: None for name in aggregates})
    by_voice = rows.values("voice_id").annotate(**aggregates).order_by("-requests", "voice_id")
    by_key = rows.values("api_key_id", "api_key__name", "api_key__last_four").annotate(**aggregates).order_by(
        "-requests", "api_key_id"
    )
    return {
        "days": days,
        "start": first_day.isoformat(),
        "end": today.isoformat(),
        "totals": _chart_row(rows.aggregate(**aggregates)),
        "by_day": [
            {"date": (first_day + timedelta(days=n)).isoformat(), **per_day.get(first_day + timedelta(days=n), empty)}
            for n in range(days)
        ],
        "by_voice": [{"voice_id": row["voice_id"] or "(none)", **_chart_row(row)} for row in by_voice],
        "by_key": [
            {"api_key": _key_label(row["api_key__name"], row["api_key__last_four"]), **_chart_row(row)}
            for row in by_key
        ],
    }


def tenant_quota_status(*, tenant: Tenant) -> dict:
    """This month's quota as the dashboard shows it: used, left, percent and a level, "ok", "warning" (from the
    lowest TTS_QUOTA_ALERT_PERCENTS threshold, 80% by default) or "exhausted" (100%); level "none" without a
    quota."""
    summary = tenant_month_summary(tenant=tenant)
    percent = summary["quota_used_percent"]
    warn_from = min([p for p in settings.TTS_QUOTA_ALERT_PERCENTS if p < 100] or [80])
    if percent is None:
        level = "none"
    elif percent >= 100:
        level = "exhausted"
    elif percent >= warn_from:
        level = "warning"
    else:
        level = "ok"
    return {**summary, "level": level, "warn_from_percent": warn_from,
            "resets_at": next_month_start()}


def tenant_usage_log(*, tenant: Tenant):
    """The tenant's usage rows, newest first, with their keys: what the usage page filters and exports."""
    return UsageRecord.objects.filter(tenant=tenant).select_related("api_key").order_by("-created_at", "-id")


def tenant_usage_voice_ids(*, tenant: Tenant) -> list[str]:
    """The voice ids the tenant's usage rows name (its own voices may be gone since), for the usage filter."""
    return list(
        UsageRecord.objects.filter(tenant=tenant).exclude(voice_id="").values_list("voice_id", flat=True)
        .distinct().order_by("voice_id")
    )
