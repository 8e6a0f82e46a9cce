from django.views.generic import TemplateView

from tenants import selectors
from tenants.portal.mixins import TenantPortalMixin


class DashboardView(TenantPortalMixin, TemplateView):
    template_name = "portal/dashboard.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        quota = self.tenant.monthly_character_quota
        used = selectors.tenant_characters_this_month(tenant=self.tenant)
        context.update(
            quota=quota,
            used=used,
            left=max(0, quota - used) if quota is not None else None,
            used_percent=min(100, round(100 * used / quota)) if quota else None,
        )
        return context
