import json

import pytest
from django.core.management import call_command

from tests.factories import TenantFactory, VoiceFactory, bearer, issue_key
from voices.models import Voice
from voices.services import VoiceConfigError, voices_sync_preloaded

pytestmark = pytest.mark.django_db


def _voice_ids(response) -> set[str]:
    return {voice["voice_id"] for voice in response.json()["voices"]}


def test_voice_list_has_the_seed_shape(api_client, preloaded_voices, tenant):
    response = api_client.get("/v1/voices", **bearer(issue_key(tenant)))
    body = response.json()
    assert response.status_code == 200
    assert body["tenant_id"] == tenant.slug
    assert body["total_count"] == len(body["voices"]) >= 8
    default = next(v for v in body["voices"] if v["voice_id"] == "default")
    assert {"voice_id", "name", "description", "language", "is_preloaded"} <= set(default)
    assert default["is_preloaded"] is True and default["engine"] == "espeak"


def test_seed_voice_ids_are_listed_for_xtts_and_unavailable_with_a_reason(api_client, preloaded_voices, tenant):
    voices = {v["voice_id"]: v for v in api_client.get("/v1/voices", **bearer(issue_key(tenant))).json()["voices"]}
    naija = voices["naija_female"]
    assert naija["engine"] == "xtts"
    assert naija["available"] is False and naija["unavailable_reason"]


def test_a_tenant_sees_preloaded_voices_and_its_own_never_anothers(api_client, preloaded_voices):
    mine, theirs = TenantFactory(), TenantFactory()
    VoiceFactory(tenant=mine, voice_id="my_clone")
    VoiceFactory(tenant=theirs, voice_id="their_clone")
    ids = _voice_ids(api_client.get("/v1/voices", **bearer(issue_key(mine))))
    assert "my_clone" in ids and "default" in ids
    assert "their_clone" not in ids
    other_ids = _voice_ids(api_client.get("/v1/voices", **bearer(issue_key(theirs))))
    assert "their_clone" in other_ids and "my_clone" not in other_ids


def test_sync_voices_is_idempotent_and_follows_the_config(tmp_path):
    config = tmp_path / "voices.json"
    spec = {"name": "One", "language": "en", "engine": "espeak", "engine_settings": {"espeak_voice": "en-us"}}
    config.write_text(json.dumps({"preloaded_voices": {"one": spec, "two": {**spec, "name": "Two"}}}))
    assert voices_sync_preloaded(path=config)["created"] == ["one", "two"]
    assert voices_sync_preloaded(path=config)["unchanged"] == ["one", "two"]
    config.write_text(json.dumps({"preloaded_voices": {"one": {**spec, "name": "Renamed"}}}))
    report = voices_sync_preloaded(path=config)
    assert report["updated"] == ["one"] and report["removed"] == ["two"]
    assert list(Voice.objects.filter(tenant__isnull=True).values_list("name", flat=True)) == ["Renamed"]


def test_sync_leaves_tenant_voices_alone(tmp_path):
    owned = VoiceFactory(voice_id="keep_me")
    config = tmp_path / "voices.json"
    config.write_text(json.dumps({"preloaded_voices": {}}))
    voices_sync_preloaded(path=config)
    assert Voice.objects.filter(pk=owned.pk).exists()


@pytest.mark.parametrize(
    "content", ["not json", json.dumps({"voices": {}}), json.dumps({"preloaded_voices": {"x": {"name": "X"}}})]
)
def test_a_broken_config_is_a_clear_error_and_changes_nothing(tmp_path, content):
    config = tmp_path / "voices.json"
    config.write_text(content)
    with pytest.raises(VoiceConfigError):
        voices_sync_preloaded(path=config)
    assert not Voice.objects.exists()


def test_sync_voices_command_loads_the_shipped_config():
    call_command("sync_voices", stdout=open("/dev/null", "w"))
    shipped = set(Voice.objects.filter(is_preloaded=True).values_list("voice_id", flat=True))
    assert {"default", "naija_female", "fr_female", "es_male"} <= shipped
    engines = set(Voice.objects.values_list("engine", flat=True))
    assert engines == {"espeak", "xtts"}
