from django.core.management.base import BaseCommand, CommandError

from tenants.keys import KINDS
from tenants.models import Tenant
from tenants.services import api_key_issue


class Command(BaseCommand):
    help = "Issue an API key; prints only the new key on stdout (it is not stored and cannot be shown again)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument("--scopes", required=True, help="Comma-separated: synthesize,voices,upload,admin.")
        parser.add_argument("--name", default="")

    def handle(self, *args, tenant, kind, scopes, name, **options):
        owner = Tenant.objects.filter(slug=tenant).first()
        if owner is None:
            raise CommandError(f"No tenant {tenant!r}.")
        try:
            issued = api_key_issue(
                tenant=owner, kind=kind, scopes=[s.strip() for s in scopes.split(",") if s.strip()], name=name
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(issued.plaintext)
