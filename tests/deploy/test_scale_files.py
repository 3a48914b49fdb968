"""deploy/compose.scale.yaml and deploy/nginx/ agree with each other, with docker-compose.yml
and with the app. `.ci/scale.sh` runs them on a real engine; these checks need none."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from app.core.config import Settings
from app.http.errors import ERROR_CODES
from app.main import create_app

ROOT = Path(__file__).resolve().parents[2]
NGINX_CONF = (ROOT / "deploy/nginx/nginx.conf").read_text()


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's `!reset` tag (it empties what the base file set)."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: f"!reset {node.value or ''}".strip())


def _compose(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=_ComposeLoader)
    return data


def _directive(name: str) -> list[str]:
    """The arguments of every `name ...;` directive in nginx.conf (comments ignored)."""
    text = re.sub(r"#[^\n]*", "", NGINX_CONF)
    return [match.strip() for match in re.findall(rf"(?m)^\s*{name}\s+([^;{{}}\n]*);", text)]


def _location(pattern: str) -> str:
    """The body of the nginx.conf `location` whose head is `pattern` (comments ignored).

    Braces inside quoted strings (the JSON bodies of `return`) do not close the block.
    """
    text = re.sub(r"#[^\n]*", "", NGINX_CONF)
    head = f"location {pattern} {{"
    assert text.count(head) == 1, head
    start = text.index(head) + len(head)
    depth, quote = 1, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:index]
    raise AssertionError(f"{head} is never closed")


def _dockerfile() -> DockerfileParser:
    # Read-only use: given no path, DockerfileParser would write `.content` to ./Dockerfile.
    return DockerfileParser(str(ROOT / "deploy/nginx/Dockerfile"))


def test_nginx_listens_where_compose_publishes_it() -> None:
    lb = _compose("deploy/compose.scale.yaml")["services"]["lb"]
    [published] = lb["ports"]
    assert published.endswith(":8080")
    assert _directive("listen") == ["8080"]
    assert "EXPOSE 8080" in _dockerfile().content


def test_upstream_is_the_api_service_on_its_container_port() -> None:
    base = _compose("docker-compose.yml")["services"]["api"]
    [server] = _directive("server")
    host, _, rest = server.partition(":")
    port, *options = rest.split()
    assert host == "api"
    assert port == base["environment"]["PORT"]
    assert "max_fails=2" in options
    assert "fail_timeout=5s" in options


def test_replicas_publish_nothing_and_share_the_stream_secret() -> None:
    api = _compose("deploy/compose.scale.yaml")["services"]["api"]
    assert api["ports"] == "!reset"
    assert api["deploy"]["replicas"].startswith("${API_REPLICAS:-")
    # required, so that no replica falls back to a random per-process secret
    secret = api["environment"]["APP_STREAM_SECRET"]
    assert secret.startswith("${APP_STREAM_SECRET:?")
    assert secret.endswith("}")
    message = secret.removeprefix("${APP_STREAM_SECRET:?").removesuffix("}")
    # compose's error says how to make one; compose interpolates the message too, so no `$`
    assert "secrets.token_hex(" in message
    assert "$" not in message
    assert "}" not in message
    assert "stream_secret" in Settings.model_fields


def test_replicas_trust_forwarded_headers_from_nginx_only() -> None:
    compose = _compose("deploy/compose.scale.yaml")
    [ipam] = compose["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.IPv4Network(ipam["subnet"])
    dynamic = ipaddress.IPv4Network(ipam["ip_range"])
    gateway = ipaddress.ip_address(ipam["gateway"])
    nginx = ipaddress.ip_address(compose["services"]["lb"]["networks"]["default"]["ipv4_address"])
    assert dynamic.subnet_of(subnet)
    assert gateway in subnet
    assert gateway not in dynamic
    # nginx's fixed address is one no replica can be given before nginx starts
    assert nginx in subnet
    assert nginx not in dynamic
    assert nginx != gateway
    # outside Docker's default address pools, so no network Docker made overlaps it
    pools = [f"172.{second}.0.0/16" for second in range(17, 32)] + ["192.168.0.0/16"]
    assert not any(subnet.overlaps(ipaddress.IPv4Network(pool)) for pool in pools)
    trusted = compose["services"]["api"]["environment"]["APP_TRUSTED_PROXIES"]
    assert Settings(trusted_proxies=trusted).trusted_proxies == (str(nginx),)


def test_nginx_replaces_the_clients_forwarded_headers() -> None:
    """nginx is the edge: a client's own X-Forwarded-For must never reach a replica."""
    headers = _directive("proxy_set_header")
    forwarded = [header for header in headers if header.startswith("X-Forwarded-")]
    # once for the server, once again in /stream/ws, whose own proxy_set_header lines
    # replace every inherited one
    assert forwarded == ["X-Forwarded-For $remote_addr", "X-Forwarded-Proto $scheme"] * 2
    assert "X-Forwarded-For $remote_addr" in _location("= /stream/ws")
    assert "proxy_add_x_forwarded_for" not in re.sub(r"#[^\n]*", "", NGINX_CONF)


