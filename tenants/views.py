import re
from datetime import datetime, time, timedelta, timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework.response import Response

from callwaiting.errors import ApiError
from tenants import selectors
from tenants.api import ANY_SCOPE, TenantApiView

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


class TenantStatsView(TenantApiView):
    """GET /v1/tenant/stats?start=YYYY-MM-DD&end=YYYY-MM-DD (or ?days=N): usage aggregates for the caller."""

    required_scope = ANY_SCOPE  # any key of the tenant may read the tenant's own usage

    def get(self, request):
        start, end = stats_period(request.query_params)
        return Response(selectors.tenant_usage_stats(tenant=self.tenant, start=start, end=end))
