from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument("--requests-per-minute", type=int)
        parser.add_argument("--requests-per-hour", type=int)
        parser.add_argument("--monthly-characters", type=int, help="Monthly character quota (default: none).")
        parser.add_argument("--max-concurrent-streams", type=int)

    def handle(self, *args, slug, name, **options):
        limits = {
            "requests_per_minute": options["requests_per_minute"],
            "requests_per_hour": options["requests_per_hour"],
            "monthly_character_quota": options["monthly_characters"],
            "max_concurrent_streams": options["max_concurrent_streams"],
        }
        try:
            tenant = tenant_create(slug=slug, name=name, **{k: v for k, v in limits.items() if v is not None})
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())) from None
        self.stderr.write(f"Created tenant {tenant.slug}.")
