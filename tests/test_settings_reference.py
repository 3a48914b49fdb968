"""The settings reference and env.example are generated from the models, and kept so.

A setting added to `app/core/config.py` without running `scripts/settings_reference.py` makes
the committed documents stale, and `test_committed_documents_are_up_to_date` fails.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import Field

from app.core.config import ServerSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "settings_reference.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_reference", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _env_names() -> list[str]:
    prefix = Settings.model_config["env_prefix"]
    return [name.upper() for name in ServerSettings.model_fields] + [
        f"{prefix}{name}".upper() for name in Settings.model_fields
    ]


def test_committed_documents_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # --check writes nothing


def test_every_setting_is_documented_in_both() -> None:
    reference = (ROOT / "docs/reference/settings.md").read_text()
    template = (ROOT / "env.example").read_text()
    listed = set(re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=", template))
    for name in _env_names():
        assert f"| `{name}` |" in reference, name
        if name not in {"HOST", "PORT"}:  # compose fixes both
            assert name in listed, name
    assert not listed & {"HOST", "PORT"}


def test_reference_rows_carry_type_default_and_bounds() -> None:
    reference = (ROOT / "docs/reference/settings.md").read_text()
    [row] = [line for line in reference.splitlines() if line.startswith("| `APP_MAX_WAIT_MS` |")]
    cells = [cell.strip() for cell in row.strip("|").split(" | ")]
    field = Settings.model_fields["max_wait_ms"]
    assert cells[1:4] == ["number", f"`{field.default}`", "≥ 0, ≤ 1000"]
    assert cells[4] == field.description


def test_env_example_values_are_valid_settings() -> None:
    """Every line, uncommented, is a value the service accepts (defaults included)."""
    server: dict[str, str] = {}
    app: dict[str, str] = {}
    for line in (ROOT / "env.example").read_text().splitlines():
        match = re.fullmatch(r"#? ?([A-Z][A-Z0-9_]*)=(.*)", line)
        if not match or not match.group(2):
            continue  # unset optional settings and credentials stay unset
        name, value = match.groups()
        if name.startswith("APP_"):
            app[name.removeprefix("APP_").lower()] = value
        else:
            server[name.lower()] = value
    settings = Settings.model_validate(app)
    assert settings.model_store == Path("/models")  # the store the image bakes
    assert settings.model_dir is None  # refused together with a store
    assert ServerSettings.model_validate(server).workers == 1
    assert len(app) > 30


def test_a_new_setting_shows_up_and_stale_files_fail_the_check(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for relative in (generator.REFERENCE, generator.ENV_EXAMPLE):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text((ROOT / relative).read_text())
    assert generator.main(["--check"], root=tmp_path) == 0

    class Grown(Settings):
        gzip_level: int = Field(6, ge=1, le=9, description="How hard responses are squeezed.")

    monkeypatch.setattr(generator, "Settings", Grown)
    assert generator.main(["--check"], root=tmp_path) == 1
    assert generator.main([], root=tmp_path) == 0  # regenerates
    assert generator.main(["--check"], root=tmp_path) == 0
    reference = (tmp_path / generator.REFERENCE).read_text()
    assert "| `APP_GZIP_LEVEL` | integer | `6` | ≥ 1, ≤ 9 | How hard" in reference
    assert "# APP_GZIP_LEVEL=6" in (tmp_path / generator.ENV_EXAMPLE).read_text()


def test_a_missing_file_fails_the_check(generator: ModuleType, tmp_path: Path) -> None:
    assert generator.main(["--check"], root=tmp_path) == 1
    assert not (tmp_path / generator.ENV_EXAMPLE).exists()
