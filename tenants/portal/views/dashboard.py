from django.views.generic import TemplateView

from tenants import selectors
from tenants.portal.mixins import TenantPortalMixin


class DashboardView(TenantPortalMixin, TemplateView):
    """This month's quota, then the usage of the chosen period (?days=7|30|90) as charts and tables; the charts'
    data is the `dashboard-data` json_script element (portal/dashboard.js draws it with the vendored Chart.js)."""

    template_name = "portal/dashboard.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        try:
            days = int(self.request.GET.get("days", 30))
        except ValueError:
            days = 30
        if days not in selectors.DASHBOARD_PERIODS:
            days = 30
        context.update(
            quota=selectors.tenant_quota_status(tenant=self.tenant),
            dashboard=selectors.tenant_dashboard(tenant=self.tenant, days=days),
            periods=selectors.DASHBOARD_PERIODS,
        )
        return context
