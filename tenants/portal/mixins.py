"""What every portal page stands on: login, membership of the current tenant, the role, and lookups that start
from the current tenant (tenant isolation is structural: another tenant's object is a 404, never a 403).

    class KeyRevokeView(TenantPortalMixin, View):
        manager_required = True                      # owners and admins only; members get the 403 page
        def post(self, request, pk):
            api_key = self.tenant_object_or_404(ApiKey, pk=pk)   # ApiKey.objects.filter(tenant=self.tenant)...

Function views use `@portal_view()` / `@portal_view(manager_required=True)`, which set request.membership and
request.tenant the same way."""
import functools

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, render

from tenants.portal.context import current_membership

MANAGERS_ONLY = "Only the tenant's owners and admins may do this."


def _resolve(request, manager_required: bool):
    """(membership, None) for a member of the current tenant; else (None, the response to give instead)."""
    if not request.user.is_authenticated:
        return None, redirect_to_login(request.get_full_path())
    membership = current_membership(request)
    if membership is None:
        return None, render(request, "portal/no_tenant.html", status=403)
    if manager_required and not membership.is_manager:
        raise PermissionDenied(MANAGERS_ONLY)
    return membership, None


def membership_or_refusal(request, manager_required: bool = False):
    """The same checks for a view that can use neither the mixin nor the decorator (an async view runs them in a
    thread): (membership, None), or (None, the response to give instead)."""
    return _resolve(request, manager_required)


def tenant_queryset(model_or_queryset, tenant):
    queryset = getattr(model_or_queryset, "_default_manager", model_or_queryset)
    return queryset.filter(tenant=tenant)


class TenantPortalMixin:
    """For class-based portal views: sets self.membership, self.tenant, self.role before the handler runs."""

    manager_required = False  # True: owners and admins only

    def dispatch(self, request, *args, **kwargs):
        membership, refusal = _resolve(request, self.manager_required)
        if refusal is not None:
            return refusal
        self.membership = membership
        self.tenant = membership.tenant
        self.role = membership.role
        return super().dispatch(request, *args, **kwargs)

    @property
    def is_manager(self) -> bool:
        return self.membership.is_manager

    def require_manager(self) -> None:
        """For a view whose reads are open to members but whose writes are not."""
        if not self.membership.is_manager:
            raise PermissionDenied(MANAGERS_ONLY)

    def tenant_queryset(self, model_or_queryset):
        """`model`'s rows (or a queryset's) of the current tenant only."""
        return tenant_queryset(model_or_queryset, self.tenant)

    def tenant_object_or_404(self, model_or_queryset, **lookup):
        """One of the current tenant's objects; another tenant's (or none) is a 404."""
        return get_object_or_404(self.tenant_queryset(model_or_queryset), **lookup)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs) if hasattr(super(), "get_context_data") else dict(kwargs)
        context.update(tenant=self.tenant, membership=self.membership, is_manager=self.is_manager)
        return context


def portal_view(manager_required: bool = False):
    """The same checks for a function view: request.membership and request.tenant are set for it."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            membership, refusal = _resolve(request, manager_required)
            if refusal is not None:
                return refusal
            request.membership, request.tenant = membership, membership.tenant
            return view(request, *args, **kwargs)

        return wrapper

    return decorate
