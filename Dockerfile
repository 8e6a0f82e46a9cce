# syntax=docker/dockerfile:1
#
# CallWaiting TTS: one image for every process role; the command picks the role.
#   web        (default CMD)  daphne serving HTTP + WebSocket on $HOST:$PORT
#   tts worker               python manage.py tts_worker
#   celery                   celery -A callwaiting worker   (voice processing)
#   celery beat              celery -A callwaiting beat     (periodic tasks, exactly one)
# docker-compose.yml wires them into the production topology (PostgreSQL, Redis, separate model workers).
#
# No system packages are needed: the espeakng-loader wheel ships libespeak-ng and its data, psycopg[binary]
# ships libpq, and torch wheels (for XTTS) bring their own CUDA runtime; the NVIDIA container toolkit adds
# the driver on GPU hosts. Model downloads (TTS_HOME) and any other library cache (XDG_CACHE_HOME: Hugging
# Face, torch hub) go to the /models volume, so weights are fetched once, not per container.
#
# Two builds of the same code, chosen with the TORCH_INDEX_URL build argument:
#   default (empty)   PyPI's torch, which is the CUDA 13 build (CUDA runtime in nvidia-* wheels, several GB;
#                     the host needs an NVIDIA driver for CUDA 13, R580 or newer). GPU workers run this image;
#                     any other role can too.
#   CPU-only          docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t callwaiting-tts:cpu .
#                     torch, torchaudio and torchcodec from PyTorch's CPU-only index, no CUDA libraries: a much
#                     smaller image for web, celery and CPU (eSpeak) workers. XTTS still runs in it, on the CPU.

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=callwaiting.settings \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    TTS_HOME=/models \
    XDG_CACHE_HOME=/models/.cache

# A fixed uid/gid so volume ownership is predictable across rebuilds and hosts.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when requirements.txt (or TORCH_INDEX_URL) changes. With an
# index, torch, torchaudio and torchcodec come from it first at the versions requirements.txt pins (a "+cpu"
# build satisfies the pin), so the second install keeps them instead of fetching PyPI's CUDA builds. All
# three: PyPI's torchaudio and torchcodec link against torch's CUDA libraries.
ARG TORCH_INDEX_URL=""
COPY requirements.txt ./
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" $(grep -oE '^(torch|torchaudio|torchcodec)==[^ #]+' requirements.txt); \
    fi \
    && pip install -r requirements.txt

# The project's fixed top-level layout, listed explicitly so a local .venv, var/ or test caches in the
# build context never end up in the image.
COPY manage.py ./
COPY callwaiting ./callwaiting
COPY tenants ./tenants
COPY voices ./voices
COPY synthesis ./synthesis
COPY templates ./templates
COPY config ./config

# Code stays root-owned (COPY's default) and read-only to the service; only the data and model volumes are
# writable. Creating them here, owned by the service user, gives fresh named volumes the same ownership.
RUN mkdir -p /data /models && chown app:app /data /models
VOLUME ["/data", "/models"]

USER app

EXPOSE 8000

# curl-free: the image's own Python. /v1/health answers 503 when no engine can serve (for example no live
# tts_worker in the production topology), which marks the container unhealthy. ALLOWED_HOSTS must keep
# 127.0.0.1 for this probe. Worker containers, which serve no HTTP, disable it in docker-compose.yml.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/v1/health', timeout=4)"]

# A shell only to expand $HOST/$PORT; exec hands PID 1 to daphne so SIGTERM reaches it directly.
# daphne with the request limits that act before a body is read (callwaiting/server.py).
CMD ["sh", "-c", "exec python -m callwaiting.server -b \"$HOST\" -p \"$PORT\" callwaiting.asgi:application"]
