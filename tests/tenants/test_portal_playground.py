"""The Playground and voice samples: a session-authenticated URL (never a key) streams audio made through the
same SynthesisSession path as POST /v1/synthesize, billed to the tenant as one usage row."""
import re

import pytest
from django.test import Client

from tenants.models import UsageRecord
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, staff_member
from voices.models import Voice

SAY = {"text": "Thanks for calling. How can I help you today?", "voice_id": "default", "language": "",
       "format": "mp3", "speed": "1.0"}


class Staff:
    """A logged-in staff member: Django's client for the pages, the ASGI application (as daphne serves it) with
    the same session cookie for the audio, which streams."""

    def __init__(self, membership):
        self.membership, self.tenant = membership, membership.tenant
        self.client = Client()
        self.client.force_login(membership.user, backend="allauth.account.auth_backends.AuthenticationBackend")
        self.asgi = AsgiClient()

    def audio(self, path, **kwargs):
        from asgiref.sync import async_to_sync

        cookie = f"sessionid={self.client.cookies['sessionid'].value}"
        return async_to_sync(self.asgi.get)(path, headers={"cookie": cookie}, **kwargs)

    def play(self, **fields):
        """POST the playground form; the page's audio and download URLs."""
        response = self.client.post("/portal/playground/", {**SAY, **fields})
        assert response.status_code == 200, response.content.decode()
        page = response.content.decode()
        audio = re.search(r'<audio id="playground-audio"[^>]*src="([^"]+)"', page)
        download = re.search(r'id="playground-download" href="([^"]+)"', page).group(1)
        return (audio.group(1) if audio else None), download.replace("&amp;", "&")


