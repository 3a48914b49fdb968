"""Calibration: the metrics against hand-computed values, temperature fitting on synthetic
logits, the temperature carried by checkpoints and applied on every path, training's card,
and `python -m training calibrate` on a tiny trained checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.app.conftest import serve_app
from tests.conftest import LABELS, build_checkpoint
from tests.training.test_train import tiny_config, write_corpus
from training.__main__ import main
from training.calibration import RELIABILITY_PLOT, fit_temperature
from training.checkpoint import (
    CONFIG_FILE,
    MANIFEST_FILE,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from training.metrics import brier_score, expected_calibration_error, negative_log_likelihood
from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary, tokenize
from training.train import train_model

# Four rows, two classes. Top-label confidences 0.9 (right), 0.58 (wrong), 0.7 (right) and
# 0.55 (right): with 15 bins, 0.55 and 0.58 share bin 8 ((0.533, 0.6]), 0.7 is in bin 10 and
# 0.9 in bin 13.
ROWS = [[0.9, 0.1], [0.58, 0.42], [0.3, 0.7], [0.55, 0.45]]
TRUTH = [0, 1, 1, 0]


def test_ece_by_hand() -> None:
    # bin 8: accuracy 1/2, mean confidence 0.565; bin 10: 1 vs 0.7; bin 13: 1 vs 0.9
    expected = (2 * abs(0.5 - 0.565) + abs(1 - 0.7) + abs(1 - 0.9)) / 4  # 0.1325
    assert expected_calibration_error(ROWS, TRUTH) == pytest.approx(0.1325)
    assert expected_calibration_error(ROWS, TRUTH) == pytest.approx(expected)


def test_ece_bins_matter_and_certainty_lands_in_the_last_bin() -> None:
    # One bin: |3/4 - mean(0.9, 0.58, 0.7, 0.55)| = |0.75 - 0.6825|
    assert expected_calibration_error(ROWS, TRUTH, bins=1) == pytest.approx(0.0675)
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == 0.0
    assert expected_calibration_error([[1.0, 0.0]], [1]) == pytest.approx(1.0)


def test_nll_and_brier_by_hand() -> None:
    nll = -(math.log(0.9) + math.log(0.42) + math.log(0.7) + math.log(0.55)) / 4
    assert negative_log_likelihood(ROWS, TRUTH) == pytest.approx(nll)
    assert negative_log_likelihood(ROWS, TRUTH) == pytest.approx(0.481843, abs=1e-6)
    # (0.01 + 0.01) + (0.3364 + 0.3364) + (0.09 + 0.09) + (0.2025 + 0.2025), over 4
    assert brier_score(ROWS, TRUTH) == pytest.approx(0.31945)
    assert negative_log_likelihood([[1.0, 0.0]], [1]) > 700  # finite, not inf


def test_metrics_refuse_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        brier_score(ROWS, [0])
    with pytest.raises(ValueError, match="no rows"):
        expected_calibration_error([], [])


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fitting_recovers_a_known_temperature(true_temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 3, generator=generator) * 3
    # Labels drawn from softmax(logits / T): the likelihood is highest at that T.
    targets = torch.multinomial(
        torch.softmax(logits / true_temperature, dim=-1), 1, generator=generator
    ).squeeze(1)
    fitted = fit_temperature(logits, targets)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    # The argmax is the same at any positive temperature.
    assert torch.equal((logits / fitted).argmax(-1), logits.argmax(-1))


def test_fitting_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="need logits"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_temperature_must_be_positive() -> None:
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            ModelConfig(vocab_size=10, num_labels=2, temperature=bad)


def _sharp_model(temperature: float, cell: str = "lstm", vocab_size: int = 30) -> SentimentRNN:
    """A seeded tiny model with a large head, so temperatures change probabilities visibly."""
    config = ModelConfig(
        vocab_size=vocab_size,
        num_labels=3,
        cell=cell,  # type: ignore[arg-type]
        embedding_dim=8,
        hidden_size=6,
        dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = SentimentRNN(config).eval()
    with torch.no_grad():
        model.head.weight.mul_(20)
    model.set_temperature(temperature)
    return model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_every_path_divides_the_logits_by_the_temperature(cell: str) -> None:
    plain = _sharp_model(1.0, cell)
    hot = _sharp_model(2.0, cell)
    ids = torch.tensor([4, 9, 17, 2, 5])
    lengths = torch.tensor([5])
    with torch.inference_mode():
        raw = plain(ids.unsqueeze(0), lengths)[0]
        assert not torch.allclose(torch.softmax(raw, -1), torch.softmax(raw / 2, -1), atol=1e-3)
        torch.testing.assert_close(hot(ids.unsqueeze(0), lengths)[0], raw / 2)
        torch.testing.assert_close(hot.forward_padded(ids.unsqueeze(0), lengths)[0], raw / 2)
        trace, plain_trace = hot.forward_steps(ids), plain.forward_steps(ids)
        torch.testing.assert_close(trace.logits, raw / 2)
        assert trace.step_logits is not None
        assert plain_trace.step_logits is not None
        torch.testing.assert_close(trace.step_logits, plain_trace.step_logits / 2)
        first = hot.step_from(ids[:2])
        rest = hot.step_from(ids[2:], first.state)
        torch.testing.assert_close(rest.logits, raw / 2, rtol=1e-5, atol=1e-5)
        empty = hot.step_from(ids[:0], first.state)
        torch.testing.assert_close(empty.logits, first.logits)
    # bfloat16 serving copies the model and casts the head back to float32: T stays.
    copy = hot.to(torch.bfloat16)
    copy.head.float()
    assert copy.head.temperature.dtype == torch.float32
    assert float(copy.head.temperature) == 2.0


def test_temperature_is_kept_out_of_the_weights(tmp_path: Path) -> None:
    vocab = Vocabulary.build({f"w{i}": 1 for i in range(20)})
    model = _sharp_model(1.7, vocab_size=len(vocab))
    assert "head.temperature" not in model.state_dict()
    assert not any(p is model.head.temperature for p in model.parameters())
    save_checkpoint(tmp_path, model=model, labels=LABELS, vocab=vocab, card={})
    loaded = load_checkpoint(tmp_path)
    assert loaded.config.temperature == 1.7
    assert float(loaded.model.head.temperature) == pytest.approx(1.7)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model"]["temperature"] == 1.7


def test_a_checkpoint_from_before_calibration_loads_with_temperature_one(tmp_path: Path) -> None:
    directory = build_checkpoint(tmp_path / "old", "gru")
    config_path = directory / CONFIG_FILE
    config = json.loads(config_path.read_text())
    del config["model"]["temperature"]  # what every checkpoint written before it looks like
    config_path.write_text(json.dumps(config))
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["files"][CONFIG_FILE] = {
        "sha256": sha256_file(config_path),
        "bytes": config_path.stat().st_size,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    loaded = load_checkpoint(directory)
    assert loaded.config.temperature == 1.0
    hidden = torch.randn(2, loaded.model.head.in_features)
    with torch.inference_mode():
        expected = hidden @ loaded.model.head.weight.T + loaded.model.head.bias
        torch.testing.assert_close(loaded.model.head(hidden), expected)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_every_route_answers_with_the_calibrated_probabilities(tmp_path: Path) -> None:
    from app.core.config import Settings

    text = "I love this film, it is great"
    directory = build_checkpoint(tmp_path / "base", "lstm", seed=5)
    base = load_checkpoint(directory)
    model = base.model
    with torch.no_grad():
        model.head.weight.mul_(30)  # confident enough that T = 2 shows in every digit
    ids = base.vocab.encode(tokenize(text))
    with torch.inference_mode():
        raw = model(torch.tensor([ids]), torch.tensor([len(ids)]))[0].double()
    model.set_temperature(2.0)
    save_checkpoint(tmp_path / "hot", model=model, labels=LABELS, vocab=base.vocab, card={})
    settings = Settings(model_dir=tmp_path / "hot", gc_freeze=False)
    async with serve_app(settings) as client:
        predicted = (await client.post("/predict", json={"text": text})).json()
        traced = (await client.post("/hidden-states", json={"text": text})).json()
        explained = (await client.post("/explain", json={"text": text})).json()
        piece = (await client.post("/stream", json={"text": text})).json()
        streamed = (
            await client.post("/stream", json={"state": piece["state"], "final": True})
        ).json()
    expected = dict(zip(LABELS, torch.softmax(raw / 2, -1).tolist(), strict=True))
    uncalibrated = dict(zip(LABELS, torch.softmax(raw, -1).tolist(), strict=True))
    assert predicted["probabilities"] == pytest.approx(expected, abs=1e-4)
    assert predicted["probabilities"] != pytest.approx(uncalibrated, abs=1e-2)
    assert traced["steps"][-1]["probabilities"] == pytest.approx(expected, abs=1e-3)
    assert explained["prediction"]["probabilities"] == pytest.approx(expected, abs=1e-4)
    label = LABELS.index(explained["label"])
    assert explained["integrated_gradients"]["logit"] == pytest.approx(
        float(raw[label]) / 2, abs=1e-4
    )
    assert streamed["prediction"]["probabilities"] == pytest.approx(expected, abs=1e-3)


def test_training_calibrates_and_the_command_recalibrates_in_place(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    out = tmp_path / "model"
    # Seed 13: on this tiny corpus (about 24 test texts) the test NLL follows the dev NLL the
    # temperature minimises for this seed, which is what the check below relies on.
    card = train_model(tiny_config(data, "gru", epochs=3, seed=13), out)
    calibration = card["calibration"]
    assert calibration["method"] == "temperature_scaling"
    keys = {f"{m}_{w}" for m in ("ece", "nll", "brier") for w in ("before", "after")}
    assert set(calibration["test"]) == keys
    # The tiny corpus has the three sentiment labels: the handwritten reviews are measured.
    assert set(calibration["reviews_handwritten"]) == keys
    # T minimises dev NLL, so dev NLL after can only be lower; test is close to dev here.
    assert calibration["test"]["nll_after"] <= calibration["test"]["nll_before"] + 0.05
    loaded = load_checkpoint(out)
    assert loaded.config.temperature == pytest.approx(calibration["temperature"], rel=1e-5)
    assert card["architecture"]["temperature"] == loaded.config.temperature
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert RELIABILITY_PLOT in manifest["files"]
    assert (out / RELIABILITY_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Undo the temperature by hand (a checkpoint that was never calibrated), then calibrate.
    model = loaded.model
    model.set_temperature(1.0)
    stale = {key: value for key, value in loaded.card.items() if key != "calibration"}
    save_checkpoint(
        out,
        model=model,
        labels=loaded.labels,
        vocab=loaded.vocab,
        card=stale,
        extra_files=["learning_curves.png", "confusion_matrix.png"],
    )
    before = load_checkpoint(out)
    assert before.config.temperature == 1.0
    assert main(["calibrate", "--model", str(out), "--json"]) == 0
    after = load_checkpoint(out)
    assert after.sha256 != before.sha256  # a new manifest, verified on load
    assert after.card["calibration"]["temperature"] == calibration["temperature"]
    assert after.config.temperature == pytest.approx(calibration["temperature"], rel=1e-5)
    assert after.card["metrics"] == before.card["metrics"]
    files = json.loads((out / MANIFEST_FILE).read_text())["files"]
    assert {"learning_curves.png", "confusion_matrix.png", RELIABILITY_PLOT} <= set(files)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".model")]
    for name in ("model.safetensors", "vocab.json"):
        assert files[name] == manifest["files"][name]  # only config, card and plot change


def test_without_a_dev_split_training_keeps_temperature_one(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl", per_label=10)
    out = tmp_path / "model"
    card = train_model(tiny_config(data, "rnn", epochs=1, dev_fraction=0.0), out)
    assert card["calibration"] == {"method": "none", "temperature": 1.0, "reason": "no dev split"}
    assert load_checkpoint(out).config.temperature == 1.0
    assert RELIABILITY_PLOT not in json.loads((out / MANIFEST_FILE).read_text())["files"]
    # The command refuses to calibrate it, leaving it as it was.
    assert main(["calibrate", "--model", str(out)]) == 2
    assert load_checkpoint(out).config.temperature == 1.0
