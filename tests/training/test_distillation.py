"""Distillation: the student learns from a teacher's logits file, and says so in its card."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from tests.training.test_train import tiny_config, write_corpus
from training.__main__ import main
from training.augment import variants
from training.config import TrainConfig
from training.data import DataError, load_file
from training.teacher import (
    CARD_FILE,
    LOGITS_FILE,
    read_logits,
    sha256_file,
    text_key,
    write_logits,
)
from training.train import distillation_loss, split_examples, train_model

LABELS = ["negative", "neutral", "positive"]


def student(data: Path, cell: str, **changes: object) -> TrainConfig:
    """The tiny corpus's config, learning from a teacher without text variants (the test
    teachers below label the training texts only)."""
    return tiny_config(data, cell, augment=0).override(dict(changes))


def write_teacher(directory: Path, config: TrainConfig, logits_for: dict[str, list[float]]) -> Path:
    """A teacher directory whose logits give every training text of `config`'s split the row
    of its label in `logits_for` (as `run_teacher` writes one, without fine-tuning)."""
    corpus = load_file(
        Path(config.data), text_field=config.text_field, label_field=config.label_field
    )
    train = split_examples(corpus.examples, config).train
    directory.mkdir()
    write_logits(directory / LOGITS_FILE, train, [logits_for[e.label] for e in train])
    card = {
        "teacher": "a test teacher",
        "command": ["python", "-m", "training", "teacher", "--out", str(directory)],
        "labels": LABELS,
        "metrics": {"dev": {"accuracy": 0.5, "macro_f1": 0.4}},
        "logits": {"file": LOGITS_FILE, "sha256": sha256_file(directory / LOGITS_FILE)},
    }
    (directory / CARD_FILE).write_text(json.dumps(card))
    return directory


def test_the_loss_is_zero_when_the_student_matches_the_teacher() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    weights = torch.ones(2)
    assert distillation_loss(logits, logits.clone(), weights, 2.0).item() == pytest.approx(
        0.0, abs=1e-6
    )
    other = torch.tensor([[-1.0, 0.5, 2.0], [1.0, 0.0, 0.0]])
    assert distillation_loss(logits, other, weights, 2.0).item() > 0.1


def test_the_loss_weighs_examples_like_the_label_loss() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # only the second one disagrees
    only_first = distillation_loss(logits, teacher, torch.tensor([1.0, 0.0]), 1.0)
    only_second = distillation_loss(logits, teacher, torch.tensor([0.0, 1.0]), 1.0)
    assert only_first.item() == pytest.approx(0.0, abs=1e-6)
    assert only_second.item() > 0.5


def test_a_student_follows_its_teacher(tmp_path: Path) -> None:
    """A teacher that calls every text positive, at full weight, makes a student that does too:
    the logits are really what it learns from (the labels alone give ~1.0 accuracy here)."""
    data = write_corpus(tmp_path / "tiny.jsonl")
    config = student(data, "lstm", epochs=6, patience=6)
    teacher = write_teacher(
        tmp_path / "teacher", config, {label: [-4.0, -4.0, 4.0] for label in LABELS}
    )
    card = train_model(
        config.override({"teacher": str(teacher), "distill_weight": 1.0}), tmp_path / "m"
    )
    confusion = card["metrics"]["test"]["confusion_matrix"]["rows_true_columns_predicted"]
    predicted_positive = sum(row[2] for row in confusion)
    assert predicted_positive == sum(sum(row) for row in confusion)
    distillation = card["distillation"]
    assert distillation["logits_sha256"] == sha256_file(teacher / LOGITS_FILE)
    assert distillation["logits_file"] == str(teacher / LOGITS_FILE)  # outside the project
    assert distillation["weight"] == 1.0
    assert distillation["rebuild_command"][:4] == ["python", "-m", "training", "teacher"]


def test_a_teacher_that_agrees_with_the_labels_keeps_the_student_right(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    config = student(data, "gru")
    rows = {"negative": [3.0, 0.0, -3.0], "neutral": [0.0, 3.0, 0.0], "positive": [-3.0, 0.0, 3.0]}
    teacher = write_teacher(tmp_path / "teacher", config, rows)
    card = train_model(config.override({"teacher": str(teacher)}), tmp_path / "m")
    assert card["metrics"]["test"]["accuracy"] >= 0.9
    assert card["distillation"]["weight"] == 0.5


def test_logits_files_are_reproducible_and_keyed_by_text(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    examples = load_file(data, text_field="review", label_field="stars").examples
    rows = [[float(i), 0.0, -float(i)] for i in range(len(examples))]
    write_logits(tmp_path / "a.jsonl.gz", examples, rows)
    write_logits(tmp_path / "b.jsonl.gz", examples, rows)
    assert sha256_file(tmp_path / "a.jsonl.gz") == sha256_file(tmp_path / "b.jsonl.gz")
    table = read_logits(tmp_path / "a.jsonl.gz")
    assert table[text_key(examples[3].text)] == [3.0, 0.0, -3.0]
    raw = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode()
    assert examples[3].text not in raw  # keys only: no corpus text is copied


def test_a_teacher_from_another_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    config = student(data, "rnn", epochs=1)
    rows = {label: [0.0, 0.0, 0.0] for label in LABELS}
    teacher = write_teacher(tmp_path / "teacher", config.override({"split_seed": 99}), rows)
    with pytest.raises(DataError, match="no teacher logits for"):
        train_model(config.override({"teacher": str(teacher)}), tmp_path / "m")
    # the command line says it in one line, exit 2
    code = main(
        [
            "train",
            "--data",
            str(data),
            "--text-field",
            "review",
            "--label-field",
            "stars",
            "--pretrained",
            "none",
            "--min-count",
            "1",
            "--epochs",
            "1",
            "--no-baseline",
            "--teacher",
            str(teacher),
            "--augment",
            "0",
            "--out",
            str(tmp_path / "cli"),
        ]
    )
    assert code == 2
    assert "no teacher logits for" in capsys.readouterr().err


def test_an_altered_logits_file_is_refused(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    config = student(data, "rnn", epochs=1)
    teacher = write_teacher(
        tmp_path / "teacher", config, {label: [1.0, 0.0, 0.0] for label in LABELS}
    )
    path = teacher / LOGITS_FILE
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="sha256"):
        train_model(config.override({"teacher": str(teacher)}), tmp_path / "m")


def test_a_directory_that_is_not_a_teacher_is_refused(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    with pytest.raises(DataError, match="not a teacher directory"):
        train_model(tiny_config(data, "rnn", epochs=1, teacher=str(tmp_path)), tmp_path / "m")


@pytest.mark.parametrize(
    ("field", "value"), [("distill_weight", 1.5), ("distill_temperature", 0.0)]
)
def test_bad_distillation_settings_are_refused(tmp_path: Path, field: str, value: float) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    config = student(data, "rnn", epochs=1)
    teacher = write_teacher(
        tmp_path / "teacher", config, {label: [1.0, 0.0, 0.0] for label in LABELS}
    )
    with pytest.raises(DataError, match=field):
        train_model(config.override({"teacher": str(teacher), field: value}), tmp_path / "m")


def test_the_default_teacher_is_only_for_the_default_corpus(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    card = train_model(tiny_config(data, "rnn", epochs=1, teacher="default"), tmp_path / "m")
    assert card["distillation"] is None


def test_split_seed_keeps_the_split_while_the_seed_changes(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    examples = load_file(data, text_field="review", label_field="stars").examples
    base = tiny_config(data, "rnn", split_seed=13)
    same = split_examples(examples, base.override({"seed": 1}))
    assert same == split_examples(examples, base.override({"seed": 2}))
    assert same == split_examples(examples, tiny_config(data, "rnn", seed=13, split_seed=None))
    assert same != split_examples(examples, tiny_config(data, "rnn", seed=1, split_seed=None))


def test_a_card_from_before_split_seeds_rebuilds_its_own_split() -> None:
    recorded = {"seed": 1, "data": "default"}  # what a card written before split_seed holds
    config = TrainConfig.from_card(recorded)
    assert config.split_seed is None
    assert config.teacher == "none"
    assert config.augment == 0
    assert TrainConfig.from_card({**recorded, "split_seed": 13}).split_seed == 13


def test_the_teacher_command_fine_tunes_and_a_student_learns_from_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real teacher (MiniLM through transformers), one short epoch on the tiny corpus."""
    pytest.importorskip("transformers")
    data = write_corpus(tmp_path / "tiny.jsonl", per_label=12)
    toml = tmp_path / "split.toml"
    toml.write_text(
        f'data = "{data}"\ntext_field = "review"\nlabel_field = "stars"\n'
        "dev_fraction = 0.2\ntest_fraction = 0.2\n"  # the student's split (tiny_config)
    )
    out = tmp_path / "teacher"
    arguments = ["teacher", "--out", str(out), "--config", str(toml), "--teacher-epochs", "1"]
    arguments += ["--teacher-batch-size", "8", "--teacher-max-pieces", "16"]
    assert main([*arguments, "--teacher-threads", "1"]) == 0
    assert "teacher test accuracy" in capsys.readouterr().out
    card = json.loads((out / CARD_FILE).read_text())
    config = TrainConfig.from_toml(toml)
    corpus = load_file(data, text_field="review", label_field="stars")
    train = split_examples(corpus.examples, config).train
    assert card["logits"]["training_texts"] == len(train)
    assert card["logits"]["augment"] == {"copies": 2, "seed": 13}
    assert len(train) < card["logits"]["rows"] <= 3 * len(train)  # the texts and their variants
    assert card["logits"]["sha256"] == sha256_file(out / LOGITS_FILE)
    assert set(card["metrics"]) == {"dev", "test"}
    assert len(card["history"]) == 1
    table = read_logits(out / LOGITS_FILE)
    assert all(len(table[text_key(e.text)]) == 3 for e in train)
    # an existing --out is refused without --force
    assert main([*arguments, "--teacher-threads", "1"]) == 2
    student = train_model(
        tiny_config(data, "lstm", epochs=1, teacher=str(out), augment=2), tmp_path / "student"
    )
    assert student["distillation"]["augmented_texts"] == len(list(variants(train, 2, 13)))
    assert student["distillation"]["teacher_metrics"]["test"] == {
        key: card["metrics"]["test"][key] for key in ("accuracy", "macro_f1")
    }


