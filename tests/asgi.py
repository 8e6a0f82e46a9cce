"""Drive the real ASGI application (the one daphne serves) in-process, message by message.

Unlike Django's test client this sees the response as the server sends it: each body message with the
time it arrived, so tests can tell streamed audio from a buffered clip, and can disconnect mid-stream.
"""
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from asgiref.testing import ApplicationCommunicator
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart


@dataclass
class AsgiResponse:
    status: int
    headers: dict[str, str]
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    complete: bool = False  # the server ended the body itself (more_body false)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def json(self):
        return json.loads(self.body)


def _encode(json_body=None, form=None, multipart=None, body=b"", content_type=None):
    if json_body is not None:
        return json.dumps(json_body).encode(), "application/json"
    if form is not None:
        return urlencode(form).encode(), "application/x-www-form-urlencoded"
    if multipart is not None:
        return encode_multipart(BOUNDARY, multipart), MULTIPART_CONTENT
    return body, content_type


class AsgiClient:
    def __init__(self, application=None, *, key: str | None = None, timeout: float = 20):
        if application is None:
            from callwaiting.asgi import application
        self.application = application
        self.key = key
        self.timeout = timeout

    def _scope(self, method, path, query, headers, body, content_type):
        all_headers = [(b"host", b"testserver")]
        if self.key:
            all_headers.append((b"authorization", f"Bearer {self.key}".encode()))
        if content_type:
            all_headers.append((b"content-type", content_type.encode()))
        if body:
            all_headers.append((b"content-length", str(len(body)).encode()))
        all_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": urlencode(query or {}).encode(),
            "root_path": "",
            "headers": all_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }

    async def request(
        self, method, path, *, query=None, headers=None, json=None, form=None, multipart=None, body=b"",
        content_type=None, disconnect_after_chunks=None, on_chunk=None,
    ) -> AsgiResponse:
        body, content_type = _encode(json, form, multipart, body, content_type)
        communicator = ApplicationCommunicator(
            self.application, self._scope(method, path, query, headers, body, content_type)
        )
        await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
        start = await communicator.receive_output(self.timeout)
        assert start["type"] == "http.response.start", start
        response = AsgiResponse(
            status=start["status"],
            headers={name.decode().lower(): value.decode() for name, value in start.get("headers", [])},
        )
        while True:
            message = await communicator.receive_output(self.timeout)
            response.chunks.append((time.perf_counter(), message.get("body", b"")))
            if on_chunk is not None:
                await on_chunk(response)
            if not message.get("more_body", False):
                response.complete = True
                break
            if disconnect_after_chunks is not None and len(response.chunks) >= disconnect_after_chunks:
                await communicator.send_input({"type": "http.disconnect"})
                break
        await communicator.wait(self.timeout)
        return response

    async def get(self, path, **kwargs) -> AsgiResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path, **kwargs) -> AsgiResponse:
        return await self.request("POST", path, **kwargs)
