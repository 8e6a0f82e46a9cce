"""The portal under daphne (`python -m callwaiting.server`, as `make run` serves it): the demo owner logs in over
TCP, creates a key that the API takes, revokes it and the API refuses it; static files and error pages."""
import http.client
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest

from tests.live import start_server

DEMO_PASSWORD = "demo-password-for-tests"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("portal"), DEMO_PASSWORD=DEMO_PASSWORD)


class Response:
    def __init__(self, raw: http.client.HTTPResponse):
        self.status_code = raw.status
        self.headers = {name.lower(): value for name, value in raw.getheaders()}
        self.content = raw.read()
        self.text = self.content.decode(errors="replace")

    def json(self):
        import json

        return json.loads(self.content)


class Browser:
    """Just enough of a browser over one port: cookies kept, redirects not followed, forms posted url-encoded."""

    def __init__(self, port: int):
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method, path, data=None, headers=None) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        body = None
        if data is not None:
            body = urlencode(data, doseq=True)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=headers)
        raw = connection.getresponse()
        for header in raw.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        response = Response(raw)
        connection.close()
        return response

    def get(self, path, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path, data, **kwargs) -> Response:
        return self.request("POST", path, data={**data, "csrfmiddlewaretoken": self.cookies.get("csrftoken", "")},
                            **kwargs)


def test_log_in_create_a_key_use_it_revoke_it(server):
    browser = Browser(server["port"])
    assert browser.get("/portal/").headers["location"].startswith("/portal/accounts/login/")
    browser.get("/portal/accounts/login/")
    login = browser.post("/portal/accounts/login/", {"login": "demo@example.com", "password": DEMO_PASSWORD})
    assert login.status_code == 302 and login.headers["location"] == "/portal/"
    assert "Demo tenant" in browser.get("/portal/").text

    created = browser.post("/portal/keys/", {"name": "from the portal", "kind": "prod", "scopes": ["voices"]})
    assert created.status_code == 201
    plaintext = re.search(r'id="new-key"[^>]*value="(sk_prod_\w+)"', created.text).group(1)
    key_id = re.search(r'/portal/keys/(\d+)/revoke/"[^>]*>Revoke<span class="visually-hidden"> from the portal',
                       created.text).group(1)

    api = Browser(server["port"]).get("/v1/voices", headers={"Authorization": f"Bearer {plaintext}"})
    assert api.status_code == 200

    assert browser.post(f"/portal/keys/{key_id}/revoke/", {}).status_code == 302
    api = Browser(server["port"]).get("/v1/voices", headers={"Authorization": f"Bearer {plaintext}"})
    assert api.status_code == 401 and api.json()["error"]["code"] == "api_key_revoked"

    missing = browser.get("/portal/keys/999999/revoke/")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


def test_static_files_and_the_login_page_without_a_session(server):
    visitor = Browser(server["port"])
    css = visitor.get("/static/portal/portal.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and ".skip-link" in css.text
    htmx = visitor.get("/static/django_htmx/htmx-2.min.js")
    assert htmx.status_code == 200 and len(htmx.content) > 10_000
    page = visitor.get("/portal/accounts/login/")
    assert page.status_code == 200 and "/static/portal/portal.css" in page.text
