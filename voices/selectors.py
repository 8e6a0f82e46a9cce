"""Reads over voices; every query starts from the tenant resolved by authentication."""
from django.db.models import Q, QuerySet

from tenants.models import Tenant
from voices.models import Voice


def voices_visible_to(*, tenant: Tenant) -> QuerySet[Voice]:
    """The preloaded voices and the tenant's own, never another tenant's."""
    return Voice.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant)).order_by("-is_preloaded", "voice_id")


def voice_get_for_tenant(*, tenant: Tenant, voice_id: str) -> Voice | None:
    """The tenant's own voice wins over a preloaded one with the same id."""
    candidates = list(Voice.objects.filter(Q(tenant__isnull=True) | Q(tenant=tenant), voice_id=voice_id))
    return next((v for v in candidates if v.tenant_id == tenant.pk), candidates[0] if candidates else None)
