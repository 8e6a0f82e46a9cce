"""POST /v1/audio/speech in OpenAI's request shape, so OpenAI's SDKs work with `base_url` pointed at this service.

A request is translated into a POST /v1/synthesize request and served by the same code: key, scope, rate limits,
quota, billing and the error shape are the service's own. What OpenAI sends and this service does with it:
  model            -> an engine (config/openai.json "models": tts-1 -> espeak, tts-1-hd -> xtts)
  voice            -> OpenAI voice names map to voices per engine (config/openai.json "voices"); any other
                      name (or {"id": ...}) is one of the tenant's own voice ids, e.g. a cloned voice
  input            -> text (plain text; SSML is POST /v1/synthesize's)
  response_format  -> mp3 (default), opus, aac, flac, wav, pcm; all at 24 kHz as OpenAI's are (pcm: 16-bit
                      little-endian mono, no header)
  speed            -> 0.5 to 2.0 (OpenAI allows 0.25 to 4.0; outside this service's range is a 400)
  instructions     -> accepted and ignored: no engine here takes style prompts
  stream_format    -> "audio" (the default, chunked as it is made); "sse" is refused with a 400
"""
import functools
import json

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

OPENAI_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
# What the API docs say of it (the module docstring, which is the reference).
OPENAI_SPEECH_DESCRIPTION = "\n".join(line.strip() for line in __doc__.splitlines())
OPENAI_SAMPLE_RATE = 24000


@functools.cache
def _mapping(path: str) -> dict:
    with open(path, encoding="utf-8") as config:
        return json.load(config)


def openai_mapping() -> dict:
    return _mapping(str(settings.TTS_OPENAI_CONFIG))


@extend_schema_field({"oneOf": [
    {"type": "string", "example": "alloy"},
    {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
]})
class OpenAIVoiceField(serializers.Field):
    """OpenAI sends a voice as a name ("alloy") or, for custom voices, as {"id": "..."}."""

    default_error_messages = {"invalid": 'Expected a voice name or {{"id": "<voice id>"}}.'}

    def to_internal_value(self, data):
        if isinstance(data, dict):
            data = data.get("id")
        if not isinstance(data, str) or not data.strip() or len(data) > 100:
            self.fail("invalid")
        return data.strip()

    def to_representation(self, value):
        return value


class OpenAISpeechSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=100, help_text="tts-1 (eSpeak, fast), tts-1-hd or gpt-4o-mini-tts (XTTS).")
    input = serializers.CharField(trim_whitespace=False, help_text="The text to speak.")
    voice = OpenAIVoiceField(help_text="alloy, ash, ballad, coral, echo, fable, nova, onyx, sage, shimmer, verse, "
                                       "or one of the tenant's voice ids.")
    response_format = serializers.ChoiceField(choices=OPENAI_FORMATS, required=False, default="mp3")
    speed = serializers.FloatField(required=False, default=1.0, min_value=0.5, max_value=2.0)
    instructions = serializers.CharField(required=False, allow_blank=True, max_length=4096,
                                         help_text="Accepted for compatibility and ignored.")
    stream_format = serializers.ChoiceField(choices=("audio", "sse"), required=False, default="audio")

    def validate_model(self, model):
        models = openai_mapping()["models"]
        if model not in models:
            raise serializers.ValidationError(f"Unknown model {model!r}; this service offers {', '.join(models)}.")
        return model

    def validate_stream_format(self, stream_format):
        if stream_format != "audio":
            raise serializers.ValidationError("Only stream_format 'audio' is served here.")
        return stream_format

    def synthesize_request(self) -> dict:
        """The POST /v1/synthesize fields this request stands for."""
        data = self.validated_data
        mapping = openai_mapping()
        engine = mapping["models"][data["model"]]
        voice_id = mapping["voices"].get(engine, {}).get(data["voice"], data["voice"])
        return {
            "text": data["input"], "ssml": "", "voice_id": voice_id, "language": "", "streaming": True,
            "speed": data["speed"], "format": data["response_format"], "sample_rate": OPENAI_SAMPLE_RATE,
        }
