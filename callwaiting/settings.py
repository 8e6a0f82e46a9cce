"""Settings for CallWaiting TTS.

Everything comes from the environment with embedded defaults, so `make run` works on a laptop with no
services (SQLite, local-memory cache, in-memory channel layer, model worker inside the web process) and the
same code runs in production with DATABASE_URL / REDIS_URL pointing at PostgreSQL and Redis.
"""
import json
import os
from pathlib import Path

import dj_database_url

from callwaiting import redis_client

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# The embedded default is only for a laptop; production sets SECRET_KEY from a secret store.
SECRET_KEY = os.environ.get("SECRET_KEY") or "embedded-insecure-key-set-SECRET_KEY-in-production"
# The operator credential for GET /v1/metrics (Prometheus): `Authorization: Bearer <METRICS_TOKEN>`. Unset: only
# a Django staff session reads the metrics. Compared in constant time, never logged (Django's error reports
# mask settings named *TOKEN*).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
# Behind a TLS-terminating proxy or ingress: the origins forms are posted from (admin, portal), and whether to
# trust its X-Forwarded-Proto header.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
if env_bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
HOST = os.environ.get("HOST", "0.0.0.0")
PORT = env_int("PORT", 8000)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",  # the portal's figures (intcomma)
    "rest_framework",
    "corsheaders",  # its system checks; the middleware is mounted on the API's handler only (callwaiting/middleware.py)
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc as static files: /docs works offline
    "channels",
    # The tenant-staff portal (/portal/): accounts with optional TOTP two-factor, htmx, tables and filters.
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "django_htmx",
    "django_tables2",
    "django_filters",
    "tenants",
    "voices",
    "synthesis",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "callwaiting.urls"
ASGI_APPLICATION = "callwaiting.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.portal.context.portal",
            ],
        },
    },
]

# --- database ---------------------------------------------------------------------------------------------
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var"))
DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'callwaiting.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DATABASE_POOL", True):
    # Under ASGI every request runs its sync code in a thread of its own, so Django's persistent connections
    # cannot be reused; psycopg's pool can (opening a PostgreSQL connection costs milliseconds per request).
    DATABASES["default"]["OPTIONS"] = {
        # `timeout`: how long a request waits for a connection (the pool is busy, or PostgreSQL is down: then it
        # gets its 503 service_unavailable after this long).
        "pool": {"min_size": 1, "max_size": env_int("DATABASE_POOL_SIZE", 20),
                 "timeout": env_int("DATABASE_POOL_TIMEOUT", 10)},
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Write-ahead logging (set once in the file by migration tenants 0002) lets streaming responses write usage
    # rows while other requests read; a writer waits up to `timeout` seconds for another.
    # IMMEDIATE transactions take the write lock when they begin: a transaction that reads and then writes
    # (a retry updating its usage row) would otherwise fail at once with "database is locked" when another
    # writer is active, instead of waiting its turn.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    # Tests reach the database from the ASGI handler's threads: an in-memory database would not be shared.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, rate limits, channel layer ---------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# The channel layer serves WebSocket groups only (jobs and audio go through synthesis.jobqueue): messages a
# channel holds unread before senders wait.
CHANNEL_CAPACITY = {"capacity": env_int("TTS_CHANNEL_CAPACITY", 1000)}
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "callwaiting.redis_cache.RedisCache",  # Django's, counting in one round trip
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "cw",
            # Fail fast while Redis is down (callers answer 503), reconnect stale connections once it is back.
            "OPTIONS": redis_client.sync_options(),
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's default 5 s socket timeout would break a worker's blocking wait on an idle queue;
                # every wait in this project has its own timeout instead.
                "hosts": [{"address": REDIS_URL, "socket_timeout": None}],
                "prefix": "cw:channels:",
                "expiry": 60,
                **CHANNEL_CAPACITY,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "callwaiting"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": CHANNEL_CAPACITY}}

RATELIMIT_USE_CACHE = "default"
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", True)

# --- the tenant-staff portal (/portal/): accounts by django-allauth -------------------------------------------
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",  # the admin's username login
    "allauth.account.auth_backends.AuthenticationBackend",  # the portal's email login
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "portal:dashboard"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
# Staff log in by email; nobody signs up (they are invited by a tenant's owner or admin, or created by an operator
# with `manage.py create_staff_user`), so an address is known to be theirs and needs no verification round.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_ADAPTER = "tenants.portal.adapter.PortalAccountAdapter"
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[CallWaiting TTS] "
ACCOUNT_PASSWORD_RESET_BY_CODE_ENABLED = False
# Optional two-factor: TOTP apps, with recovery codes for a lost phone.
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = os.environ.get("MFA_TOTP_ISSUER", "CallWaiting TTS")
# How long an invitation link to join a tenant may be used (single use).
PORTAL_INVITATION_DAYS = env_int("PORTAL_INVITATION_DAYS", 7)
# Invitation emails a tenant may send per hour: a staff account cannot be used to spam addresses.
PORTAL_INVITATIONS_PER_HOUR = env_int("PORTAL_INVITATIONS_PER_HOUR", 20)
# Owners are emailed once a month for each of these percentages of the monthly character quota that usage passes
# ("" turns the emails off); the dashboard's warning banner starts at the lowest one under 100.
TTS_QUOTA_ALERT_PERCENTS = sorted({int(p) for p in env_list("TTS_QUOTA_ALERT_PERCENTS", "80,100") if 0 < int(p) <= 999})
# Portal pages behind a proxy: session and CSRF cookies only over HTTPS when it says so.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)

# --- email (invitations, password reset): printed to the console unless an SMTP server is configured -----------
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "CallWaiting TTS <noreply@localhost>")

