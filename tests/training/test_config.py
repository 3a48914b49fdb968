"""The training defaults are the shipped recipe: `train` with no options makes its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import _resolve_config, build_parser
from training.config import TrainConfig

RECIPE = Path(__file__).resolve().parents[2] / "training" / "configs" / "default.toml"


def test_the_defaults_are_the_shipped_recipe() -> None:
    assert TrainConfig.from_toml(RECIPE) == TrainConfig()


def test_train_without_options_resolves_to_the_recipe(tmp_path: Path) -> None:
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "m")])
    assert _resolve_config(args) == TrainConfig.from_toml(RECIPE)


def test_the_literal_options_offer_their_choices(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "m", "--class-weighting", "sqrt"])
    assert args.class_weighting == "sqrt"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["train", "--out", "m", "--pretrained", "glove"])
    assert exit_.value.code == 2
    assert "invalid choice: 'glove' (choose from 'minilm', 'none')" in capsys.readouterr().err
