from allauth.account.adapter import DefaultAccountAdapter


class PortalAccountAdapter(DefaultAccountAdapter):
    """Staff never sign up: an owner or admin invites them (tenants.services.member_invite), or an operator
    creates them (manage.py create_staff_user)."""

    def is_open_for_signup(self, request):
        return False
