"""WebSocket routes, mounted by callwaiting/asgi.py."""
from django.urls import path, re_path

from synthesis.consumers import StreamConsumer, UnknownPathConsumer
from synthesis.twilio import TwilioMediaStreamConsumer

websocket_urlpatterns = [
    path("v1/stream", StreamConsumer.as_asgi(), name="stream"),
    path("v1/twilio", TwilioMediaStreamConsumer.as_asgi(), name="twilio"),
    re_path(r"", UnknownPathConsumer.as_asgi()),  # last: every other path gets a clean 4404
]
