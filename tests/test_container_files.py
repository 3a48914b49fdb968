"""Static checks of the container files that need no Docker engine.

hadolint and `docker compose config` (.ci/container.sh) check syntax and style; these check what
they cannot see: that the paths the Dockerfile copies exist and reach the build context, that
ports, the health route and setting names agree with the app, that the image runs as non-root,
and that torch stays the pinned CPU build.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from app.core.config import MODEL_NAME_PATTERN, ServerSettings, Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "python:3.11-slim"
HEALTH_ROUTE = "/readyz"
# Settings holding credentials: never given a value in a file in git.
CREDENTIALS = ("APP_API_KEYS", "APP_ADMIN_KEYS", "APP_METRICS_KEYS", "APP_STREAM_SECRET")


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for value in self.values("ENV"):
            for item in shlex.split(value):
                key, _, val = item.partition("=")
                env[key] = val
        return env


def _stages() -> list[Stage]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    stages: list[Stage] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            base, _, name = value.partition(" AS ")
            stages.append(Stage(name=name.strip() or None, base=base.strip()))
        elif stages:
            stages[-1].instructions.append((instruction, value))
    return stages


STAGES = _stages()
FINAL = STAGES[-1]


def _exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not exec (JSON array) form: {value}"
    return [str(part) for part in parsed]


def _copy_sources(stage: Stage) -> list[tuple[str, str]]:
    """(source, destination) of each COPY from the build context (not --from another stage)."""
    copies = []
    for value in stage.values("COPY"):
        words = shlex.split(value)
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        copies += [(source, paths[-1]) for source in paths[:-1]]
    return copies


def _compose(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def _api_service() -> dict[str, Any]:
    service = _compose("docker-compose.yml")["services"]["api"]
    assert isinstance(service, dict)
    return service


def _interpolate_default(value: str) -> str:
    """`${NAME:-default}` -> default, as compose resolves it when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


# --- Dockerfile ----------------------------------------------------------------------------------


def test_no_syntax_directive() -> None:
    # BuildKit would pull the named frontend, and no registry is reachable.
    first = (ROOT / "Dockerfile").read_text().splitlines()[0]
    assert not re.match(r"#\s*syntax\s*=", first, re.IGNORECASE)


def test_every_stage_starts_from_python_slim() -> None:
    assert len(STAGES) >= 2, "expected a multi-stage build"
    earlier: set[str] = set()
    for stage in STAGES:
        assert stage.base == BASE_IMAGE or stage.base in earlier, stage.base
        earlier.add(stage.name or "")
    assert FINAL.name == "runtime"
    assert FINAL.base == BASE_IMAGE


def test_runtime_stage_has_no_toolchain() -> None:
    build = next(stage for stage in STAGES if stage.name == "build")
    assert any("gcc" in run for run in build.values("RUN"))
    assert not any("apt-get install" in run for run in FINAL.values("RUN"))


def test_final_stage_runs_as_non_root() -> None:
    users = FINAL.values("USER")
    assert users, "the runtime stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric uid lets orchestrators verify runAsNonRoot"


def test_cmd_is_the_production_command_in_exec_form() -> None:
    assert _exec_form(FINAL.values("CMD")[-1]) == ["python", "-m", "app"]
    assert not FINAL.values("ENTRYPOINT")


def test_server_settings_match_the_app() -> None:
    env = FINAL.env()
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == str(ServerSettings.model_fields["port"].default)
    assert env["WORKERS"] == str(ServerSettings.model_fields["workers"].default)
    assert FINAL.values("EXPOSE") == [env["PORT"]]


def _env_example_values() -> dict[str, str]:
    """The settings env.example sets (not those left commented out at their defaults)."""
    lines = (ROOT / "env.example").read_text().splitlines()
    return dict(line.partition("=")[::2] for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line))


def test_the_image_bakes_a_model_store_holding_the_default_model() -> None:
    env = FINAL.env()
    store = env["APP_MODEL_STORE"]
    assert Path(store).is_absolute()
    # a store and a single directory together are refused at start-up
    assert "APP_MODEL_DIR" not in env
    with pytest.raises(ValueError, match="not both"):
        Settings(model_store=Path(store), model_dir=Path(store) / "default")
    # the project stage puts the shipped checkpoint in the store, under the default name...
    project = next(stage for stage in STAGES if stage.name == "project")
    default = Settings.model_fields["default_model"].default
    assert ("model_store/default/", f"{store}/{default}/") in _copy_sources(project)
    # ...and the runtime stage copies that whole store to the same place
    copies = [shlex.split(value) for value in FINAL.values("COPY")]
    assert ["--from=project", f"{store}/", f"{store}/"] in copies
    assert Settings(model_store=Path(store)).model_dirs() == {default: Path(store) / default}


