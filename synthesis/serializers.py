from rest_framework import serializers

from synthesis.encoders import API_FORMATS, SAMPLE_RATES, sample_rate_error


class SynthesizeSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    ssml = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    voice_id = serializers.CharField(required=False, default="default", max_length=100)
    language = serializers.CharField(required=False, allow_blank=True, default="", max_length=16)
    streaming = serializers.BooleanField(required=False, default=True)
    speed = serializers.FloatField(required=False, default=1.0, min_value=0.5, max_value=2.0)
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


class TwilioSpeakSerializer(SynthesizeSerializer):
    """An utterance for a Twilio call (REST `POST /v1/twilio/calls/<streamSid>/speak`, or the `text` custom
    parameter of the stream's `start`): what to say and how; the audio is always what the call carries, 8 kHz
    mu-law."""

    streaming = None
    format = None
    sample_rate = None

    def validate(self, attrs):
        return super().validate({**attrs, "format": "mulaw", "sample_rate": 8000}) | {"streaming": True}
