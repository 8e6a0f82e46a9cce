import itertools

import factory
import numpy as np

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


def voice_like(seconds: float = 4.0, rate: int = 22050, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a slow vibrato and some breath noise: enough for a speaker encoder to chew on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 20 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.2 * tone / np.max(np.abs(tone)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


STAFF_PASSWORD = "correct horse battery staple"
_staff_numbers = itertools.count(1)


def staff_member(tenant=None, role="owner", email=None, password=STAFF_PASSWORD):
    """A portal user who is `role` of `tenant` (a new tenant unless one is given): their TenantMembership. An
    existing user (same email) keeps their password."""
    from django.contrib.auth import get_user_model

    from tenants.services import membership_set, staff_user_get_or_create

    tenant = tenant or TenantFactory()
    email = email or f"{role}-{next(_staff_numbers)}@{tenant.slug}.example"
    exists = get_user_model().objects.filter(email__iexact=email).exists()
    user = staff_user_get_or_create(email=email, password=None if exists else password)
    return membership_set(tenant=tenant, user=user, role=role)
