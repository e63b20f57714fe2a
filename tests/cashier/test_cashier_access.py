"""Who may make a claim through the cashier screen: the page's own script on this machine, or
behind the till PIN; never another web site, never a request without the page's CSRF token."""

from __future__ import annotations

import socket

import pytest
import requests
from cashier_page import PageClient, make_daemon, page_url

ADDRESS = "bram.dekker@example.nl"


def claims(daemon) -> list:
    return daemon.store.claims(limit=100)


def test_a_claim_without_the_csrf_token_is_refused_and_not_stored(daemon):
    page = PageClient(page_url(daemon))
    answer = page.claim(ADDRESS)
    assert answer.status_code == 403 and "CSRF" in answer.json()["error"]
    answer = page.claim(ADDRESS, headers={"X-CSRF-Token": "0" * 64})
    assert answer.status_code == 403
    assert claims(daemon) == []


def test_the_pages_own_token_makes_the_claim(daemon):
    page = PageClient(page_url(daemon))
    answer = page.claim(ADDRESS, headers={"X-CSRF-Token": page.csrf()})
    assert answer.status_code == 200 and answer.json()["outcome"] == "accepted"
    assert answer.json()["title"] == "Geaccepteerd b***@example.nl"
    [claim] = claims(daemon)
    assert (claim.customer, claim.source, claim.state) == (ADDRESS, "cashier", "pending")


@pytest.mark.parametrize(
    "browser_says",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://till-2.shop.lan"},
    ],
)
def test_a_cross_origin_post_is_refused_even_with_the_token(daemon, browser_says):
    page = PageClient(page_url(daemon))
    answer = page.claim(ADDRESS, headers={"X-CSRF-Token": page.csrf(), **browser_says})
    assert answer.status_code == 403 and "cross-origin" in answer.json()["error"]
    assert claims(daemon) == []


def test_a_page_that_rebinds_its_name_to_loopback_gets_nothing(daemon):
    """DNS rebinding: evil.example resolves to 127.0.0.1, so its script could read the page."""
    url = page_url(daemon)
    answer = requests.get(url, headers={"Host": "evil.example"}, timeout=5)
    assert answer.status_code == 421 and "csrf-token" not in answer.text
    ok = requests.get(url.replace("127.0.0.1", "localhost"), timeout=5)
    assert ok.status_code == 200 and "csrf-token" in ok.text


def test_every_answer_forbids_framing_and_foreign_scripts(daemon):
    answer = requests.get(page_url(daemon), timeout=5)
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert "default-src 'self'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert "Access-Control-Allow-Origin" not in answer.headers
    preflight = requests.options(
        f"{page_url(daemon)}api/claim",
        timeout=5,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code >= 400 and "Access-Control-Allow-Origin" not in preflight.headers


def test_bodies_that_are_not_a_small_json_address_are_refused(daemon):
    page = PageClient(page_url(daemon))
    token = {"X-CSRF-Token": page.csrf()}
    huge = page.http.post(
        f"{page.url}api/claim",
        data=b"{" + b" " * 100_000 + b"}",
        headers={**token, "Content-Type": "application/json"},
        timeout=5,
    )
    assert huge.status_code == 413
    form = page.http.post(
        f"{page.url}api/claim", data={"address": ADDRESS}, headers=token, timeout=5
    )
    assert form.status_code == 400
    assert claims(daemon) == []


def test_the_same_header_and_connection_limits_as_the_other_listeners(daemon):
    answer = requests.get(page_url(daemon), headers={"X-Padding": "p" * 20_000}, timeout=5)
    assert answer.status_code == 431
    port = daemon.cashier_server.port
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
    try:
        assert requests.get(page_url(daemon), timeout=5).status_code == 200
        assert daemon.cashier_server.open_connections <= 32
    finally:
        for connection in idle:
            connection.close()


def test_with_a_pin_nothing_works_before_logging_in(tmp_path, kassa, cloud):
    daemon = make_daemon(tmp_path, kassa, cloud, pin="4821")
    daemon.start()
    try:
        url = page_url(daemon)
        page = PageClient(url)
        login = page.http.get(url, timeout=5)
        assert 'name="pin"' in login.text and "Pincode van de kassa" in login.text
        assert 'name="csrf-token"' not in login.text
        assert page.http.get(f"{url}api/outcomes", timeout=5).status_code == 401
        assert page.claim(ADDRESS, headers={"X-CSRF-Token": "x"}).status_code == 401
        login_csrf = login.text.split('name="csrf" value="')[1].split('"')[0]

        wrong = page.http.post(
            f"{url}login",
            data={"pin": "0000", "csrf": login_csrf},
            allow_redirects=False,
            timeout=5,
        )
        assert wrong.status_code == 303 and "Set-Cookie" not in wrong.headers
        right = page.http.post(
            f"{url}login",
            data={"pin": "4821", "csrf": login_csrf},
            allow_redirects=False,
            timeout=5,
        )
        cookie = right.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        answer = page.claim(ADDRESS, headers={"X-CSRF-Token": page.csrf()})
        assert answer.json()["outcome"] == "accepted"
        assert len(claims(daemon)) == 1
    finally:
        daemon.stop()


def test_five_wrong_pins_lock_the_login_even_for_the_right_one(tmp_path, kassa, cloud):
    daemon = make_daemon(tmp_path, kassa, cloud, pin="4821")
    daemon.start()
    try:
        url = page_url(daemon)
        http = requests.Session()
        token = http.get(url, timeout=5).text.split('name="csrf" value="')[1].split('"')[0]
        for guess in ("0000", "1111", "2222", "3333", "4444"):
            http.post(f"{url}login", data={"pin": guess, "csrf": token}, timeout=5)
        right = http.post(
            f"{url}login", data={"pin": "4821", "csrf": token}, allow_redirects=False, timeout=5
        )
        assert "Set-Cookie" not in right.headers
        locked = http.get(url.rstrip("/") + right.headers["Location"], timeout=5)
        assert "Te vaak een onjuiste pincode" in locked.text
    finally:
        daemon.stop()


def test_the_page_is_in_english_when_configured(tmp_path, kassa, cloud):
    daemon = make_daemon(tmp_path, kassa, cloud, language="en")
    daemon.start()
    try:
        page = PageClient(page_url(daemon))
        assert "Customer&#x27;s e-mail address" in page.http.get(page.url, timeout=5).text
        refused = page.claim("bram@example", headers={"X-CSRF-Token": page.csrf()}).json()
        assert refused["title"] == "Refused"
        assert refused["detail"].startswith("This is not a valid e-mail address")
    finally:
        daemon.stop()
