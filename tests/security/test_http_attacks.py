"""Attacks over plain HTTP against a real server: label flooding, rate-limit bypasses, trickled
bodies, forged log lines and an open /metrics. Each test fails if its hole reopens."""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import string
import time

import httpx
import pytest

from tests.security.conftest import API_KEY, OTHER_KEY, Server, StartServer

pytestmark = pytest.mark.slow

METRICS_KEY = "metrics-scraper-key-5f2a9c1e"


def raw_request(server: Server, method: str, path: str, headers: dict[str, str]) -> int:
    """Send `path` exactly as given (no client-side normalisation); the response status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", "localhost")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def route_series(server: Server) -> set[str]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    series = set(
        re.findall(r"^(rnn_sentiment_http_requests_total\{.*\}) ", text, flags=re.MULTILINE)
    )
    assert series, text[:500]
    return series


def test_random_paths_add_no_metric_series(start_server: StartServer) -> None:
    server = start_server(APP_CORS_ORIGINS="https://app.example.org", APP_ACCESS_LOG="false")
    # One of each kind first, so the series they legitimately add exist before counting.
    warm_up = [
        ("GET", "/static/x/../redoc/LICENSE", {}),
        ("GET", "/no-such-page", {}),
        (
            "OPTIONS",
            "/anything",
            {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
        ),
        ("POST", "/no-such-page", {}),
    ]
    for method, path, headers in warm_up:
        raw_request(server, method, path, headers)
    before = route_series(server)
    rng = random.Random(14)
    statuses = set()
    for index in range(1000):
        word = "".join(rng.choices(string.ascii_letters + string.digits, k=12))
        method, path, headers = [
            ("GET", f"/static/{word}{index}/../redoc/LICENSE", {}),
            ("GET", f"/{word}/{index}", {}),
            (
                "OPTIONS",
                f"/{word}{index}",
                {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"},
            ),
            ("POST", f"/predict/{word}", {}),
        ][index % 4]
        statuses.add(raw_request(server, method, path, headers))
    after = route_series(server)
    assert 200 in statuses  # the dot-segment path really is served
    assert after - before <= {s for s in after if 'route="/metrics"' in s}, (
        "new series: " + ", ".join(sorted(after - before)[:10])
    )
    routes = {re.search(r'route="([^"]*)"', series).group(1) for series in after}  # type: ignore[union-attr]
    assert routes <= {"<unmatched>", "/static/{path}", "/metrics", "/readyz"}


def test_every_spelling_of_a_key_draws_on_one_bucket(start_server: StartServer) -> None:
    server = start_server(APP_API_KEYS=f"{API_KEY},{OTHER_KEY}", APP_RATE_LIMIT_PER_MINUTE="3")
    spellings = [
        f"Bearer {API_KEY}",
        f"bearer {API_KEY}",
        f"BEARER    {API_KEY}",
        f"Bearer {API_KEY}",
    ]
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        statuses = [
            client.post(
                "/predict", json={"text": "fine"}, headers={"Authorization": auth}
            ).status_code
            for auth in spellings
        ]
        # The same bucket on FastAPI's routes as on the fast /predict path.
        tokenize = client.post(
            "/tokenize", json={"text": "fine"}, headers={"Authorization": f"bearer\t{API_KEY}"}
        )
        other = client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"bearer  {OTHER_KEY}"}
        )
    assert statuses == [200, 200, 200, 429]
    assert tokenize.status_code == 429
    assert other.status_code == 200


def test_forwarded_clients_are_trusted_only_from_the_configured_proxy(
    start_server: StartServer,
) -> None:
    behind_proxy = start_server(APP_RATE_LIMIT_PER_MINUTE="2", APP_TRUSTED_PROXIES="127.0.0.1")
    exposed = start_server(APP_RATE_LIMIT_PER_MINUTE="2")

    def statuses(server: Server, forwarded_for: list[str]) -> list[int]:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            return [
                client.post(
                    "/predict", json={"text": "fine"}, headers={"X-Forwarded-For": address}
                ).status_code
                for address in forwarded_for
            ]

    # Behind the proxy: each client it names has its own bucket, and a client cannot escape
    # its bucket by prepending addresses of its own (the proxy's entry is the last one).
    assert statuses(behind_proxy, ["203.0.113.7"] * 3) == [200, 200, 429]
    assert statuses(behind_proxy, ["198.51.100.1, 203.0.113.7"]) == [429]
    assert statuses(behind_proxy, ["203.0.113.8"]) == [200]
    # Not behind a trusted proxy: the header is ignored, so inventing addresses buys nothing.
    assert statuses(exposed, ["203.0.113.7", "203.0.113.8", "203.0.113.9"]) == [200, 200, 429]


def test_a_trickled_body_is_cut_off_at_its_deadline(start_server: StartServer) -> None:
    server = start_server(APP_BODY_TIMEOUT_S="2", APP_BODY_DEADLINE_S="3")
    body = json.dumps({"text": "x" * 500}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        started = time.monotonic()
        sock.settimeout(0.5)
        answer = b""
        for byte in body:  # one byte every half second: never a stall of 2 s
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break  # the server closed the connection
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
            if time.monotonic() - started > 12:
                break
        elapsed = time.monotonic() - started
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["code"] == "body_timeout"
    assert "did not arrive within 3 seconds" in json.loads(payload)["error"]["message"]
    assert 2.5 < elapsed < 8
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_path_cannot_forge_a_log_line(start_server: StartServer, log_format: str) -> None:
    server = start_server(APP_LOG_FORMAT=log_format, APP_LOG_LEVEL="INFO")
    forged = "/x%0aFORGED%20GET%20/admin%20200%0d%0a%1b[2J%E2%80%A8FORGED2"
    assert raw_request(server, "GET", forged, {}) == 404
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    deadline = time.monotonic() + 5
    while "/healthz" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = server.log.read_text().split("\n")[:-1]  # as log shippers cut lines
    assert any("FORGED" in line for line in lines)  # the line was written...
    assert not any(line.startswith(("FORGED", "\x1b")) for line in lines)  # ...as one line
    assert not any("\x1b" in line or "\u2028" in line for line in lines if log_format == "text")
    if log_format == "json":
        for line in lines:
            json.loads(line)


def test_metrics_can_be_kept_private(start_server: StartServer) -> None:
    private = start_server(APP_METRICS_KEYS=METRICS_KEY, APP_API_KEYS=API_KEY)
    with httpx.Client(base_url=private.base_url, timeout=10) as client:
        anonymous = client.get("/metrics")
        with_api_key = client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        scraper = client.get("/metrics", headers={"Authorization": f"bearer {METRICS_KEY}"})
        metrics_key_elsewhere = client.post(
            "/predict", json={"text": "hi"}, headers={"Authorization": f"Bearer {METRICS_KEY}"}
        )
    assert (anonymous.status_code, with_api_key.status_code, scraper.status_code) == (401, 401, 200)
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert "rnn_sentiment_http_requests_total" in scraper.text
    assert metrics_key_elsewhere.status_code == 401
    open_by_default = start_server()
    assert httpx.get(f"{open_by_default.base_url}/metrics", timeout=10).status_code == 200
