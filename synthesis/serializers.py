from django.conf import settings
from rest_framework import serializers, status

from callwaiting.errors import ApiError

from synthesis.encoders import API_FORMATS, FORMATS, SAMPLE_RATES, sample_rate_error

# How the API schema describes each format's bytes (the Content-Type comes from synthesis.encoders).
_FORMAT_DESCRIPTIONS = {
    "wav": "a WAV file, 16-bit mono PCM at X-Sample-Rate (while streaming, its header's sizes are 0xFFFFFFFF: unknown).",
    "pcm": "raw 16-bit mono little-endian PCM at X-Sample-Rate, no header.",
    "mulaw": "G.711 mu-law, one byte a sample, at X-Sample-Rate (8000 unless sample_rate says otherwise).",
    "alaw": "G.711 A-law, one byte a sample, at X-Sample-Rate (8000 unless sample_rate says otherwise).",
    "mp3": "MP3 frames (LAME), streamable as they arrive.",
    "opus": "Opus in Ogg pages of 20 ms.",
    "flac": "FLAC, streamed (the header carries no total length).",
}
# The Content-Type of each format's answer (POST /v1/synthesize), and how the API schema describes its bytes.
AUDIO_CONTENT_TYPES = {
    name: (FORMATS[name].content_type, f"format={name}: {_FORMAT_DESCRIPTIONS[name]}") for name in API_FORMATS
}


class SynthesizeSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="",
                                 help_text="What to say (at most TTS_MAX_TEXT_CHARS characters, 5000 by default).")
    ssml = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="",
                                 help_text="Or SSML: a <speak> document (break, prosody, say-as, sub, emphasis).")
    voice_id = serializers.CharField(required=False, default="default", max_length=100,
                                     help_text="A preloaded voice or one of the tenant's own (GET /v1/voices).")
    language = serializers.CharField(required=False, allow_blank=True, default="", max_length=16,
                                     help_text="A language the voice speaks (e.g. en, de-DE); empty: the voice's own.")
    streaming = serializers.BooleanField(required=False, default=True,
                                         help_text="true: audio as it is produced; false: the whole clip at once.")
    speed = serializers.FloatField(required=False, default=1.0, min_value=0.5, max_value=2.0,
                                   help_text="Speaking rate, 1.0 normal.")
    format = serializers.ChoiceField(
        choices=API_FORMATS, required=False, default="wav",
        help_text="wav (streaming header), pcm (16-bit little-endian mono), mulaw / alaw (G.711, 8 kHz unless "
                  "sample_rate says otherwise), mp3, opus (in Ogg), flac.",
    )
    sample_rate = serializers.ChoiceField(
        choices=SAMPLE_RATES, required=False, allow_null=True, default=None,
        help_text="Output rate in Hz; default: the voice's own (24000 for XTTS, 22050 for eSpeak), 8000 for G.711, "
                  "48000 for Opus (which takes 8000, 16000, 24000 or 48000; its decoders play at 48000).",
    )
    # The phrase cache (synthesis/phrase_cache.py): true or false decides for this request; absent (null), the
    # tenant's setting does.
    cache = serializers.BooleanField(
        required=False, allow_null=True, default=None,
        help_text="Serve a repeated phrase from the phrase cache (true), never (false); absent: the tenant's setting.",
    )

    def validate(self, attrs):
        if attrs["text"].strip() and attrs["ssml"].strip():
            raise serializers.ValidationError("Send either text or ssml, not both.")
        if error := sample_rate_error(attrs["format"], attrs["sample_rate"]):
            raise serializers.ValidationError({"sample_rate": error})
        return attrs


class StreamSynthesizeSerializer(SynthesizeSerializer):
    """A `synthesize` message on the WebSocket API (/v1/stream). Every utterance there streams, and the format
    defaults to raw PCM: phone pipelines feed the frames straight into a call's media stream, where a file
    header is only bytes to strip."""

    streaming = None
    format = serializers.ChoiceField(choices=API_FORMATS, required=False, default="pcm",
                                     help_text=SynthesizeSerializer().fields["format"].help_text)

    def validate(self, attrs):
        return {**super().validate(attrs), "streaming": True}


