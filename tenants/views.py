from datetime import datetime, time, timedelta, timezone as dt_timezone

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework.response import Response

from callwaiting.errors import ApiError
from tenants import selectors
from tenants.api import TenantApiView

MAX_STATS_DAYS = 366


def _parse_bound(name: str, value: str, *, end: bool) -> datetime:
    """A date means the whole day (an end date is included); a datetime is taken as given (UTC if naive)."""
    parsed_date = parse_date(value)
    if parsed_date is not None:
        day = parsed_date + timedelta(days=1) if end else parsed_date
        return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApiError("invalid_period", f"{name}={value!r} is not an ISO 8601 date or datetime.")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt_timezone.utc)


def stats_period(params) -> tuple[datetime, datetime]:
    now = timezone.now()
    end = _parse_bound("end", params["end"], end=True) if params.get("end") else now
    if params.get("start"):
        start = _parse_bound("start", params["start"], end=False)
    else:
        days = params.get("days", "30")
        if not days.isdigit() or not 1 <= int(days) <= MAX_STATS_DAYS:
            raise ApiError("invalid_period", f"days must be a whole number from 1 to {MAX_STATS_DAYS}.")
        start = end - timedelta(days=int(days))
    if start >= end:
        raise ApiError("invalid_period", "start must be before end.")
    if end - start > timedelta(days=MAX_STATS_DAYS):
        raise ApiError("invalid_period", f"The period may span at most {MAX_STATS_DAYS} days.")
    return start, end


class TenantStatsView(TenantApiView):
    """GET /v1/tenant/stats?start=YYYY-MM-DD&end=YYYY-MM-DD (or ?days=N): usage aggregates for the caller."""

    def get(self, request):
        start, end = stats_period(request.query_params)
        return Response(selectors.tenant_usage_stats(tenant=self.tenant, start=start, end=end))
