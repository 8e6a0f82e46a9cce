from django.views.generic import ListView

from tenants import selectors
from tenants.portal.mixins import TenantPortalMixin


class AuditLogView(TenantPortalMixin, ListView):
    manager_required = True
    template_name = "portal/audit_log.html"
    context_object_name = "entries"
    paginate_by = 50

    def get_queryset(self):
        return selectors.tenant_audit_log(tenant=self.tenant)
