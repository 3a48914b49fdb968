"""The documentation site builds strictly, and README.md stays one page that starts right.

`mkdocs build --strict` turns every warning into a failure: a link to a page or anchor that
does not exist, a page left out of the navigation. The build runs here into a temporary
directory, so `make test` catches a broken page before CI's `make docs` does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 260
TWO_COMMANDS = ("make serve", "make test")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    command = ["mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)]
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=config.parent,
        capture_output=True,
        text=True,
        check=False,
        # mkdocs-material prints a banner about a future MkDocs release; it is no warning.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=240,
    )


def _warnings(result: subprocess.CompletedProcess[str]) -> list[str]:
    output = result.stdout + result.stderr
    return [line for line in output.splitlines() if re.match(r"(WARNING|ERROR)\b", line)]


def test_the_site_builds_strictly_without_warnings(tmp_path: Path) -> None:
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _warnings(result) == []
    site = tmp_path / "site"
    for page in ("index.html", "api/predict/index.html", "reference/settings/index.html"):
        assert (site / page).is_file(), page
    # the result files the performance page quotes are served beside it
    assert any((site / "results").glob("ab-*.json"))


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The strict build is what catches a dead link: prove it does, on a copy."""
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")  # follows docs/results into a copy
    with (tmp_path / "docs" / "quickstart.md").open("a") as page:
        page.write("\nSee [the missing page](no-such-page.md).\n")
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert any("no-such-page.md" in line for line in _warnings(result))


def test_readme_is_one_page_and_starts_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    body = [line for line in lines[1:] if line.strip()]
    assert lines[0].startswith("# ")
    assert body[0] == "```bash"
    commands = body[1 : body.index("```", 1)]
    assert [line.split("#")[0].strip() for line in commands] == list(TWO_COMMANDS)


def test_readme_links_resolve() -> None:
    """GitHub renders README.md, not mkdocs: its relative links are checked here."""
    text = (ROOT / "README.md").read_text()
    headings = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"(?m)^#+ (.+)$", text)
    }
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    assert targets
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).is_file(), target
        else:
            assert anchor in headings, target
