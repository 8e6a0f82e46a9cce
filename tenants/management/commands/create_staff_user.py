import secrets

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from tenants.models import Tenant, TenantMembership
from tenants.services import audit_record, membership_set, staff_user_get_or_create


class Command(BaseCommand):
    help = (
        "Create a portal user (or take the existing one with this email) and make them a member of a tenant with a "
        "role. A new user without --password gets a generated password, printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", required=True, choices=TenantMembership.Role.values)
        parser.add_argument("--password", default=None, help="Set this password (also for an existing user).")

    def handle(self, *args, tenant, email, role, password, **options):
        owner = Tenant.objects.filter(slug=tenant).first()
        if owner is None:
            raise CommandError(f"No tenant {tenant!r}.")
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"{email!r} is not an email address.") from exc
        generated = None
        with transaction.atomic():
            user = staff_user_get_or_create(email=email, password=password)
            if not user.has_usable_password():
                generated = secrets.token_urlsafe(12)
                user.set_password(generated)
                user.save(update_fields=["password"])
            membership_set(tenant=owner, user=user, role=role)
            audit_record(tenant=owner, actor=None, action="member.added", target=user.email,
                         details={"role": role, "by": "create_staff_user"})
        self.stdout.write(f"{user.email} is {role} of tenant '{owner.slug}'; log in at /portal/accounts/login/.")
        if generated:
            self.stdout.write(f"Password (shown once): {generated}")
