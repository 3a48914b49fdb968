"""Render the settings reference and env.example from the pydantic models that define them.

The service's settings live in one place, `app/core/config.py`: `Settings` (each field is the
environment variable `APP_<NAME>`) and `ServerSettings` (`HOST`, `PORT`, `WORKERS`, no prefix).
A table copied by hand drifts the day someone adds a setting, so both documents that list them
are generated here, from each field's type, default, bounds and description:

- `docs/reference/settings.md`, the reference page of the documentation site;
- `env.example`, the template compose reads (every setting, commented out at its default,
  except the few the container sets on purpose).

    python scripts/settings_reference.py           # rewrite both files
    python scripts/settings_reference.py --check   # exit 1 if either differs from its rendering

`tests/test_settings_reference.py` runs the check, so a setting added without regenerating the
documents fails the test suite.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from app.core.config import MIN_SECRET_CHARS, PLACEHOLDER_MARKS, ServerSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path("docs/reference/settings.md")
ENV_EXAMPLE = Path("env.example")
WIDTH = 96  # env.example's comment lines


@dataclass(frozen=True)
class Group:
    """A section of both documents: settings that are read together.

    A field belongs to the first group that names it, else to the first whose prefixes match
    its name, else to the last group ("Other"), so a new setting always appears somewhere.
    """

    title: str
    intro: str
    names: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()


GROUPS = (
    Group(
        "Server process",
        "Read by `python -m app` (what `make serve`, the image and `rnn-sentiment serve` run), "
        "without the `APP_` prefix. More than one worker: a gunicorn arbiter supervises uvicorn "
        "workers, each with its own copy of the model.",
        names=("host", "port", "workers"),
    ),
    Group(
        "Model",
        "The checkpoints to serve, by name (docs/models.md); each manifest is verified at "
        "start-up and on every reload.",
        names=("model_store", "models", "default_model", "model_dir", "reload_on_sighup"),
    ),
    Group(
        "Rolling out a new model",
        "A candidate model beside the default: a share of its traffic, or its answers scored "
        "in the shadow (docs/rollout.md).",
        names=("canary", "shadow"),
    ),
    Group(
        "Predictions",
        "What each /predict answer says besides its label (docs/api/predict.md).",
        names=("min_confidence",),
    ),
    Group(
        "Request limits",
        "Each limit has its own 4xx with a machine-readable `details[].type`.",
        names=("body_timeout_s", "body_deadline_s", "header_timeout_s"),
        prefixes=("max_",),
    ),
    Group(
        "Credentials and access",
        "Credentials never belong in a committed file: put them in your own env file "
        "(`*.env` is git-ignored) or a secret store.",
        names=(
            "api_keys",
            "admin_keys",
            "metrics_keys",
            "rate_limit_per_minute",
            "cors_origins",
            "trusted_proxies",
        ),
    ),
    Group(
        "Logs",
        "Log lines of the app, uvicorn and gunicorn.",
        names=("access_log",),
        prefixes=("log_",),
    ),
    Group(
        "Batching and load shedding",
        "How texts wait for the model and when the service says 503 instead.",
        names=("max_batch_size", "max_wait_ms", "queue_size", "request_timeout_s", "retry_after_s"),
    ),
    Group(
        "Inference",
        "How the forward pass runs. The defaults are the measured fastest on a small CPU.",
        names=("inference_thread", "inference_dtype", "torchscript", "torch_threads", "gc_freeze"),
        prefixes=("fast_path",),
    ),
    Group(
        "Streaming",
        "`POST /stream` and `/stream/ws`: the client carries a signed state between calls.",
        prefixes=("stream_",),
    ),
    Group("Pages", "What the service serves besides the API.", names=("docs", "explorer")),
    Group("Other", "Settings not sorted into a section above."),
)

# What env.example sets for the container instead of leaving commented out at the default.
# Each value is the container's own choice, not a copy of a default.
CONTAINER_VALUES = {
    "WORKERS": (
        "1",
        "Each worker loads its own copy of the model: budget memory per worker, and keep "
        "WORKERS * APP_TORCH_THREADS within the compose cpus limit.",
    ),
    "APP_TORCH_THREADS": ("1", None),
    "APP_MODEL_STORE": (
        "/models",
        "The image bakes the shipped checkpoint here as the model `default`. To serve others, "
        "mount a store over it read-only, or one model beside it (see the volumes comment in "
        "docker-compose.yml).",
    ),
    "APP_LOG_FORMAT": (
        "json",
        "A container's output goes to a log collector: JSON lines even when it runs with a "
        "terminal attached (docker run -t).",
    ),
    "APP_LOG_LEVEL": ("INFO", None),
}
# Fixed by docker-compose.yml inside the container (the port mapping and the healthcheck rely
# on them): an env file must not move them, so env.example does not list them.
COMPOSE_FIXED = ("HOST", "PORT")

ENV_HEADER = """\
# Settings for the rnn-sentiment container. docker-compose.yml reads this file unless ENV_FILE
# names another: copy it, edit the copy, then `ENV_FILE=prod.env docker compose up -d`.
# HOST and PORT are fixed by docker-compose.yml (0.0.0.0:8000 inside the container); choose the
# published address and port with BIND_ADDRESS and HOST_PORT instead.
#
# Every setting the service reads is below, commented out at its default; the few set for the
# container are not. Generated from app/core/config.py by scripts/settings_reference.py: change
# a setting there, then run `python scripts/settings_reference.py` (the tests fail while this
# file is out of date). The same list, as a page: docs/reference/settings.md.
"""


@dataclass(frozen=True)
class Entry:
    """One environment variable, with everything both documents say about it."""

    env: str
    field: FieldInfo
    owner: type[BaseSettings]

    @property
    def secret(self) -> bool:
        return _contains_secret(self.field.annotation)


def _contains_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_contains_secret(arg) for arg in get_args(annotation))


def entries() -> list[Entry]:
    """Every setting, `ServerSettings` first, in the order the models declare them."""
    found = [
        Entry(name.upper(), field, ServerSettings)
        for name, field in ServerSettings.model_fields.items()
    ]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    found += [
        Entry(f"{prefix}{name}".upper(), field, Settings)
        for name, field in Settings.model_fields.items()
    ]
    return found


def _field_name(entry: Entry) -> str:
    prefix = str(entry.owner.model_config.get("env_prefix", "")).upper()
    return entry.env.removeprefix(prefix).lower()


def grouped(all_entries: Iterable[Entry]) -> list[tuple[Group, list[Entry]]]:
    """The entries sorted into GROUPS (empty groups left out), each in declaration order."""
    members: dict[str, list[Entry]] = {group.title: [] for group in GROUPS}
    for entry in all_entries:
        name = _field_name(entry)
        group = next((g for g in GROUPS if name in g.names), None)
        group = group or next((g for g in GROUPS if name.startswith(g.prefixes)), GROUPS[-1])
        members[group.title].append(entry)
    return [(group, members[group.title]) for group in GROUPS if members[group.title]]


# --- how a field reads ----------------------------------------------------------------------


def type_text(annotation: Any) -> str:
    """The field's type in words a deployer uses: integer, one of `a` / `b`, secret..."""
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if get_origin(annotation) in (types.UnionType, typing.Union):
        present = [arg for arg in get_args(annotation) if arg is not type(None)]
        inner = type_text(present[0]) if len(present) == 1 else "value"
        return inner if inner == "secret" else f"{inner}, optional"
    if get_origin(annotation) is tuple:
        item = get_args(annotation)[0]
        return "comma-separated secrets" if item is SecretStr else "comma-separated list"
    simple = {
        SecretStr: "secret",
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "path",
    }
    return simple.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_env(field: FieldInfo) -> str:
    """The default as the environment spells it (empty: unset)."""
    value = field.get_default(call_default_factory=True)
    if value is None or value == ():
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def bounds_text(field: FieldInfo) -> str:
    """The numeric bounds pydantic enforces, e.g. `>= 1, <= 64` (empty when there are none)."""
    words = []
    for item in field.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, attribute.capitalize())):
                words.append(f"{sign} {getattr(item, attribute):g}")
    return ", ".join(words)


