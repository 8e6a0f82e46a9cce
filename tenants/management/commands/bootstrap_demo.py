from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.utils import timezone

from tenants.models import Tenant
from tenants.services import api_key_issue, tenant_create

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Sync the preloaded voices and make sure the demo tenant exists with a fresh demo key (idempotent)."

    def handle(self, *args, **options):
        call_command("sync_voices", stdout=self.stderr)
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first() or tenant_create(slug=DEMO_SLUG, name="Demo tenant")
        # Only a hash is stored, so an old demo key cannot be shown again: issue a new one per start and keep
        # the number of live demo keys bounded by revoking the older ones.
        tenant.api_keys.filter(name="demo", revoked_at__isnull=True).update(revoked_at=timezone.now())
        issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize", "voices", "upload", "admin"], name="demo")
        self.stdout.write(f"Demo tenant '{tenant.slug}'. API key (shown once): {issued.plaintext}")
