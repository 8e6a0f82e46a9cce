"""Per-tenant request rate limits on django-ratelimit, backed by Django's cache (Redis in production).

Each tenant has its own minute and hour budgets; every authenticated API request (and every `synthesize`
message on the WebSocket API, and every playground or sample request in the portal) counts against both.
"""
from django_ratelimit.core import get_usage
from rest_framework import throttling

from tenants.models import ApiKey, Tenant

GROUP = "tenant-requests"


def _tenant_key(group, tenant: Tenant) -> str:
    return str(tenant.pk)


def tenant_rate_usage(api_key: ApiKey) -> list[dict]:
    """Count one request by the key's tenant against the tenant's windows; the usage of each window, minute
    first."""
    return tenant_rate_usage_for(api_key.tenant)


def tenant_rate_usage_for(tenant: Tenant) -> list[dict]:
    """tenant_rate_usage for a request of the tenant's staff in the portal (no key). django-ratelimit hands its
    `request` argument only to the key function, so the tenant stands in for it: WebSocket messages have no HTTP
    request."""
    windows = ((tenant.requests_per_minute, 60), (tenant.requests_per_hour, 3600))
    usages = []
    for limit, seconds in windows:
        usage = get_usage(tenant, group=f"{GROUP}:{seconds}", key=_tenant_key, rate=(limit, seconds), increment=True)
        if usage is not None:
            usages.append(usage)
    return usages


def tenant_rate_wait(api_key: ApiKey) -> int:
    """Count one request; 0 when it is within the tenant's limits, else the seconds until it would be."""
    return tenant_rate_wait_for(api_key.tenant)


def tenant_rate_wait_for(tenant: Tenant) -> int:
    limited = [usage for usage in tenant_rate_usage_for(tenant) if usage["should_limit"]]
    return max(1, *(usage["time_left"] for usage in limited)) if limited else 0


class TenantRateThrottle(throttling.BaseThrottle):
    def allow_request(self, request, view):
        if request.auth is None:  # unauthenticated requests are refused before they count
            return True
        self._wait = tenant_rate_wait(request.auth)
        return not self._wait

    def wait(self):
        return self._wait
