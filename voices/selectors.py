"""Reads over voices; every query starts from the tenant resolved by authentication."""
from django.db.models import Q, QuerySet

from callwaiting.lookup_cache import LookupCache
from tenants.models import Tenant
from voices.models import Voice


def voices_visible_to(*, tenant: Tenant) -> QuerySet[Voice]:
    """The preloaded voices and the tenant's own, never another tenant's."""
    return Voice.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant)).order_by("-is_preloaded", "voice_id")


def voice_get_for_tenant(*, tenant: Tenant, voice_id: str) -> Voice | None:
    """The tenant's own voice wins over a preloaded one with the same id."""
    candidates = list(Voice.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant), voice_id=voice_id))
    return next((v for v in candidates if v.tenant_id == tenant.pk), candidates[0] if candidates else None)


# The voice a synthesis names, by (tenant, voice id): read by every request (callwaiting.lookup_cache).
VOICE_ROWS: LookupCache[Voice] = LookupCache("voice")


def voice_get_for_synthesis(*, tenant: Tenant, voice_id: str) -> Voice | None:
    """voice_get_for_tenant, from this process's lookup cache while current. The instance is shared between
    requests: read it, never change it (the voice views read their own with voice_get_for_tenant)."""
    return VOICE_ROWS.get((tenant.pk, voice_id), lambda: voice_get_for_tenant(tenant=tenant, voice_id=voice_id))