# --- i18n, static -----------------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))

# --- media storage: reference audio and conditioning latents of cloned voices ---------------------------------
# Local folder by default; any S3-compatible store when a bucket is configured (AWS_* / S3 endpoint variables
# of django-storages: AWS_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_S3_REGION_NAME).
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
AWS_S3_ENDPOINT_URL = os.environ.get("AWS_S3_ENDPOINT_URL") or None  # MinIO, R2, ...; None: AWS itself
AWS_S3_REGION_NAME = os.environ.get("AWS_S3_REGION_NAME") or None
STORAGES = {
    "default": (
        {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"default_acl": None, "querystring_auth": True}}
        if AWS_STORAGE_BUCKET_NAME
        else {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(MEDIA_ROOT)}}
    ),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Uploads above this size are written to a temporary file, never held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
# --- what a client may send (callwaiting/limits.py; enforced by the server before it reads, callwaiting/server.py)
# Request bodies: the cloning upload TTS_MAX_UPLOAD_BYTES (below) plus 64 KiB for its other fields; every other
# API request (JSON or form) at most DATA_UPLOAD_MAX_MEMORY_SIZE. Over it: 413 before the body is read.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)  # Django's default, 2.5 MiB
# The request line and header fields together (also the most one header line may have); over it: 431
# (414 for a request line alone over it). Twisted's own limit is 16 KiB.
HTTP_MAX_HEADER_BYTES = env_int("HTTP_MAX_HEADER_BYTES", 16 * 1024)
# A WebSocket message (and frame) from a client, /v1/stream; over it: the error frame message_too_large, then
# close 1009. A synthesize frame carries at most TTS_MAX_TEXT_CHARS of text or its SSML.
WS_MAX_MESSAGE_BYTES = env_int("WS_MAX_MESSAGE_BYTES", 1024 * 1024)

