"""ASGI entry point, the composition root: Django for HTTP (the API's lean handler for /v1/, the full stack for
the portal and admin) and Channels for the WebSocket API, wrapped in the middleware of callwaiting/middleware.py.
Serve it with `python -m callwaiting.server` (daphne with the server-level request limits, callwaiting/server.py)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")
django_application = get_asgi_application()  # sets Django up: everything below needs it

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from callwaiting.middleware import (  # noqa: E402
    ApiHandler,
    BodyLimitMiddleware,
    DaphneStreamingMiddleware,
    EmbeddedWorkerMiddleware,
    RequestCleanupMiddleware,
    StaticFilesHandler,
    path_router,
)
from synthesis.routing import websocket_urlpatterns  # noqa: E402

application = RequestCleanupMiddleware(DaphneStreamingMiddleware(BodyLimitMiddleware(EmbeddedWorkerMiddleware(
    ProtocolTypeRouter({
        # /static/ (the docs' assets, the admin's CSS) is served by this process: see StaticFilesHandler.
        "http": path_router(ApiHandler(), StaticFilesHandler(django_application)),
        "websocket": URLRouter(websocket_urlpatterns),
    })
))))
