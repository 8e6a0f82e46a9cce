"""Pages of the navigation that are still to be built: each says so instead of a 404."""
from django.views.generic import TemplateView

from tenants.portal.mixins import TenantPortalMixin


class ComingSoonView(TenantPortalMixin, TemplateView):
    template_name = "portal/coming_soon.html"
    title = ""

    def get_context_data(self, **kwargs):
        return super().get_context_data(title=self.title, **kwargs)
