import re
from datetime import datetime, time, timedelta, timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.response import Response

from callwaiting.errors import ApiError
from callwaiting.openapi import error_responses
from tenants import selectors
from tenants.api import ANY_SCOPE, TenantApiView
from tenants.serializers import TenantStatsSerializer

MAX_STATS_DAYS = 366


_DAYS = re.compile(r"[0-9]{1,4}")


def _invalid(name: str, value: str, why: str) -> ApiError:
    shown = value if len(value) <= 40 else f"{value[:40]}..."
    return ApiError("invalid_request", f"{name}={shown!r} {why}.")


def _parse_bound(name: str, value: str, *, end: bool) -> datetime:
    """A date means the whole UTC day (an end date is included); a datetime is taken as given (UTC if naive).
    Strict: an impossible date, or one whose day boundary falls outside what a datetime holds, is a 400 that
    names the parameter."""
    try:
        parsed_date = parse_date(value)  # ValueError: well-formed but impossible, e.g. 2026-13-45
        if parsed_date is not None:
            day = parsed_date + timedelta(days=1) if end else parsed_date  # OverflowError after 9999-12-31
            return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)
        parsed = parse_datetime(value)
        if parsed is not None:
            # In UTC, as the database compares it; OverflowError for an offset that leaves years 1-9999.
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)).astimezone(dt_timezone.utc)
    except ValueError:
        raise _invalid(name, value, "is not a valid date (YYYY-MM-DD) or ISO 8601 datetime") from None
    except OverflowError:
        raise _invalid(name, value, "is out of the range of dates this service handles") from None
    raise _invalid(name, value, "is not an ISO 8601 date (YYYY-MM-DD) or datetime")


def stats_period(params) -> tuple[datetime, datetime]:
    now = timezone.now()
    end = _parse_bound("end", params["end"], end=True) if params.get("end") else now
    if params.get("start"):
        start = _parse_bound("start", params["start"], end=False)
    else:
        days = params.get("days", "30")
        if not _DAYS.fullmatch(days) or not 1 <= int(days) <= MAX_STATS_DAYS:
            raise _invalid("days", days, f"is not a whole number from 1 to {MAX_STATS_DAYS}")
        try:
            start = end - timedelta(days=int(days))
        except OverflowError:
            raise _invalid("end", params["end"], f"leaves no room for {days} days before it") from None
    if start >= end:
        raise ApiError("invalid_request", "start must be before end.")
    if end - start > timedelta(days=MAX_STATS_DAYS):
        raise ApiError("invalid_request", f"The period from start to end may span at most {MAX_STATS_DAYS} days.")
    return start, end


# What start and end accept, for the API schema (_parse_bound is the judge: a well-formed date may not exist).
_DATE_OR_DATETIME = {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+(Z|[+-][0-9:]+)?)?$"}


class TenantStatsView(TenantApiView):
    """GET /v1/tenant/stats?start=YYYY-MM-DD&end=YYYY-MM-DD (or ?days=N): usage aggregates for the caller."""

    required_scope = ANY_SCOPE  # any key of the tenant may read the tenant's own usage

    @extend_schema(
        operation_id="tenant_stats", summary="The tenant's usage", tags=["tenant"],
        description="Aggregates of the caller's usage rows in a period (at most 366 days): totals, per UTC day, "
                    "per voice, failures per error code, the monthly quota and the tenant's limits.",
        parameters=[
            OpenApiParameter("start", _DATE_OR_DATETIME, description="YYYY-MM-DD (the day's start, UTC) or an "
                             "ISO 8601 datetime. Default: `days` before end."),
            OpenApiParameter("end", _DATE_OR_DATETIME, description="YYYY-MM-DD (that day included) or an ISO 8601 "
                             "datetime. Default: now."),
            OpenApiParameter("days", {"type": "integer", "minimum": 1, "maximum": MAX_STATS_DAYS},
                             description="Used without start.", default=30),
        ],
        responses={200: TenantStatsSerializer, **error_responses("invalid_request")},
        examples=[OpenApiExample("stats", response_only=True, value={
            "tenant_id": "acme",
            "period": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-08T00:00:00+00:00"},
            "totals": {"requests": 120, "characters": 9600, "audio_seconds": 612.4, "errors": 2,
                       "client_disconnects": 1, "time_to_first_audio_ms": {"avg": 182.5, "max": 410.0}},
            "by_day": [{"date": "2026-11-03", "requests": 120, "characters": 9600, "audio_seconds": 612.4,
                        "errors": 2, "client_disconnects": 1, "time_to_first_audio_ms": {"avg": 182.5, "max": 410.0}}],
            "by_voice": [{"voice_id": "default", "requests": 120, "characters": 9600, "audio_seconds": 612.4,
                          "errors": 2, "client_disconnects": 1,
                          "time_to_first_audio_ms": {"avg": 182.5, "max": 410.0}}],
            "errors_by_code": {"voice_not_found": 2},
            "quota": {"monthly_characters": 1000000, "used_this_month": 48210},
            "limits": {"requests_per_minute": 1000, "requests_per_hour": 10000, "max_concurrent_streams": 50},
        })],
    )
    def get(self, request):
        start, end = stats_period(request.query_params)
        return Response(selectors.tenant_usage_stats(tenant=self.tenant, start=start, end=end))
