"""`rnn-sentiment train|evaluate` as a person runs them: a tiny real run with its closing
summary, an `--out` that is kept unless `--force`, and one line for each data mistake."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_sentiment.cli import main
from tests.cli.conftest import REPO, assert_one_line_error, clean_env, rnn_sentiment
from tests.training.test_train import write_corpus
from training.__main__ import (
    SMALL_TEST_SPLIT,
    accuracy_interval,
    run_summary,
    small_test_warning,
)
from training.checkpoint import MANIFEST_FILE, load_checkpoint

# Small and fast: a few seconds on one thread (see tests/training/test_train.py).
TINY = [
    "--text-field", "review", "--label-field", "stars", "--pretrained", "none",
    "--embedding-dim", "8", "--hidden-size", "8", "--min-count", "1", "--epochs", "2",
    "--batch-size", "16", "--dev-fraction", "0.2", "--test-fraction", "0.2",
    "--no-baseline", "--threads", "1",
]  # fmt: skip


@pytest.mark.slow
def test_a_tiny_run_ends_with_where_things_are_and_how_to_serve_them(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")  # 120 examples: 24 in the test split
    out = tmp_path / "models" / "tiny"
    result = rnn_sentiment("train", "--data", str(data), "--out", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.splitlines()[-4:]
    assert summary[0].startswith(f"wrote {out}: test accuracy ")
    assert summary[1:] == [
        f"  checkpoint  {out}",
        f"  plots       {out / 'learning_curves.png'}, {out / 'confusion_matrix.png'}",
        f"  serve it    rnn-sentiment serve --model-dir {shlex.quote(str(out))}",
    ]
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "rnn-sentiment: warning: the test split holds only 24 examples (fewer than 200), so "
        "its figures mean little: test accuracy "
    )
    checkpoint = load_checkpoint(out)
    assert checkpoint.name == "tiny"
    assert checkpoint.card["command"][:2] == ["rnn-sentiment", "train"]
    assert sorted(path.name for path in out.parent.iterdir()) == ["tiny"]  # no staging left

    # Again without --force: refused before any work, the checkpoint untouched.
    manifest = (out / MANIFEST_FILE).read_bytes()
    again = rnn_sentiment("train", "--data", str(data), "--out", str(out), *TINY)
    line = assert_one_line_error(again)
    assert line == (
        f"rnn-sentiment: --out {out} already exists: pass --force to replace it, or choose "
        "another --out"
    )
    assert (out / MANIFEST_FILE).read_bytes() == manifest

    # With --force: replaced by the new run (its card has a new creation time at least).
    forced = rnn_sentiment(
        "train", "--data", str(data), "--out", str(out), "--force", "--seed", "7", *TINY
    )
    assert forced.returncode == 0, forced.stderr
    assert (out / MANIFEST_FILE).read_bytes() != manifest
    assert load_checkpoint(out).card["training"]["seed"] == 7
    assert sorted(path.name for path in out.parent.iterdir()) == ["tiny"]


def corpus_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("reviews.csv", "body,stars\ngood,pos\nbad,neg\n",
         "reviews.csv:1: missing text field 'review' in the header (columns: ['body', 'stars'])"),
        ("reviews.jsonl", '{"body": "good", "stars": "pos"}\n',
         "reviews.jsonl:1: missing text field 'review' (keys: ['body', 'stars'])"),
        ("reviews.csv", "", "reviews.csv: the file is empty (a header row is required)"),
        ("reviews.jsonl", "\n\n", "reviews.jsonl: no rows: the file holds no examples"),
        ("reviews.txt", "good\tpos\n",
         "reviews.txt: cannot tell the format from the suffix '.txt': name the file .csv, "
         ".jsonl or .ndjson"),
        ("reviews.jsonl", '{"review": "good", "stars": "pos"}\n{"review": "bad"\n',
         "reviews.jsonl:2: invalid JSON"),
    ],
)  # fmt: skip
def test_a_bad_data_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, problem: str
) -> None:
    data = corpus_file(tmp_path, name, content)
    out = tmp_path / "model"
    code = main(["train", "--data", str(data), "--out", str(out), *TINY])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"rnn-sentiment: {tmp_path}/{problem}")
    assert not out.exists()


def test_a_missing_data_file_is_one_line_from_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert_one_line_error(
        rnn_sentiment("train", "--data", str(missing), "--out", str(tmp_path / "m"), *TINY),
        f"{missing}: cannot read the file (No such file or directory)",
    )


def test_evaluate_on_a_missing_model_or_file_is_one_line(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl", per_label=2)
    assert_one_line_error(
        rnn_sentiment("evaluate", "--model", str(tmp_path / "none"), "--data", str(data)),
        f"{tmp_path / 'none'}: checkpoint directory does not exist",
    )
    assert_one_line_error(
        rnn_sentiment(
            "evaluate", "--model", str(checkpoints["lstm"]), "--data", str(tmp_path / "x.csv")
        ),
        "x.csv: cannot read the file",
    )


def test_a_bad_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = corpus_file(tmp_path, "recipe.toml", "hiden_size = 3\n")
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "m")])
    assert code == 2
    assert capsys.readouterr().err == (
        f"rnn-sentiment: --config {config}: unknown training options: hiden_size\n"
    )


def test_the_small_test_split_threshold_and_interval() -> None:
    # Wilson's interval for 50 right out of 100: 0.404 to 0.596.
    low, high = accuracy_interval(100, 0.5)
    assert (round(low, 3), round(high, 3)) == (0.404, 0.596)
    # A perfect score on a handful of texts is far from certain.
    low, high = accuracy_interval(10, 1.0)
    assert high == 1.0
    assert low < 0.75

    def card(test_examples: int) -> dict[str, object]:
        half = test_examples // 2
        return {
            "data": {"split": {"test": {"neg": half, "pos": test_examples - half}}},
            "metrics": {"test": {"accuracy": 0.8}},
        }

    assert small_test_warning(card(SMALL_TEST_SPLIT)) is None
    warning = small_test_warning(card(SMALL_TEST_SPLIT - 1))
    assert warning is not None
    assert "only 199 examples" in warning
    assert "test accuracy 0.800 is anywhere from 0.739 to 0.850 (95% interval)" in warning


def test_summary_paths_are_quoted_for_the_shell(tmp_path: Path) -> None:
    out = tmp_path / "my model"
    card = {"metrics": {"test": {"accuracy": 0.9, "macro_f1": 0.8}}, "training": {"seconds": 3}}
    summary = run_summary(card, out).splitlines()
    assert summary == [
        f"wrote {out}: test accuracy 0.9000, macro-F1 0.8000, 3 s",
        f"  checkpoint  {out}",  # no plots line: there are none (matplotlib missing, say)
        f"  serve it    rnn-sentiment serve --model-dir '{out}'",
    ]


def test_without_the_training_extras_it_says_how_to_install_them(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl", per_label=2)
    # The import system treats a None entry in sys.modules as a package that is not there.
    probe = (
        "import sys\n"
        "sys.modules['tqdm'] = None\n"
        "from rnn_sentiment.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(data)!r}, '--out', {str(tmp_path / 'm')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    line = assert_one_line_error(result)
    assert line == (
        "rnn-sentiment: train needs the training extras (tqdm is missing): "
        "pip install -e '.[train]' (or make install-train)"
    )
