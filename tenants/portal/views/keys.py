from django.contrib import messages
from django.core.cache import cache
from django.shortcuts import redirect, render
from django.views import View
from django.views.decorators.cache import never_cache
from django.utils.decorators import method_decorator

from tenants import selectors, services
from tenants.models import ApiKey
from tenants.portal.forms import ApiKeyCreateForm
from tenants.portal.mixins import TenantPortalMixin


@method_decorator(never_cache, name="dispatch")  # the page that shows a new key's plaintext must not be cached
class ApiKeyListView(TenantPortalMixin, View):
    """The tenant's keys; owners and admins create one here (POST) and see its plaintext on this answer only."""

    def get(self, request):
        return self._page(request, ApiKeyCreateForm())

    def post(self, request):
        self.require_manager()
        form = ApiKeyCreateForm(request.POST)
        if not form.is_valid():
            return self._page(request, form, status=400)
        fields = dict(form.cleaned_data)
        form_id = fields.pop("form_id")
        if form_id and not cache.add(f"portal:key-form:{self.tenant.pk}:{form_id}", 1, timeout=24 * 3600):
            messages.info(request, "That form made its key already (its plaintext was shown once, on that answer). "
                                   "Nothing new was created; fill in the form again for another key.")
            return redirect("portal:api-keys")
        issued = services.api_key_issue(tenant=self.tenant, actor=request.user, **fields)
        return self._page(request, ApiKeyCreateForm(), issued=issued, status=201)

    def _page(self, request, form, issued=None, status=200):
        context = {
            "keys": selectors.api_keys_with_usage_this_month(tenant=self.tenant),
            "form": form,
            "issued": issued,
            "is_manager": self.is_manager,
        }
        return render(request, "portal/api_keys.html", context, status=status)


class ApiKeyRevokeView(TenantPortalMixin, View):
    """GET: the confirmation; POST: revoke. Owners and admins only."""

    def get(self, request, pk):
        api_key = self.tenant_object_or_404(ApiKey, pk=pk)
        self.require_manager()
        return render(request, "portal/api_key_revoke.html", {"api_key": api_key})

    def post(self, request, pk):
        api_key = self.tenant_object_or_404(ApiKey, pk=pk)
        self.require_manager()
        services.api_key_revoke(api_key=api_key, actor=request.user)
        messages.success(request, f"Key “{api_key.name or api_key.display_prefix}” is revoked: the API refuses it now.")
        return redirect("portal:api-keys")