class StreamTextSerializer(serializers.Serializer):
    """A `text` message on /v1/stream: a piece of text as an LLM produces it, optionally with the fields of a
    `synthesize` message (voice_id, language, speed, format), which apply from this piece on until changed.
    Only the fields sent are in validated_data, besides `text` and `flush`."""

    text = serializers.CharField(allow_blank=True, trim_whitespace=False)
    flush = serializers.BooleanField(required=False, default=False)

    def get_fields(self):
        fields = super().get_fields()
        for name, field in StreamSynthesizeSerializer().get_fields().items():
            if name not in fields and name != "ssml":
                field.required, field.default = False, serializers.empty  # absent: the earlier value stays
                fields[name] = field
        return fields

    def validate(self, attrs):
        if "ssml" in self.initial_data:
            raise serializers.ValidationError({"ssml": "text messages carry plain text; send SSML in a synthesize message."})
        if "request_id" in self.initial_data:
            raise serializers.ValidationError(
                {"request_id": "each sentence of streamed text gets the server's request id (in its start frame)."}
            )
        if len(attrs["text"]) > settings.TTS_MAX_TEXT_CHARS:
            raise ApiError("text_too_long", f"A text piece has at most {settings.TTS_MAX_TEXT_CHARS} characters.",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        return attrs


class TwilioSpeakSerializer(SynthesizeSerializer):
    """An utterance for a Twilio call (REST `POST /v1/twilio/calls/<streamSid>/speak`, or the `text` custom
    parameter of the stream's `start`): what to say and how; the audio is always what the call carries, 8 kHz
    mu-law."""

    streaming = None
    format = None
    sample_rate = None

    def validate(self, attrs):
        return super().validate({**attrs, "format": "mulaw", "sample_rate": 8000}) | {"streaming": True}


class TwilioCallActionSerializer(serializers.Serializer):
    """What the Twilio call endpoints answer (documentation: the views build the dict themselves)."""

    stream_sid = serializers.CharField(help_text="The call's Media Stream (its streamSid).")
    request_id = serializers.UUIDField(required=False, help_text="speak: the utterance's usage row and mark name.")
    status = serializers.ChoiceField(choices=["queued", "cleared"])


class StreamTokenSerializer(serializers.Serializer):
    """What POST /v1/stream/token answers (documentation: the view builds the dict itself)."""

    token = serializers.CharField(help_text="Single use; only its hash is stored.")
    expires_in = serializers.IntegerField(help_text="Seconds it may still be used in (TTS_STREAM_TOKEN_SECONDS).")
    url = serializers.CharField(help_text="The WebSocket path to open with it: /v1/stream?token=...")


# --- what /v1/health answers (documentation: HealthView builds the dict itself) ------------------------------------

class EngineStateSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    state = serializers.ChoiceField(choices=["available", "loading", "unavailable"])
    reason = serializers.CharField(required=False, help_text="Why the engine is not available (absent when it is).")
    workers = serializers.IntegerField(help_text="Live model workers serving it.")
    capacity = serializers.IntegerField(required=False, help_text="Streams those workers serve at once.")
    sample_rate = serializers.IntegerField(required=False, help_text="Of the audio it produces, in Hz.")
    languages = serializers.ListField(child=serializers.CharField(), required=False)
    supports_cloning = serializers.BooleanField(required=False)
    supports_streaming = serializers.BooleanField(required=False)


class DatabaseStateSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    vendor = serializers.CharField(required=False, help_text="sqlite or postgresql")
    error = serializers.CharField(required=False)


class RedisStateSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(required=False)


class WorkerStateSerializer(serializers.Serializer):
    worker_id = serializers.CharField()
    host = serializers.CharField()
    pid = serializers.IntegerField()
    loading = serializers.BooleanField()
    capacity = serializers.IntegerField(help_text="Jobs it serves at once.")
    load = serializers.IntegerField(help_text="Jobs it serves now.")
    waiting_for_client = serializers.IntegerField(help_text="Of those, streams waiting for their client to read.")
    engines_paused = serializers.IntegerField()
    accepting = serializers.BooleanField(help_text="Takes new jobs now.")
    jobs_started = serializers.IntegerField()
    batches = serializers.DictField(child=serializers.DictField(), help_text="Batching engines' statistics.")
    heartbeat_at = serializers.FloatField(help_text="Unix time of its last heartbeat.")
    engines = serializers.ListField(child=serializers.CharField(), help_text="The engines it serves.")


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=["ok", "loading", "degraded", "unhealthy"],
        help_text="ok: every engine available; loading: engines still coming up; degraded: some engine "
                  "unavailable; unhealthy: nothing can be served (HTTP 503).",
    )
    version = serializers.CharField()
    database = DatabaseStateSerializer()
    redis = RedisStateSerializer(required=False, help_text="Production topology only (REDIS_URL set).")
    engines = serializers.DictField(child=EngineStateSerializer(), help_text="Per configured engine.")
    workers = WorkerStateSerializer(many=True)
    embedded_worker = serializers.BooleanField(help_text="The model worker runs inside the web process.")
