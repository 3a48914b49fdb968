"""Data-parallel training: `torchrun --standalone --nproc_per_node 2 -m training train` on a tiny
corpus (gloo on CPU) against a single-process run of the same recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_train import write_corpus
from training.checkpoint import load_checkpoint, verify_manifest
from training.config import TrainConfig
from training.data import load_file, stratified_split
from training.distributed import SINGLE_PROCESS, DistributedContext
from training.train import encode, evaluate_encoded, train_model

BATCH = 16  # one process; two processes take BATCH // 2 each: the same effective batch
RECIPE = {
    "text_field": "review",
    "label_field": "stars",
    "pretrained": "none",
    "cell": "gru",
    "embedding_dim": 16,
    "hidden_size": 16,
    "min_count": 1,
    "epochs": 20,
    "patience": 20,
    "learning_rate": 0.02,
    # No decay: on 72 examples one unlucky epoch would otherwise halve the rate for good, and
    # the comparison would measure that luck rather than the two ways of training.
    "lr_decay": 1.0,
    "dev_fraction": 0.2,
    "test_fraction": 0.2,
    "threads": 1,
    "baseline": False,
}


def _flags(values: dict[str, object]) -> list[str]:
    flags = []
    for name, value in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags += [flag, str(value)]
    return flags


def _rank_logs(log_dir: Path, rank: int) -> tuple[str, str]:
    [folder] = log_dir.glob(f"*/attempt_0/{rank}")
    return (folder / "stdout.log").read_text(), (folder / "stderr.log").read_text()


def _failure_report(result: subprocess.CompletedProcess[str], log_dir: Path) -> str:
    """The launcher's output, then the end of each rank's own logs (where a rank's crash is)."""
    parts = [result.stdout[-2000:], result.stderr[-2000:]]
    for path in sorted(log_dir.glob("*/attempt_*/*/*.log")):
        parts.append(f"--- {path.relative_to(log_dir)}\n{path.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


@pytest.mark.slow
def test_two_processes_train_one_checkpoint_as_good_as_one_process(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    single = train_model(
        TrainConfig(data=str(data), batch_size=BATCH).override(RECIPE), tmp_path / "single"
    )

    out, logs = tmp_path / "ddp", tmp_path / "logs"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(logs),
        "--redirects",
        "3",  # each rank's stdout and stderr to its own file
        "-m",
        "training",
        "train",
        "--data",
        str(data),
        "--batch-size",
        str(BATCH // 2),
        "--out",
        str(out),
        *_flags(RECIPE),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, _failure_report(result, logs)

    # One writer: rank 0 reports the checkpoint and draws the progress bar; rank 1 neither.
    out0, err0 = _rank_logs(logs, 0)
    out1, err1 = _rank_logs(logs, 1)
    assert out0.startswith(f"wrote {out}: test accuracy")
    assert out0.splitlines()[0].endswith("2 processes")
    assert out0.rstrip().endswith(f"serve it    rnn-sentiment serve --model-dir {out}")
    assert out1 == ""
    assert "warning: the test split holds only" in err0  # 24 test examples
    assert "warning" not in err1
    assert "epoch 1/20" in err0
    assert "process group: 2 processes, gloo backend" in err0
    assert "epoch" not in err1
    assert "process group" not in err1

    # The same checkpoint format, complete (every file in the manifest, nothing else).
    loaded = load_checkpoint(out)
    manifest = verify_manifest(out)
    assert set(manifest["files"]) | {"manifest.json"} == {p.name for p in out.iterdir()}
    assert {p.name for p in out.iterdir()} == {p.name for p in (tmp_path / "single").iterdir()}
    card = loaded.card
    assert card["training"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert single["training"]["distributed"] == {"world_size": 1, "backend": None}
    assert card["data"]["split"] == single["data"]["split"]

    # Quality: the words decide the label, and both runs learn that.
    for run in (single, card):
        assert run["metrics"]["test"]["accuracy"] >= 0.9
        assert run["metrics"]["test"]["macro_f1"] >= 0.9

    # Metrics gathered across ranks are those of the whole split, computed in one process.
    config = TrainConfig(data=str(data)).override(RECIPE)
    split = stratified_split(
        load_file(data, text_field="review", label_field="stars").examples,
        seed=config.seed,
        dev_fraction=config.dev_fraction,
        test_fraction=config.test_fraction,
    )
    label_index = {label: index for index, label in enumerate(loaded.labels)}
    test = encode(split.test, loaded.vocab, label_index, config.max_tokens, use_weights=False)
    assert evaluate_encoded(loaded.model, test, loaded.labels) == card["metrics"]["test"]
    history = card["training"]["history"]
    best = max(history, key=lambda epoch: epoch["dev_macro_f1"])
    assert card["training"]["best_epoch"] == best["epoch"]


@pytest.mark.parametrize(
    ("count", "shares"),
    [
        pytest.param(6, [[0, 2, 4], [1, 3, 5]], id="even"),
        pytest.param(5, [[0, 2, 4], [1, 3, 0]], id="wraps-around"),
        pytest.param(1, [[0], [0]], id="fewer-than-ranks"),
    ],
)
def test_every_rank_gets_the_same_number_of_batches(count: int, shares: list[list[int]]) -> None:
    batches = list(range(count))
    ranks = [DistributedContext(rank=rank, world_size=2) for rank in (0, 1)]
    assert [context.shard(batches) for context in ranks] == shares


def test_evaluation_shares_are_disjoint_and_cover_the_set() -> None:
    ranks = [DistributedContext(rank=rank, world_size=3) for rank in range(3)]
    shares = [context.indices(10) for context in ranks]
    assert sorted(index for share in shares for index in share) == list(range(10))


def test_single_process_context_changes_nothing() -> None:
    batches = ["a", "b", "c"]
    assert SINGLE_PROCESS.shard(batches) == batches
    assert SINGLE_PROCESS.sum(1.5, 2.0) == (1.5, 2.0)
    assert SINGLE_PROCESS.agree(True) is True
    assert SINGLE_PROCESS.gather(2, [0, 1], [7, 8]) == [7, 8]
    assert (SINGLE_PROCESS.is_main, SINGLE_PROCESS.enabled) == (True, False)