def description(entry: Entry) -> str:
    return " ".join((entry.field.description or "").split())


# --- docs/reference/settings.md -------------------------------------------------------------


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no column breaks, no raw HTML)."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_reference(all_entries: Sequence[Entry]) -> str:
    marks = ", ".join(f"`{mark}`" for mark in PLACEHOLDER_MARKS)
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by scripts/settings_reference.py from app/core/config.py; "
        "do not edit by hand. -->",
        "",
        "Every setting is an environment variable. `APP_*` settings are validated when the "
        "service starts: a bad value stops it before it listens, with one line naming the "
        "setting. `python -m app`, `make serve`, the container and `rnn-sentiment serve` all "
        "read them; in a container, pass them with `-e` or an env file "
        "(`env.example` is the template, see the end of this page).",
        "",
        f"Secrets (type *secret*) need {MIN_SECRET_CHARS} or more characters each; a value "
        f"containing {marks} (any case) is refused as a placeholder. They never appear in "
        "logs.",
        "",
        "This page is generated from the pydantic models in `app/core/config.py` by "
        "`scripts/settings_reference.py`, which also writes `env.example`; "
        "`python scripts/settings_reference.py --check` (run by the tests) fails when either "
        "is out of date.",
        "",
    ]
    for group, members in grouped(all_entries):
        lines += [f"## {group.title}", "", group.intro, ""]
        lines += ["| variable | type | default | bounds | meaning |", "|---|---|---|---|---|"]
        for entry in members:
            default = default_env(entry.field)
            cells = (
                f"`{entry.env}`",
                type_text(entry.field.annotation),
                f"`{default}`" if default else "*(unset)*",
                bounds_text(entry.field).replace(">=", "≥").replace("<=", "≤"),
                description(entry),
            )
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
        lines.append("")
    lines += [
        "## env.example",
        "",
        "`env.example` at the top of the repository lists the same settings, grouped the same "
        "way, commented out at their defaults except those the container sets "
        f"({', '.join(f'`{name}`' for name in CONTAINER_VALUES)}). It leaves out "
        f"{' and '.join(f'`{name}`' for name in COMPOSE_FIXED)}, which `docker-compose.yml` "
        "fixes, and holds no credential: copy it to a `*.env` file (git-ignored) for your own "
        "values.",
        "",
    ]
    return "\n".join(lines)


