import factory

from tenants.models import Tenant
from tenants.services import api_key_issue
from voices.models import Voice


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    slug = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda t: t.slug.title())


class VoiceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Voice

    tenant = factory.SubFactory(TenantFactory)
    voice_id = factory.Sequence(lambda n: f"voice_{n}")
    name = factory.LazyAttribute(lambda v: v.voice_id.replace("_", " ").title())
    language = "en"
    engine = "espeak"
    engine_settings = factory.LazyFunction(lambda: {"espeak_voice": "en-us"})


ALL_SCOPES = ("synthesize", "voices", "upload", "admin")


def issue_key(tenant=None, *, kind="test", scopes=ALL_SCOPES, **extra) -> str:
    """A new key's plaintext, for a new tenant unless one is given."""
    return api_key_issue(tenant=tenant or TenantFactory(), kind=kind, scopes=list(scopes), **extra).plaintext


def bearer(key: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}
