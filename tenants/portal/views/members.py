from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from tenants import selectors, services
from tenants.models import Invitation, TenantMembership
from tenants.portal.forms import InviteForm, RoleForm
from tenants.portal.mixins import TenantPortalMixin


class MemberListView(TenantPortalMixin, View):
    """Members and pending invitations; owners and admins invite (POST) from here."""

    def get(self, request):
        return self._page(request, InviteForm())

    def post(self, request):
        self.require_manager()
        form = InviteForm(request.POST)
        if form.is_valid():
            try:
                services.member_invite(
                    actor=self.membership, **form.cleaned_data,
                    accept_url=lambda token: request.build_absolute_uri(reverse("portal:invitation", args=[token])),
                )
            except services.PortalError as error:
                form.add_error(None, str(error))
            else:
                messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
                return redirect("portal:members")
        return self._page(request, form, status=400)

    def _page(self, request, form, status=200):
        context = {
            "members": selectors.tenant_members(tenant=self.tenant),
            "invitations": selectors.tenant_pending_invitations(tenant=self.tenant) if self.is_manager else [],
            "form": form,
            "roles": TenantMembership.Role.choices,
            "is_manager": self.is_manager,
            "membership": self.membership,
        }
        return render(request, "portal/members.html", context, status=status)


class MemberRoleView(TenantPortalMixin, View):
    def post(self, request, pk):
        member = self.tenant_object_or_404(TenantMembership.objects.select_related("user"), pk=pk)
        self.require_manager()
        form = RoleForm(request.POST)
        try:
            if not form.is_valid():
                raise services.PortalError("Choose a role: owner, admin or member.")
            services.member_set_role(actor=self.membership, membership=member, role=form.cleaned_data["role"])
        except services.PortalError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"{member.user.email} is now {member.role}.")
        return redirect("portal:members")


class MemberRemoveView(TenantPortalMixin, View):
    """GET: the confirmation; POST: remove."""

    def get(self, request, pk):
        member = self.tenant_object_or_404(TenantMembership.objects.select_related("user"), pk=pk)
        self.require_manager()
        return render(request, "portal/member_remove.html", {"member": member})

    def post(self, request, pk):
        member = self.tenant_object_or_404(TenantMembership.objects.select_related("user"), pk=pk)
        self.require_manager()
        try:
            services.member_remove(actor=self.membership, membership=member)
        except services.PortalError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"{member.user.email} no longer belongs to {self.tenant.name}.")
        return redirect("portal:members")


class InvitationCancelView(TenantPortalMixin, View):
    def post(self, request, pk):
        invitation = self.tenant_object_or_404(Invitation, pk=pk)
        self.require_manager()
        try:
            services.invitation_cancel(actor=self.membership, invitation=invitation)
        except services.PortalError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"The invitation to {invitation.email} is withdrawn: its link no longer works.")
        return redirect("portal:members")