def test_env_example_serves_the_images_store(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _env_example_values()
    assert values["APP_MODEL_STORE"] == FINAL.env()["APP_MODEL_STORE"]
    for name, value in {**FINAL.env(), **values}.items():
        if name.startswith("APP_"):
            monkeypatch.setenv(name, value)
    Settings()  # the image's environment plus the env file, validated as at start-up


def test_healthcheck_probes_readyz_on_the_configured_port() -> None:
    healthchecks = FINAL.values("HEALTHCHECK")
    assert len(healthchecks) == 1
    options, _, command = healthchecks[0].partition("CMD ")
    assert "--interval=" in options
    probe = _exec_form(command)
    assert probe[:2] == ["python", "-c"]
    assert f"/readyz' % os.environ.get('PORT', '{FINAL.env()['PORT']}')" in probe[2]


def test_the_app_serves_the_health_route() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    assert "get" in paths[HEALTH_ROUTE]


def test_copied_paths_exist() -> None:
    sources = [source for stage in STAGES for source, _ in _copy_sources(stage)]
    assert "model_store/default/" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"


def test_torch_is_the_pinned_cpu_build() -> None:
    build = next(stage for stage in STAGES if stage.name == "build")
    args = dict(value.partition("=")[::2] for value in build.values("ARG"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [dep for dep in pyproject["project"]["dependencies"] if dep.startswith("torch==")]
    assert pins == [f"torch=={args['TORCH_VERSION']}"]
    makefile = (ROOT / "Makefile").read_text()
    assert f"TORCH_VERSION := {args['TORCH_VERSION']}" in makefile
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert any('"torch==${TORCH_VERSION}+cpu"' in run for run in build.values("RUN"))


# --- .dockerignore -------------------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex) in file order, with Docker's `**` and `*` rules."""
    patterns = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.removeprefix("!").strip().strip("/")
        regex = ""
        index = 0
        while index < len(glob):
            if glob.startswith("**/", index):
                regex, index = regex + "(?:.*/)?", index + 3
            elif glob.startswith("**", index):
                regex, index = regex + ".*", index + 2
            elif glob[index] == "*":
                regex, index = regex + "[^/]*", index + 1
            elif glob[index] == "?":
                regex, index = regex + "[^/]", index + 1
            elif glob[index] == "[":
                end = glob.index("]", index)
                regex, index = regex + glob[index : end + 1], end + 1
            else:
                regex, index = regex + re.escape(glob[index]), index + 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def _in_build_context(path: str) -> bool:
    """Whether Docker sends `path`: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for negated, pattern in _ignore_patterns():
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return not excluded


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "app/__main__.py",
        "app/static/swagger-ui/swagger-ui.css",
        "training/checkpoint.py",
        "model_store/default/model.safetensors",
        "wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    ],
)
def test_build_context_keeps(path: str) -> None:
    assert _in_build_context(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "data/corpus.csv",
        "runs/compare/report.json",
        "artifacts/model.bin",
        ".mypy_cache/3.11/app.json",
        ".pytest_cache/v/cache",
        "app/__pycache__/main.cpython-311.pyc",
        "training/__pycache__/model.cpython-311.pyc",
        "model_store/experiment/model.safetensors",
        "tests/test_container_files.py",
        "rnn_sentiment.egg-info/PKG-INFO",
    ],
)
def test_build_context_drops(path: str) -> None:
    assert not _in_build_context(path)


def test_every_copied_path_reaches_the_build_context() -> None:
    for stage in STAGES:
        for source, _ in _copy_sources(stage):
            files = [source] if (ROOT / source).is_file() else []
            files += [
                str(file.relative_to(ROOT))
                for file in (ROOT / source).rglob("*")
                if file.is_file() and "__pycache__" not in file.parts
            ]
            assert files, f"COPY {source}: nothing to copy"
            for file in files:
                assert _in_build_context(file), f"{file} is copied but .dockerignore drops it"


# --- compose -------------------------------------------------------------------------------------


def test_compose_builds_this_dockerfile_with_the_cpu_index() -> None:
    build = _api_service()["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    index = _interpolate_default(build["args"]["TORCH_INDEX_URL"])
    assert index == "https://download.pytorch.org/whl/cpu"


def test_compose_port_and_healthcheck_agree_with_the_image() -> None:
    service = _api_service()
    port = FINAL.env()["PORT"]
    assert service["environment"]["PORT"] == port
    assert service["environment"]["HOST"] == "0.0.0.0"
    published = [_interpolate_default(mapping) for mapping in service["ports"]]
    assert published == [f"127.0.0.1:{port}:{port}"]
    probe = _exec_form(FINAL.values("HEALTHCHECK")[0].partition("CMD ")[2])
    assert service["healthcheck"]["test"] == ["CMD", *probe]


def test_compose_hardening_and_limits() -> None:
    service = _api_service()
    assert service["read_only"] is True
    assert any(mount.split(":")[0] == "/tmp" for mount in service["tmpfs"])
    assert service["restart"] == "unless-stopped"
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0
    assert limits["memory"]


def test_env_example_names_real_settings() -> None:
    service = _api_service()
    env_file = _interpolate_default(service["env_file"][0])
    assert env_file == "env.example"
    lines = (ROOT / env_file).read_text().splitlines()
    entries = [line.lstrip("# ") for line in lines if re.match(r"#? ?[A-Z][A-Z0-9_]*=", line)]
    names = {entry.partition("=")[0] for entry in entries}
    assert {"APP_MODEL_STORE", "APP_MODELS", "APP_DEFAULT_MODEL", "APP_MODEL_DIR"} <= names
    server = {name.upper() for name in ServerSettings.model_fields}
    for name in names:
        if name.startswith("APP_"):
            assert name.removeprefix("APP_").lower() in Settings.model_fields, name
        else:
            assert name in server, f"{name} is neither an APP_ setting nor HOST/PORT/WORKERS"
            assert name != "PORT", "compose fixes PORT; an env file must not move it"


def test_ci_override_builds_on_the_host_network_and_mounts_a_store_of_two_models() -> None:
    service = _compose("deploy/compose.ci.yaml")["services"]["api"]
    assert service["build"]["network"] == "host"
    store = service["environment"]["APP_MODEL_STORE"]
    assert store == FINAL.env()["APP_MODEL_STORE"]
    assert "APP_MODEL_DIR" not in service["environment"]
    names = []
    for volume in service["volumes"]:
        source, target, mode = volume.split(":")
        # compose resolves it against the project directory, that of docker-compose.yml
        assert (ROOT / source).resolve() == (ROOT / "model_store/default").resolve()
        assert mode == "ro"
        assert Path(target).parent == Path(store)
        names.append(Path(target).name)
    default = Settings.model_fields["default_model"].default
    first, second = names
    assert first == default
    assert re.fullmatch(MODEL_NAME_PATTERN, second)
    # the container check asks the service for that model by name
    check = (ROOT / ".ci/container.sh").read_text()
    assert f"SECOND_MODEL={second}" in check
    assert '"model": second' in check


def test_ci_runs_the_container_check_after_the_tests() -> None:
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert lines.index("bash .ci/container.sh") > lines.index("make test")


# --- credentials ---------------------------------------------------------------------------------


def _required_variables(name: str) -> set[str]:
    """The variables a compose file requires from the environment (`${NAME:?message}`)."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", (ROOT / name).read_text()))


def test_no_compose_file_or_env_example_holds_a_credential() -> None:
    for name in ("docker-compose.yml", "deploy/compose.ci.yaml", "deploy/compose.scale.yaml"):
        services = yaml.safe_load(
            # compose's `!reset` tag: a plain string is enough to read the environment
            (ROOT / name).read_text().replace("!reset", "")
        )["services"]
        for service in services.values():
            environment = service.get("environment") or {}
            for setting in set(CREDENTIALS) & set(environment):
                # only ever taken from the environment compose runs in, and required there
                assert environment[setting].startswith(f"${{{setting}:?"), (name, setting)
    # the single service needs no stream secret: its workers share the one made before fork
    assert not set(CREDENTIALS) & set(_api_service()["environment"])
    for line in (ROOT / "env.example").read_text().splitlines():
        setting, equals, value = line.lstrip("# ").partition("=")
        if equals and setting in CREDENTIALS:
            assert line.startswith("# ")
            assert value == ""
    # and any value a placeholder would have been is refused at start-up
    with pytest.raises(ValueError, match="placeholder"):
        Settings(stream_secret="example-stream-secret-CHANGE-ME")


def test_ci_exports_every_variable_its_compose_files_require() -> None:
    container, scale = ((ROOT / f".ci/{name}.sh").read_text() for name in ("container", "scale"))
    # both build the image through compose.ci.yaml (.ci/lib.sh, ci_build_image)
    for variable in _required_variables("deploy/compose.ci.yaml"):
        for script in (container, scale):
            assert re.search(rf"(?m)^export [^\n]*\b{variable}\b", script), variable
    for variable in _required_variables("deploy/compose.scale.yaml"):
        assert re.search(rf"(?m)^export [^\n]*\b{variable}\b", scale), variable
    assert "APP_STREAM_SECRET" in _required_variables("deploy/compose.scale.yaml")
    # made up per run, never a fixed value
    for script in (container, scale):
        assert "APP_STREAM_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(" in script


def test_env_files_with_credentials_stay_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "prod.env", "secrets.env", ".env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert ignored.stdout.split() == ["prod.env", "secrets.env", ".env"]
    kept = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", "env.example"], cwd=ROOT, check=False
    )
    assert kept.returncode == 1  # the template stays tracked
