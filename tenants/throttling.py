"""Per-tenant request rate limits on django-ratelimit, backed by Django's cache (Redis in production).

Each tenant has its own minute and hour budgets; every authenticated API request counts against both.
"""
from django_ratelimit.core import get_usage
from rest_framework import throttling

GROUP = "tenant-requests"


def _tenant_key(group, request) -> str:
    return str(request.auth.tenant_id)


def tenant_rate_usage(request) -> list[dict]:
    """Count this request against the tenant's windows; the usage of each window, minute first."""
    tenant = request.auth.tenant
    windows = ((tenant.requests_per_minute, 60), (tenant.requests_per_hour, 3600))
    usages = []
    for limit, seconds in windows:
        usage = get_usage(
            request, group=f"{GROUP}:{seconds}", key=_tenant_key, rate=(limit, seconds), increment=True
        )
        if usage is not None:
            usages.append(usage)
    return usages


class TenantRateThrottle(throttling.BaseThrottle):
    def allow_request(self, request, view):
        if request.auth is None:  # unauthenticated requests are refused before they count
            return True
        limited = [usage for usage in tenant_rate_usage(request) if usage["should_limit"]]
        self._wait = max((usage["time_left"] for usage in limited), default=0)
        return not limited

    def wait(self):
        return max(1, self._wait)