# --- env.example ----------------------------------------------------------------------------


def _comment(text: str) -> list[str]:
    wrapped = textwrap.wrap(
        text, WIDTH, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
    )
    return wrapped or ["#"]


def render_env_example(all_entries: Sequence[Entry]) -> str:
    lines = [ENV_HEADER.rstrip("\n")]
    for group, members in grouped(all_entries):
        shown = [entry for entry in members if entry.env not in COMPOSE_FIXED]
        if not shown:
            continue
        lines += ["", f"# --- {group.title} ---", *_comment(group.intro)]
        for entry in shown:
            facts = [type_text(entry.field.annotation), bounds_text(entry.field)]
            about = f"{description(entry)} ({'; '.join(fact for fact in facts if fact)})"
            lines += ["", *_comment(about.strip())]
            if entry.env in CONTAINER_VALUES:
                value, reason = CONTAINER_VALUES[entry.env]
                default = default_env(entry.field) or "unset"
                if reason:
                    lines += _comment(reason)
                lines += _comment(f"Default: {default}.") if value != default else []
                lines.append(f"{entry.env}={value}")
            elif entry.secret:
                lines.append(f"# {entry.env}=")  # never a value, not even a placeholder
            else:
                lines.append(f"# {entry.env}={default_env(entry.field)}")
    return "\n".join(lines) + "\n"


def _validate_container_values(all_entries: Sequence[Entry]) -> None:
    """Fail here, not in a container, if a value the template sets is not a valid one."""
    known = {entry.env: entry for entry in all_entries}
    for env, (value, _) in CONTAINER_VALUES.items():
        if env not in known:
            raise SystemExit(f"{env} is set in env.example but is no setting any more")
        entry = known[env]
        entry.owner.model_validate({_field_name(entry): value})


def rendered() -> dict[Path, str]:
    all_entries = entries()
    _validate_container_values(all_entries)
    return {
        REFERENCE: render_reference(all_entries),
        ENV_EXAMPLE: render_env_example(all_entries),
    }


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a committed file differs from what would be generated",
    )
    args = parser.parse_args(argv)
    stale = []
    for relative, text in rendered().items():
        path = root / relative
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(relative))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {relative}")
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run `python scripts/settings_reference.py`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