def test_nginx_refuses_metrics_with_the_apps_404() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    assert "get" in paths["/metrics"]  # the replicas serve it: only nginx refuses it
    body = _location("= /metrics")
    assert "proxy_pass" not in body
    [answer] = re.findall(r"return 404 '([^']*)'", body)
    error = json.loads(answer.replace("$req_id", "id"))
    assert error["error"]["code"] == ERROR_CODES[404]
    assert error["request_id"] == "id"


def test_nginx_starts_after_the_replicas_are_healthy() -> None:
    lb = _compose("deploy/compose.scale.yaml")["services"]["lb"]
    assert lb["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert lb["read_only"] is True
    assert lb["tmpfs"] == ["/tmp:size=64m"]


def test_retried_post_routes_are_exactly_the_apps_post_routes() -> None:
    """`non_idempotent` lets nginx run a POST twice. Every POST route the app has must be one
    that changes nothing (today all are), and a new POST route must be looked at here."""
    paths = create_app(Settings()).openapi()["paths"]
    post_routes = {path for path, operations in paths.items() if "post" in operations}
    [retried] = [
        match
        for match in re.findall(r"location ~ \^/\(([^)]*)\)\$", NGINX_CONF)
        if match  # the regex location of the POST routes
    ]
    assert {f"/{route}" for route in retried.split("|")} == post_routes
    next_upstream = _directive("proxy_next_upstream")
    assert next_upstream == [
        "error timeout http_502 http_503",
        "error timeout http_502 http_503 non_idempotent",
    ]


def test_health_route_is_the_same_in_nginx_compose_and_the_image() -> None:
    assert "location = /lb/healthz" in NGINX_CONF
    lb = _compose("deploy/compose.scale.yaml")["services"]["lb"]
    assert "http://127.0.0.1:8080/lb/healthz" in lb["healthcheck"]["test"][-1]
    [healthcheck] = [i for i in _dockerfile().structure if i["instruction"] == "HEALTHCHECK"]
    assert "http://127.0.0.1:8080/lb/healthz" in healthcheck["value"]


def test_nginx_image_is_built_on_the_service_base_and_runs_as_non_root() -> None:
    parser = _dockerfile()
    assert parser.baseimage == "python:3.11-slim"
    user = [item["value"] for item in parser.structure if item["instruction"] == "USER"][-1]
    assert user.split(":")[0].isdigit()
    assert int(user.split(":")[0]) != 0


def test_nginx_writes_only_to_tmp() -> None:
    assert _directive("pid") == ["/tmp/nginx.pid"]
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        [path] = _directive(f"{name}_temp_path")
        assert path.startswith("/tmp/")
    assert _directive("error_log") == ["stderr warn"]


def test_served_by_header_names_the_replica() -> None:
    assert "X-Served-By $upstream_addr always" in _directive("add_header")


def test_ci_runs_the_scale_check_after_the_container_check() -> None:
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert lines.index("bash .ci/scale.sh") > lines.index("bash .ci/container.sh")


def test_every_replica_serves_the_same_model_store() -> None:
    """A request naming a model may reach any replica: the overlay leaves the store to the base
    service (the image's, or the one its volumes mount), never one per replica."""
    api = _compose("deploy/compose.scale.yaml")["services"]["api"]
    assert "volumes" not in api
    model_settings = {"APP_MODEL_STORE", "APP_MODELS", "APP_DEFAULT_MODEL", "APP_MODEL_DIR"}
    assert not model_settings & set(api.get("environment") or {})
    assert {"model_store", "models", "default_model", "model_dir"} <= set(Settings.model_fields)