# --- Celery: voice processing. Embedded: tasks run in-process when enqueued; production: Redis broker. -------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True  # tasks are idempotent: a worker that dies mid-task hands it to another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# With acks late, a task whose worker died (kill -9, lost node) goes back to the queue once it has been
# unacknowledged this long, so it must exceed the longest task (cloning: TTS_CLONE_TIMEOUT). Unacknowledged
# tasks are swept for this often, as a fraction of it.
_visibility_timeout = env_int("CELERY_VISIBILITY_TIMEOUT", 900)
# `celery -A callwaiting beat` (one per deployment) runs the periodic tasks.
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-voices": {"task": "voices.tasks.voices_requeue_stale_task", "schedule": 600.0},
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _visibility_timeout,
    "unacked_restore_interval": max(1, min(10, _visibility_timeout // 10)),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_IGNORE_RESULT = True

# --- browsers: CORS on the API (/v1/...) only, never the portal or admin ------------------------------------
# The origins whose pages may call the API (comma-separated, e.g. https://app.example.com); empty: none. The
# middleware sits in the API's own handler (callwaiting.middleware.ApiHandler), so the portal and admin never
# answer a cross-origin request; CORS_URLS_REGEX says the same for anyone who mounts it elsewhere.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
CORS_URLS_REGEX = r"^/v1/"
# Keys travel in the Authorization header, never in cookies: no credentialed requests.
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_METHODS = ("GET", "POST", "PATCH", "DELETE", "OPTIONS")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "x-request-id")
# What the API sets that a page may read (beyond the CORS-safelisted ones such as Content-Type).
CORS_EXPOSE_HEADERS = ("X-Request-ID", "X-Sample-Rate", "X-Worker-Id", "Retry-After", "WWW-Authenticate")
CORS_PREFLIGHT_MAX_AGE = env_int("CORS_PREFLIGHT_MAX_AGE", 600)

# --- REST framework ---------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tenants.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["tenants.throttling.TenantRateThrottle"],
    "DEFAULT_PARSER_CLASSES": [
        "callwaiting.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "callwaiting.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# --- API documentation: the OpenAPI schema at /v1/schema, Swagger UI at /docs, ReDoc at /docs/redoc -----------
# Generated from the views and serializers; the shared pieces (error shape, auth schemes, the WebSocket
# protocol in the description) are in callwaiting/openapi.py. Both are public, like the seed README's /docs.
SPECTACULAR_SETTINGS = {
    "TITLE": "CallWaiting TTS API",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The UI's JavaScript and CSS come from this server's static files (drf-spectacular-sidecar), never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # validatorUrl None: Swagger UI would otherwise load a badge from validator.swagger.io (the schema's URL
    # sent to a third party). The key typed into Authorize is not persisted in the browser's storage.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "displayRequestDuration": True, "validatorUrl": None},
    # Request and response bodies as separate components: an upload's file field is binary in the request.
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "callwaiting.openapi.postprocess_schema",
    ],
}

# --- synthesis --------------------------------------------------------------------------------------------
TTS_ENGINES = env_list("TTS_ENGINES", "espeak,xtts")
# Engines are pluggable: {"name": "dotted.path.EngineClass"} adds engines or replaces built-in ones.
TTS_ENGINE_CLASSES = json.loads(os.environ.get("TTS_ENGINE_CLASSES") or "{}")
TTS_MAX_TEXT_CHARS = env_int("TTS_MAX_TEXT_CHARS", 5000)
# Text streamed in pieces on /v1/stream ("text" messages) that runs this long without the end of a sentence is
# spoken up to its last clause boundary or space, so the buffer stays small and speech never waits for long.
TTS_STREAM_SENTENCE_MAX_CHARS = env_int("TTS_STREAM_SENTENCE_MAX_CHARS", 300)
# Audio one request may make, pauses included (a request whose pauses alone exceed it is refused up front).
TTS_MAX_AUDIO_SECONDS = env_float("TTS_MAX_AUDIO_SECONDS", 900.0)
# A streaming=false response is collected in memory up to this size, then in a temporary file.
TTS_RESPONSE_MEMORY_BYTES = env_int("TTS_RESPONSE_MEMORY_BYTES", 1024 * 1024)
# A client's request id (X-Request-ID / request_id) may be tried this many times (a retry is billed once).
TTS_REQUEST_MAX_ATTEMPTS = env_int("TTS_REQUEST_MAX_ATTEMPTS", 3)
# The model worker runs inside the web process unless dedicated `manage.py tts_worker` processes serve jobs.
TTS_EMBEDDED_WORKER = env_bool("TTS_EMBEDDED_WORKER", True)
# Jobs one worker serves at once; a batching engine (XTTS) raises it to its batch slots.
TTS_WORKER_CAPACITY = env_int("TTS_WORKER_CAPACITY", 8)
# The Redis Stream that model workers take jobs from (production); web processes' and workers' inboxes are
# named under it. Separate worker pools (e.g. per GPU kind) can use separate queues.
TTS_JOB_QUEUE = os.environ.get("TTS_JOB_QUEUE", "cw:tts:jobs")
# How long a job may wait for a worker to take it before the client gets a 503.
TTS_JOB_ACCEPT_TIMEOUT = env_float("TTS_JOB_ACCEPT_TIMEOUT", 5.0)
# How long a stream may go without a chunk before it is treated as failed.
TTS_CHUNK_TIMEOUT = env_float("TTS_CHUNK_TIMEOUT", 30.0)
# Backpressure: a worker keeps at most this many audio chunks of one stream in flight (sent but not yet
# written to the client); past that it waits, and so does its engine. A client that reads nothing for
# TTS_CLIENT_STALL_TIMEOUT seconds has its connection dropped and its job cancelled.
TTS_STREAM_WINDOW = env_int("TTS_STREAM_WINDOW", 8)
TTS_CLIENT_STALL_TIMEOUT = env_float("TTS_CLIENT_STALL_TIMEOUT", 30.0)
# Twilio Media Streams bridge (/v1/twilio): how far ahead of playback audio is sent to Twilio. Enough to ride out
# network jitter; small, so that a barge-in (clear) silences the call at once.
TTS_TWILIO_LEAD_SECONDS = env_float("TTS_TWILIO_LEAD_SECONDS", 0.25)
# A usage row that cannot be written because the database is unreachable (restarting, failing over) is tried
# again for this long before the request fails; meanwhile its client waits for the end of its answer.
TTS_USAGE_WRITE_RETRY_SECONDS = env_float("TTS_USAGE_WRITE_RETRY_SECONDS", 30.0)
# Phrase cache (synthesis/phrase_cache.py): synthesized audio kept per phrase for requests that ask for it (the
# `cache` field, or the tenant's setting). Redis when REDIS_URL is set (shared by every web process), else this
# process's memory. At most TTS_PHRASE_CACHE_BYTES of audio, least recently used out first; an entry lives at
# most TTS_PHRASE_CACHE_TTL seconds; phrases longer than TTS_PHRASE_CACHE_MAX_CHARS are never cached.
TTS_PHRASE_CACHE_BYTES = env_int("TTS_PHRASE_CACHE_BYTES", 256 * 1024 * 1024)
TTS_PHRASE_CACHE_TTL = env_float("TTS_PHRASE_CACHE_TTL", 7 * 24 * 3600.0)
TTS_PHRASE_CACHE_MAX_CHARS = env_int("TTS_PHRASE_CACHE_MAX_CHARS", 500)
# Workers beat this often; the web side treats a worker silent for TTS_WORKER_DEAD_AFTER seconds as dead
# (a stream it was serving fails then, instead of waiting for TTS_CHUNK_TIMEOUT).
TTS_WORKER_HEARTBEAT_SECONDS = env_float("TTS_WORKER_HEARTBEAT_SECONDS", 0.5)
TTS_WORKER_DEAD_AFTER = env_float("TTS_WORKER_DEAD_AFTER", 1.5)
# Lifetime of a WebSocket token (POST /v1/stream/token): single-use, for browsers that cannot send a key header.
TTS_STREAM_TOKEN_SECONDS = max(1, env_int("TTS_STREAM_TOKEN_SECONDS", 60))
# How long a process may answer a request's key and voice rows from memory (callwaiting.lookup_cache); writes
# through Django are seen at once, others (SQL by hand, another process in the embedded mode) within this. 0: off.
TTS_LOOKUP_CACHE_SECONDS = max(0, env_int("TTS_LOOKUP_CACHE_SECONDS", 10))
TTS_VOICES_CONFIG = Path(os.environ.get("TTS_VOICES_CONFIG", BASE_DIR / "config" / "voices.json"))
# POST /v1/audio/speech: OpenAI model names -> engines, OpenAI voice names -> voices (see the file).
TTS_OPENAI_CONFIG = Path(os.environ.get("TTS_OPENAI_CONFIG", BASE_DIR / "config" / "openai.json"))
# eSpeak NG hands audio over in blocks of this many milliseconds.
ESPEAK_CHUNK_MS = env_int("ESPEAK_CHUNK_MS", 100)

# XTTS v2: weights from XTTS_MODEL_DIR, or downloaded once into TTS_HOME when the license is accepted
# (TTS_AGREE_TO_CPML=1 or COQUI_TOS_AGREED=1). Streaming: a small first chunk for time to first audio, larger
# ones after it; the HiFi-GAN window's left context and right lookahead are in decoder frames (256 samples).
XTTS_MODEL_DIR = os.environ.get("XTTS_MODEL_DIR", "")
XTTS_DEVICE = os.environ.get("XTTS_DEVICE", "")  # empty: CUDA when available, else CPU
XTTS_FIRST_CHUNK_TOKENS = env_int("XTTS_FIRST_CHUNK_TOKENS", 6)
XTTS_CHUNK_TOKENS = env_int("XTTS_CHUNK_TOKENS", 24)
XTTS_CONTEXT_FRAMES = env_int("XTTS_CONTEXT_FRAMES", 16)
XTTS_LOOKAHEAD_FRAMES = env_int("XTTS_LOOKAHEAD_FRAMES", 8)
XTTS_CONDITIONING_CACHE = env_int("XTTS_CONDITIONING_CACHE", 64)
# Streams one worker decodes together (its GPT batch slots; each holds a KV cache). 0: as many as half the
# GPU's free memory holds, at most 256; 16 on CPU.
XTTS_BATCH_SLOTS = env_int("XTTS_BATCH_SLOTS", 0)
# The GPT's precision: float32, bfloat16 or float16 (GPU only). Empty: bfloat16 on CUDA, float32 on CPU.
# LayerNorms, embeddings, the output head, logits and sampling stay float32.
XTTS_DTYPE = os.environ.get("XTTS_DTYPE", "")
# CUDA graphs for the decode step (one per batch-size bucket); off, or on CPU, the step runs eagerly.
XTTS_CUDA_GRAPHS = env_bool("XTTS_CUDA_GRAPHS", True)

# Voice cloning uploads.
TTS_CLONING_ENGINE = os.environ.get("TTS_CLONING_ENGINE", "xtts")
TTS_MAX_UPLOAD_BYTES = env_int("TTS_MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
TTS_REFERENCE_MIN_SECONDS = env_float("TTS_REFERENCE_MIN_SECONDS", 3.0)
TTS_REFERENCE_MAX_SECONDS = env_float("TTS_REFERENCE_MAX_SECONDS", 60.0)
TTS_CLONE_TIMEOUT = env_float("TTS_CLONE_TIMEOUT", 120.0)
# An upload still processing after this long lost its task and is queued again (celery beat); one processing
# after VOICE_PROCESSING_GIVE_UP_AFTER is marked failed.
VOICE_PROCESSING_RETRY_AFTER = env_int("VOICE_PROCESSING_RETRY_AFTER", 3600)
VOICE_PROCESSING_GIVE_UP_AFTER = env_int("VOICE_PROCESSING_GIVE_UP_AFTER", 24 * 3600)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
