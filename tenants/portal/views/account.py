"""Switching tenants, and accepting an invitation (the one portal page open without a login)."""
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View
from django.views.decorators.cache import never_cache
from django.utils.decorators import method_decorator

from tenants import selectors, services
from tenants.portal import context
from tenants.portal.forms import NewAccountForm


class SwitchTenantView(View):
    """POST tenant=<slug>: work on that tenant from now on; one the user is not a member of is a 404."""

    def post(self, request):
        if not request.user.is_authenticated:
            return redirect("account_login")
        membership = context.switch_tenant(request, request.POST.get("tenant", ""))
        if membership is None:
            raise Http404("No such tenant.")
        return redirect("portal:dashboard")


@method_decorator(never_cache, name="dispatch")
class InvitationAcceptView(View):
    """The link in an invitation email. An email that has an account logs in and accepts; a new one chooses a
    password, which creates the account. Either way the link is used up."""

    def dispatch(self, request, token):
        self.invitation = selectors.invitation_by_token(token=token)
        if self.invitation is None:
            return render(request, "portal/invitation_invalid.html", status=404)
        self.existing_user = get_user_model().objects.filter(email__iexact=self.invitation.email).first()
        return super().dispatch(request, token)

    def get(self, request, token):
        return self._page(request, NewAccountForm(email=self.invitation.email))

    def post(self, request, token):
        try:
            if request.user.is_authenticated:
                membership = services.invitation_accept(invitation=self.invitation, user=request.user)
            elif self.existing_user is not None and self.existing_user.has_usable_password():
                return redirect(f"{_login_url()}?next={request.path}")
            else:
                form = NewAccountForm(request.POST, email=self.invitation.email)
                if not form.is_valid():
                    return self._page(request, form, status=400)
                membership = services.invitation_accept_as_new_user(
                    invitation=self.invitation, password=form.cleaned_data["password1"])
                login(request, membership.user, backend="allauth.account.auth_backends.AuthenticationBackend")
        except services.PortalError as error:
            messages.error(request, str(error))
            return self._page(request, NewAccountForm(email=self.invitation.email), status=400)
        context.switch_tenant(request, membership.tenant.slug)
        messages.success(request, f"Welcome to {membership.tenant.name}.")
        return redirect("portal:dashboard")

    def _page(self, request, form, status=200):
        return render(request, "portal/invitation.html", {
            "invitation": self.invitation,
            "form": form,
            "needs_login": not request.user.is_authenticated and self.existing_user is not None
            and self.existing_user.has_usable_password(),
            "login_url": f"{_login_url()}?next={request.path}",
        }, status=status)


def _login_url() -> str:
    return reverse("account_login")
