import os
import secrets

from django.core.management import call_command
from django.core.management.base import BaseCommand

from tenants.models import Tenant, TenantMembership
from tenants.services import api_key_issue, api_key_revoke, membership_set, staff_user_get_or_create, tenant_create

DEMO_SLUG = "demo"
DEMO_OWNER_EMAIL = "demo@example.com"


class Command(BaseCommand):
    help = (
        "Sync the preloaded voices and make sure the demo tenant exists with a fresh demo key and a demo owner for the "
        "portal (idempotent). The last word printed is the demo API key."
    )

    def handle(self, *args, **options):
        call_command("sync_voices", stdout=self.stderr)
        tenant = Tenant.objects.filter(slug=DEMO_SLUG).first() or tenant_create(slug=DEMO_SLUG, name="Demo tenant")
        # Only a hash is stored, so an old demo key cannot be shown again: issue a new one per start and keep
        # the number of live demo keys bounded by revoking the older ones.
        for old_key in tenant.api_keys.filter(name="demo", revoked_at__isnull=True):
            api_key_revoke(api_key=old_key)  # through the service: running servers see it at once
        # Its password is only stored hashed too: a fresh one per start (DEMO_PASSWORD fixes it).
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        owner = staff_user_get_or_create(email=DEMO_OWNER_EMAIL, password=password)
        membership_set(tenant=tenant, user=owner, role=TenantMembership.Role.OWNER)
        host, port = os.environ.get("HOST", "127.0.0.1"), os.environ.get("PORT", "8000")
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.stdout.write(f"Portal: http://{host}:{port}/portal/ (log in as {DEMO_OWNER_EMAIL} / {password})")
        issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize", "voices", "upload", "admin"], name="demo")
        self.stdout.write(f"Demo tenant '{tenant.slug}'. API key (shown once): {issued.plaintext}")
