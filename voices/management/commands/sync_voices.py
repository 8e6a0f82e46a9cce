from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from voices.services import VoiceConfigError, voices_sync_preloaded


class Command(BaseCommand):
    help = "Create or update the preloaded voices from config/voices.json (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--config", default=str(settings.TTS_VOICES_CONFIG))

    def handle(self, *args, config, **options):
        try:
            report = voices_sync_preloaded(path=config)
        except VoiceConfigError as exc:
            raise CommandError(str(exc)) from exc
        summary = ", ".join(f"{len(ids)} {what}" for what, ids in report.items())
        self.stdout.write(f"Preloaded voices: {summary}.")
