import uuid

from django import forms
from django.contrib.auth import password_validation

from tenants.models import ApiKey, Scope, TenantMembership


class ApiKeyCreateForm(forms.Form):
    # Each rendering of the form gets an id: the answer that shows a key's plaintext is a POST, and a reload or a
    # double click sends it again, which must not make a second key.
    form_id = forms.UUIDField(widget=forms.HiddenInput, required=False)
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “IVR production”.")
    kind = forms.ChoiceField(choices=ApiKey.Kind.choices, initial=ApiKey.Kind.TEST,
                             help_text="prod and test keys work alike; the prefix tells them apart in your code.")
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=[Scope.SYNTHESIZE, Scope.VOICES])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("form_id", uuid.uuid4())


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=TenantMembership.Role.choices, initial=TenantMembership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=TenantMembership.Role.choices)


class NewAccountForm(forms.Form):
    """The password of the account an invitation creates."""

    password1 = forms.CharField(label="Password", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
                                help_text=password_validation.password_validators_help_text_html())
    password2 = forms.CharField(label="Password (again)",
                                widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        first, second = cleaned.get("password1"), cleaned.get("password2")
        if first and second and first != second:
            raise forms.ValidationError("The two passwords differ.")
        if first:
            from django.contrib.auth import get_user_model

            password_validation.validate_password(first, get_user_model()(email=self.email, username=self.email))
        return cleaned


# --- voices and the playground -----------------------------------------------------------------------------------
class VoiceUploadForm(forms.Form):
    """The portal's form for POST /v1/voices/upload: the same fields and limits, and the clip checked at once (the
    checks its processing would make later), so a bad clip is an error on the form rather than a failed voice."""

    voice_id = forms.SlugField(max_length=100, label="Voice id",
                               help_text="What requests name it by: letters, digits, - and _.")
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    language = forms.CharField(max_length=16, initial="en", help_text="The language the speaker speaks, e.g. en, de.")
    audio_file = forms.FileField(label="Reference clip", help_text="3-60 s of one speaker: WAV, MP3, FLAC, OGG or M4A.",
                                 widget=forms.ClearableFileInput(attrs={"accept": "audio/*"}))

    def clean_audio_file(self):
        from django.conf import settings

        from voices.audio import AudioError, ReferenceLimits, check_reference, decode_reference

        audio_file = self.cleaned_data["audio_file"]
        if audio_file.size > settings.TTS_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(f"The file is over {settings.TTS_MAX_UPLOAD_BYTES // (1024 * 1024)} MiB.")
        try:
            samples, rate = decode_reference(audio_file.read())
            check_reference(samples, rate, ReferenceLimits(settings.TTS_REFERENCE_MIN_SECONDS,
                                                           settings.TTS_REFERENCE_MAX_SECONDS))
        except AudioError as exc:
            raise forms.ValidationError(f"This clip cannot make a voice: {exc.message}.") from None
        finally:
            audio_file.seek(0)  # voice_clone_start stores it
        return audio_file


class VoiceRenameForm(forms.Form):
    name = forms.CharField(max_length=200)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


# Formats a browser's <audio> element plays; the others (raw PCM, G.711) are offered as a download only.
BROWSER_PLAYABLE_FORMATS = ("wav", "mp3", "opus", "flac")


class PlaygroundForm(forms.Form):
    """What POST /v1/synthesize takes, as a form; validated by the API's own serializer too (clean)."""

    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), strip=False,
                           initial="Thanks for calling. How can I help you today?")
    ssml = forms.BooleanField(required=False, label="The text is SSML",
                              help_text="A &lt;speak&gt; document: break, prosody, say-as, sub, emphasis.")
    voice_id = forms.ChoiceField(label="Voice")
    language = forms.CharField(required=False, max_length=16, help_text="Empty: the voice's own language.")
    format = forms.ChoiceField(initial="mp3", help_text="pcm, mulaw and alaw are raw audio: download only.")
    speed = forms.FloatField(min_value=0.5, max_value=2.0, initial=1.0, widget=forms.NumberInput(attrs={"step": "0.1"}))

    def __init__(self, *args, voices, **kwargs):
        from synthesis.encoders import API_FORMATS

        super().__init__(*args, **kwargs)
        self.fields["voice_id"].choices = [(v.voice_id, f"{v.name} ({v.voice_id}, {v.engine})") for v in voices]
        self.fields["format"].choices = [(name, name) for name in API_FORMATS]

    def synthesize_request(self) -> dict:
        data = self.cleaned_data
        body = {"ssml" if data["ssml"] else "text": data["text"]}
        return {**body, "voice_id": data["voice_id"], "language": data["language"], "format": data["format"],
                "speed": data["speed"]}

    def clean(self):
        from synthesis.serializers import SynthesizeSerializer

        cleaned = super().clean()
        if self.errors:
            return cleaned
        serializer = SynthesizeSerializer(data=self.synthesize_request())
        if serializer.is_valid() and cleaned["ssml"]:
            from callwaiting.errors import ApiError
            from synthesis.frontend import ssml_segments

            try:
                ssml_segments(cleaned["text"], speed=cleaned["speed"])
            except ApiError as exc:
                self.add_error("text", exc.message)
        elif not serializer.is_valid():
            for field, errors in serializer.errors.items():
                field = "text" if field in ("ssml", "non_field_errors") else field
                for error in errors:
                    self.add_error(field if field in self.fields else None, str(error))
        return cleaned

    @property
    def playable(self) -> bool:
        return self.cleaned_data["format"] in BROWSER_PLAYABLE_FORMATS