def test_every_card_reports_the_hand_written_sets(tmp_path: Path) -> None:
    """Reported for any model with their labels, per domain for the larger set."""
    data = write_corpus(tmp_path / "tiny.jsonl")
    card = train_model(tiny_config(data, "rnn", epochs=1), tmp_path / "m")
    reviews, ood = card["metrics"]["reviews_handwritten"], card["metrics"]["ood_handwritten"]
    assert reviews["examples"] == 60
    assert ood["examples"] == 360
    assert sorted(ood["accuracy_by_domain"]) == [
        "app_review",
        "movie_comment",
        "news_comment",
        "product_review",
        "restaurant_hotel",
        "social_post",
        "support_ticket",
        "workplace_email",
    ]
    right = sum(ood["confusion_matrix"]["rows_true_columns_predicted"][i][i] for i in range(3))
    by_domain = sum(round(45 * share) for share in ood["accuracy_by_domain"].values())
    assert by_domain == right  # 45 sentences per domain


def test_a_model_with_other_labels_reports_no_hand_written_sets(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    path.write_text(
        "".join(
            json.dumps({"review": f"{word} thing number {i}", "stars": label}) + "\n"
            for i in range(20)
            for word, label in (("good", "up"), ("bad", "down"))
        )
    )
    card = train_model(tiny_config(path, "rnn", epochs=1), tmp_path / "m")
    assert "ood_handwritten" not in card["metrics"]
    assert "reviews_handwritten" not in card["metrics"]
