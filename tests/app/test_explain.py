"""app/inference/explain.py without the web: quadrature, integrated gradients' completeness,
occlusion."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from app.inference.explain import (
    Explainer,
    gauss_legendre,
    integrated_gradients,
    occlusion,
)
from app.inference.predictor import Predictor
from tests.conftest import CHECKPOINT_KINDS
from training.checkpoint import load_checkpoint
from training.model import SentimentRNN
from training.tokenizer import tokenize

TEXT = "I love this film but the service was terrible and the food awful :("
# Integrated gradients in float32 over a text of ~15 tokens: the quadrature converges to well
# below this; float32 rounding of the sums is around 1e-7.
IG_TOLERANCE = 1e-4


def sharpened(directory: Path, scale: float = 2.0) -> tuple[SentimentRNN, list[int]]:
    """The tiny model with every weight scaled up: far from linear, so IG has work to do."""
    checkpoint = load_checkpoint(directory)
    model = checkpoint.model.float().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(scale)
    return model, checkpoint.vocab.encode(tokenize(TEXT))


@pytest.mark.parametrize("steps", [1, 2, 5, 16, 50])
def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly(steps: int) -> None:
    nodes, weights = gauss_legendre(steps)
    assert nodes.dtype == torch.float64
    assert bool(((nodes > 0) & (nodes < 1)).all())
    assert math.isclose(float(weights.sum()), 1.0, abs_tol=1e-12)
    for degree in range(2 * steps):
        # integral of x^d over [0, 1] is 1 / (d + 1)
        assert math.isclose(float((weights * nodes**degree).sum()), 1 / (degree + 1), abs_tol=1e-10)


def test_gauss_legendre_needs_a_step() -> None:
    with pytest.raises(ValueError, match="positive"):
        gauss_legendre(0)


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
def test_integrated_gradients_are_complete(checkpoints: dict[str, Path], kind: str) -> None:
    model, ids = sharpened(checkpoints[kind])
    coarse = integrated_gradients(model, ids, 2, steps=1)
    fine = integrated_gradients(model, ids, 2, steps=50)
    assert len(fine.attributions) == len(ids)
    difference = fine.logit - fine.baseline_logit
    assert math.isclose(sum(fine.attributions) - difference, fine.delta, abs_tol=1e-6)
    assert abs(fine.delta) <= IG_TOLERANCE
    assert abs(coarse.delta) > 100 * abs(fine.delta)  # the steps are doing the work
    with torch.inference_mode():
        logits = model(torch.tensor([ids]), torch.tensor([len(ids)]))[0]
    assert math.isclose(fine.logit, float(logits[2]), abs_tol=1e-5)


def test_integrated_gradients_in_float64_converge_further(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["gru"])
    result = integrated_gradients(model.double(), ids, 0, steps=64)
    assert abs(result.delta) <= 1e-9


def test_baselines(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["lstm"])
    pad = integrated_gradients(model, ids, 1, baseline="pad", steps=8)
    zero = integrated_gradients(model, ids, 1, baseline="zero", steps=8)
    unk = integrated_gradients(model, ids, 1, baseline="unk", steps=8)
    # nn.Embedding keeps the <pad> row at zero, so those two baselines are one.
    assert pad.baseline_logit == zero.baseline_logit
    assert unk.baseline_logit != pad.baseline_logit
    assert (pad.baseline, zero.baseline, unk.baseline) == ("pad", "zero", "unk")
    with pytest.raises(ValueError, match="unknown baseline"):
        integrated_gradients(model, ids, 1, baseline="mean", steps=8)  # type: ignore[arg-type]


def test_explaining_needs_eval_mode(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["rnn"])
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        integrated_gradients(model, ids, 0)
    with pytest.raises(RuntimeError, match="eval"):
        occlusion(model, ids, 0)


def test_integrated_gradients_work_under_inference_mode(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["gru"])
    with torch.inference_mode():
        result = integrated_gradients(model, ids, 0, steps=16)
    assert abs(result.delta) <= IG_TOLERANCE


def test_chunking_does_not_change_the_result(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["lstm"])
    whole = integrated_gradients(model.double(), ids, 0, steps=20, max_batch_tokens=10_000)
    chunked = integrated_gradients(model, ids, 0, steps=20, max_batch_tokens=len(ids) * 3)
    assert chunked.attributions == pytest.approx(whole.attributions, abs=1e-9)
    split = occlusion(model, ids, 0, max_batch_tokens=len(ids) * 2)
    assert split.attributions == pytest.approx(occlusion(model, ids, 0).attributions, abs=1e-12)


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
@pytest.mark.parametrize("replacement", ["unk", "drop"])
def test_occlusion_is_leave_one_out(
    checkpoints: dict[str, Path], kind: str, replacement: str
) -> None:
    model, ids = sharpened(checkpoints[kind])
    ids = [*ids[:3], 1, *ids[3:]]  # an unknown word in the text
    result = occlusion(model.double(), ids, 2, replacement=replacement)  # type: ignore[arg-type]

    def logits(sequence: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return model(torch.tensor([sequence]), torch.tensor([len(sequence)]))[0]

    full = logits(ids)
    for t, attribution in enumerate(result.attributions):
        occluded = [*ids[:t], 1, *ids[t + 1 :]] if replacement == "unk" else ids[:t] + ids[t + 1 :]
        expected = logits(occluded)
        assert math.isclose(attribution, float(full[2] - expected[2]), abs_tol=1e-9)
        probability = torch.softmax(full, -1)[2] - torch.softmax(expected, -1)[2]
        assert math.isclose(result.probability_changes[t], float(probability), abs_tol=1e-9)
    if replacement == "unk":
        assert result.attributions[3] == 0.0
        assert result.probability_changes[3] == 0.0


def test_dropping_the_only_token_leaves_the_initial_state(checkpoints: dict[str, Path]) -> None:
    model, ids = sharpened(checkpoints["lstm"])
    result = occlusion(model.double(), ids[:1], 0, replacement="drop")
    with torch.inference_mode():
        full = model(torch.tensor([ids[:1]]), torch.tensor([1]))[0, 0]
        empty = model.head.bias.detach()[0]  # the head applied to the zero state
    assert result.attributions == [pytest.approx(float(full - empty), abs=1e-12)]


def test_explainer_uses_a_float32_copy_and_the_predictors_prediction(
    checkpoints: dict[str, Path],
) -> None:
    predictor = Predictor(load_checkpoint(checkpoints["gru"]), dtype=torch.float64)
    explainer = Explainer(predictor)
    assert next(explainer.model.parameters()).dtype == torch.float32
    assert next(predictor.model.parameters()).dtype == torch.float64  # untouched
    encoded = predictor.encode(TEXT, max_chars=1000, max_tokens=100)
    explanation = explainer.explain(encoded, steps=16)
    assert explanation.prediction == predictor.predict_ids([encoded.ids])[0]
    assert explanation.label == explanation.prediction.label
    assert explanation.integrated_gradients is not None
    assert explanation.occlusion is not None
    other = explainer.explain(encoded, label="neutral", methods=("occlusion",), decimals=2)
    assert other.label == "neutral"
    assert other.integrated_gradients is None
    assert other.occlusion is not None
    assert all(round(value, 2) == value for value in other.occlusion.attributions)
    with pytest.raises(ValueError, match="unknown label"):
        explainer.explain(encoded, label="sarcastic")
    float32 = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.float32)
    assert Explainer(float32).model is float32.model  # no copy needed
