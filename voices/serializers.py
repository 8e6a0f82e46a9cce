from rest_framework import serializers

from voices.models import Voice


class VoiceSerializer(serializers.ModelSerializer):
    languages = serializers.ListField(child=serializers.CharField(), read_only=True)
    available = serializers.SerializerMethodField(help_text="Ready and its engine is up: it can be used now.")
    unavailable_reason = serializers.SerializerMethodField(help_text="Why it cannot be used now, or null.")

    class Meta:
        model = Voice
        fields = [
            "voice_id", "name", "description", "language", "languages", "gender", "accent", "engine",
            "is_preloaded", "status", "status_reason", "available", "unavailable_reason", "created_at", "updated_at",
        ]
        extra_kwargs = {  # for the API schema
            "voice_id": {"help_text": "The id to synthesize with (unique among the tenant's and preloaded voices)."},
            "engine": {"help_text": "The engine that speaks it: espeak or xtts."},
            "is_preloaded": {"help_text": "Shipped with the service (config/voices.json); cannot be changed."},
            "status": {"help_text": "processing (a cloned voice being prepared), ready, failed, or unavailable."},
            "status_reason": {"help_text": "Why it failed or is unavailable."},
        }

    def _engine_state(self, voice) -> dict:
        return self.context["engines"].get(voice.engine) or {"available": False, "reason": "engine not configured"}

    def get_available(self, voice) -> bool:
        return voice.status == Voice.Status.READY and self._engine_state(voice)["available"]

    def get_unavailable_reason(self, voice) -> str | None:
        if voice.status != Voice.Status.READY:
            return voice.status_reason or f"voice is {voice.status}"
        state = self._engine_state(voice)
        return None if state["available"] else state["reason"]


class VoiceUploadSerializer(serializers.Serializer):
    voice_id = serializers.SlugField(max_length=100, help_text="The new voice's id (letters, digits, - and _).")
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    language = serializers.CharField(max_length=16, default="en", help_text="The language the speaker speaks.")
    audio_file = serializers.FileField(help_text="3-60 s of one speaker: WAV, MP3, FLAC, OGG or M4A, at most "
                                                 "TTS_MAX_UPLOAD_BYTES (10 MiB by default).")


class VoiceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send name and/or description.")
        return attrs


class VoiceListSerializer(serializers.Serializer):
    """What GET /v1/voices answers (for the API schema; the view builds it)."""

    tenant_id = serializers.CharField()
    voices = VoiceSerializer(many=True)
    total_count = serializers.IntegerField()
