"""Accounts (django-allauth under /portal/accounts/): email login, no sign-up, logout, password change and reset,
optional TOTP two-factor; all inside the portal's frame."""
import re

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value, yield_hotp_counters_from_time
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from tests.factories import STAFF_PASSWORD

pytestmark = pytest.mark.django_db
LOGIN = "/portal/accounts/login/"


def _login(client, email="owner@acme.example", password=STAFF_PASSWORD):
    return client.post(LOGIN, {"login": email, "password": password})


def test_staff_log_in_by_email_and_land_on_the_dashboard(owner, client):
    page = client.get(LOGIN)
    assert page.status_code == 200 and b'<label for="id_login">' in page.content and b"sign up" not in page.content
    response = _login(client, email="OWNER@acme.example")
    assert response.status_code == 302 and response["Location"] == "/portal/"
    assert b"Acme Calls" in client.get("/portal/").content


def test_a_wrong_password_is_refused(owner, client):
    response = _login(client, password="wrong")
    assert response.status_code == 200 and b"not correct" in response.content
    assert client.get("/portal/").status_code == 302


def test_nobody_signs_up(client):
    response = client.post("/portal/accounts/signup/", {"email": "me@example.com", "password1": "x-long-pass-1",
                                                         "password2": "x-long-pass-1"})
    assert b"Sign Up Closed" in response.content
    assert not get_user_model().objects.exists()


def test_logging_out(owner_client):
    assert owner_client.post("/portal/accounts/logout/").status_code == 302
    assert owner_client.get("/portal/").status_code == 302


def test_password_change_in_the_portal_frame(owner, client):
    _login(client)
    page = client.get("/portal/accounts/password/change/")
    assert b'aria-label="Portal"' in page.content  # the portal's navigation around allauth's form
    client.post("/portal/accounts/password/change/", {
        "oldpassword": STAFF_PASSWORD, "password1": "another-long-pass-7", "password2": "another-long-pass-7"})
    assert _login(Client(), password="another-long-pass-7").status_code == 302


def test_password_reset_by_email(owner, client):
    client.post("/portal/accounts/password/reset/", {"email": "owner@acme.example"})
    assert mail.outbox and mail.outbox[0].to == ["owner@acme.example"]
    link = re.search(r"http://testserver(/portal/accounts/password/reset/key/\S+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    action = form_page.redirect_chain[-1][0] if form_page.redirect_chain else link
    done = client.post(action, {"password1": "reset-long-pass-9", "password2": "reset-long-pass-9"})
    assert done.status_code == 302
    assert _login(Client(), password="reset-long-pass-9").status_code == 302


def _code(secret: str) -> str:
    counter = list(yield_hotp_counters_from_time())[len(list(yield_hotp_counters_from_time())) // 2]
    return format_hotp_value(hotp_value(secret, counter))


def test_totp_two_factor_set_up_from_the_portal_then_asked_at_login(owner, client):
    _login(client)
    assert b'href="/portal/accounts/2fa/"' in client.get("/portal/").content  # reachable from every page
    confirm = client.get("/portal/accounts/2fa/totp/activate/")  # allauth asks for the password again first
    assert confirm.status_code == 302 and confirm["Location"].startswith("/portal/accounts/reauthenticate/")
    assert b'aria-label="Portal"' in client.get(confirm["Location"]).content
    client.post(confirm["Location"], {"password": STAFF_PASSWORD})
    activate = client.get("/portal/accounts/2fa/totp/activate/")
    assert activate.status_code == 200
    secret = activate.context["form"].secret
    response = client.post("/portal/accounts/2fa/totp/activate/", {"code": _code(secret)})
    assert response.status_code == 302

    again = Client()
    response = _login(again)
    assert response.status_code == 302 and response["Location"] == "/portal/accounts/2fa/authenticate/"
    assert again.get("/portal/").status_code == 302  # not in before the code
    response = again.post("/portal/accounts/2fa/authenticate/", {"code": _code(secret)})
    assert response.status_code == 302 and again.get("/portal/").status_code == 200
