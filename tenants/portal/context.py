"""Which tenant a staff user is working on: the one stored in their session, if they are (still) a member of it,
else their first tenant."""
from tenants import selectors
from tenants.models import TenantMembership

SESSION_KEY = "portal_tenant_id"


def current_membership(request) -> TenantMembership | None:
    """The user's membership of the tenant they work on (None: not logged in, or no tenant at all). Resolved once
    per request; a membership removed meanwhile is never used, as every request reads it again."""
    if not hasattr(request, "_portal_membership"):
        membership = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = list(selectors.user_memberships(user=user))
            chosen = request.session.get(SESSION_KEY)
            membership = next((m for m in memberships if m.tenant_id == chosen), None) or next(iter(memberships), None)
            request._portal_memberships = memberships
        request._portal_membership = membership
    return request._portal_membership


def switch_tenant(request, tenant_slug: str) -> TenantMembership | None:
    """Work on `tenant_slug` from now on, if the user is a member of it; None (and nothing changes) if not."""
    membership = selectors.user_memberships(user=request.user).filter(tenant__slug=tenant_slug).first()
    if membership is not None:
        request.session[SESSION_KEY] = membership.tenant_id
        request._portal_membership = membership
    return membership


def portal(request) -> dict:
    """Template context for portal pages (allauth's account pages included): the current tenant and role, and the
    user's tenants for the switcher. Only resolved when a template asks for it."""
    if not request.path.startswith("/portal/"):
        return {}
    from django.urls import reverse

    from tenants.portal.urls import NAVIGATION

    membership = current_membership(request)
    nav = []
    if membership is not None:
        for label, url_name, managers_only in NAVIGATION:
            if managers_only and not membership.is_manager:
                continue
            url = reverse(url_name)
            active = request.path == url if url.rstrip("/") == "/portal" else request.path.startswith(url)
            nav.append({"label": label, "url": url, "active": active})
    return {
        "portal_membership": membership,
        "portal_tenant": membership.tenant if membership else None,
        "portal_memberships": getattr(request, "_portal_memberships", []),
        "portal_nav": nav,
    }