@pytest.fixture
def staff(live_voices, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return Staff(staff_member(TenantFactory(name="Acme Calls"), "member", email="member@acme.example"))


def test_the_playground_streams_audio_and_bills_one_usage_row_without_a_key(staff):
    url, _ = staff.play()
    assert re.fullmatch(r"/portal/playground/audio/[0-9a-f-]{36}/", url)
    response = staff.audio(url)
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == "audio/mpeg"
    assert len(response.chunks) > 2  # sent as it was made, not as one clip
    assert response.body[:3] == b"ID3" or response.body[0] == 0xFF
    row = UsageRecord.objects.get(tenant=staff.tenant)
    assert row.status == "success" and row.api_key is None and row.voice_id == "default"
    assert 30 < row.characters <= len(SAY["text"])
    assert str(row.request_id) in url and row.audio_seconds > 0.5

    again = staff.audio(url)  # the browser asking again (a reload, a seek) is the same request: billed once
    assert again.status == 200
    assert UsageRecord.objects.filter(tenant=staff.tenant).count() == 1
    assert UsageRecord.objects.get(tenant=staff.tenant).attempts == 2


def test_the_download_is_a_file_in_the_chosen_format(staff):
    url, download = staff.play(format="wav", text="Hello.")
    assert download.endswith("?download=1") and download.split("?")[0] != url
    response = staff.audio(download.split("?")[0], query={"download": "1"})
    assert response.status == 200 and response.headers["content-type"] == "audio/wav"
    assert re.fullmatch(r'attachment; filename="speech-[0-9a-f]{8}\.wav"', response.headers["content-disposition"])
    assert response.body[:4] == b"RIFF"


def test_raw_formats_are_offered_as_a_download_only(staff):
    url, download = staff.play(format="mulaw")
    assert url is None and "/portal/playground/audio/" in download


def test_ssml_is_spoken_and_bad_ssml_or_no_text_is_an_error_on_the_form(staff):
    url, _ = staff.play(text='<speak>Please hold.<break time="300ms"/>Thanks.</speak>', ssml="on")
    assert staff.audio(url).status == 200
    bad = staff.client.post("/portal/playground/", {**SAY, "text": "<speak>unclosed", "ssml": "on"})
    assert bad.status_code == 400 and "SSML is not well-formed" in bad.content.decode()
    empty = staff.client.post("/portal/playground/", {**SAY, "text": ""})
    assert empty.status_code == 400 and "This field is required" in empty.content.decode()
    swapped = staff.client.post("/portal/playground/", {**SAY, "text": ""}, HTTP_HX_REQUEST="true")
    assert swapped.status_code == 200 and "This field is required" in swapped.content.decode()  # htmx swaps 2xx only
    unknown = staff.client.post("/portal/playground/", {**SAY, "voice_id": "nobody"})
    assert unknown.status_code == 400 and "Select a valid choice" in unknown.content.decode()


def test_a_refusal_is_the_apis_error_and_is_billed_as_an_error(staff):
    url, _ = staff.play()
    staff.tenant.monthly_character_quota = 10
    staff.tenant.save()
    response = staff.audio(url)
    assert response.status == 402 and response.json()["error"]["code"] == "quota_exceeded"
    assert UsageRecord.objects.get(tenant=staff.tenant).status == "error"


def test_a_playground_url_is_only_its_users(staff):
    url, _ = staff.play()
    colleague = Staff(staff_member(staff.tenant, "owner", email="owner@acme.example"))
    assert colleague.audio(url).status == 404
    anonymous = async_get(AsgiClient(), url)
    assert anonymous.status == 302 and "/portal/accounts/login/" in anonymous.headers["location"]
    assert not UsageRecord.objects.exists()


def test_the_playground_form_needs_a_csrf_token(staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff.membership.user, backend="allauth.account.auth_backends.AuthenticationBackend")
    assert client.post("/portal/playground/", SAY).status_code == 403


def test_the_playground_offers_the_tenants_ready_voices_only(staff):
    other = TenantFactory()
    Voice.objects.create(tenant=other, voice_id="theirs", name="Theirs", engine="espeak")
    Voice.objects.create(tenant=staff.tenant, voice_id="still-cooking", name="Cooking", engine="xtts", status="processing")
    page = staff.client.get("/portal/playground/").content.decode()
    assert 'value="default"' in page and "theirs" not in page and "still-cooking" not in page


def test_a_voice_sample_plays_from_its_signed_link_and_is_billed(staff):
    page = staff.client.get("/portal/voices/").content.decode()
    default = Voice.objects.get(tenant__isnull=True, voice_id="default")
    sample = re.search(rf'src="(/portal/voices/{default.pk}/sample/\?t=[^"]+)"', page).group(1)
    path, token = sample.split("?t=")
    response = staff.audio(path, query={"t": token})
    assert response.status == 200 and response.headers["content-type"] == "audio/mpeg" and response.complete
    row = UsageRecord.objects.get(tenant=staff.tenant)
    assert (row.voice_id, row.status, row.api_key) == ("default", "success", None)

    assert staff.audio(path, query={"t": token + "x"}).status == 404  # a forged or edited link
    colleague = Staff(staff_member(staff.tenant, "owner", email="owner@acme.example"))
    assert colleague.audio(path, query={"t": token}).status == 404  # someone else's link
    assert UsageRecord.objects.filter(tenant=staff.tenant).count() == 1


def async_get(client, path, **kwargs):
    from asgiref.sync import async_to_sync

    return async_to_sync(client.get)(path, **kwargs)


def test_the_portals_requests_count_against_the_tenants_rate_limit(staff, settings):
    settings.RATELIMIT_ENABLE = True
    staff.tenant.requests_per_minute = 1
    staff.tenant.save()
    url, _ = staff.play(text="One.")
    assert staff.audio(url).status == 200
    second, _ = staff.play(text="Two.")
    refused = staff.audio(second)
    assert refused.status == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def test_with_redis_unreachable_the_playground_audio_is_a_503_in_the_apis_shape(staff, monkeypatch):
    import redis

    def unreachable(tenant):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("tenants.portal.audio.tenant_rate_wait_for", unreachable)
    url, _ = staff.play(text="Hold on.")
    refused = staff.audio(url)
    assert refused.status == 503 and refused.json()["error"]["code"] == "service_unavailable"
