"""Per-token attributions: which words pushed the model toward a label. No web framework here.

Both methods explain one label's *logit* (the head's output before the softmax), for a text
of T tokens, and give one number per token:

Integrated gradients (Sundararajan et al., 2017) on the input embeddings `x` (T, E):

    a_t = sum_e (x - b)_te * integral_0^1 dF(b + s (x - b)) / dx_te ds

where `b` is a baseline text of the same length (every token's embedding replaced by the
`<pad>` row, the `<unk>` row, or zeros) and `F` the target logit. The integral is taken by
Gauss-Legendre quadrature with `steps` nodes (Captum's default too): it is exact for
polynomials of degree 2*steps - 1, so on a network made of tanh and sigmoid it converges
much faster than a Riemann sum. The attributions then add up to `F(x) - F(b)`
("completeness"); `delta = sum(a) - (F(x) - F(b))` reports how far the quadrature is from it.

Occlusion (leave one out): `a_t = F(x) - F(x with token t occluded)`, where occluded means
replaced by `<unk>` or dropped from the text. Dropping the only token of a one-token text
leaves an empty text, whose final state is the RNN's initial state (zeros): the head reads
that. A token that already is `<unk>` gets exactly 0 under `<unk>` replacement.

Gradients flow through the packed `nn.RNN`/`nn.LSTM`/`nn.GRU` in eval mode on the CPU (no
cuDNN, whose RNN backward refuses eval mode), for every cell and for bidirectional models.
Work is split into chunks of at most `max_batch_tokens` tokens, so memory stays bounded
whatever `steps` and the text length are.

`Explainer` runs both for a served `Predictor` in float32, whatever the predictor's dtype: the
backward pass of the CPU RNN kernels is several times faster in float32 than in float64, and
the error that matters here is the quadrature's, which `delta` reports. The `prediction` in an
explanation still comes from the predictor, so it is exactly what `/predict` answers.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch

from app.inference.predictor import Predictor
from app.inference.results import EncodedText, PredictionResult
from training.model import SentimentRNN, pad_ids

Baseline = Literal["pad", "unk", "zero"]
Replacement = Literal["unk", "drop"]
BASELINES: tuple[Baseline, ...] = ("pad", "unk", "zero")
REPLACEMENTS: tuple[Replacement, ...] = ("unk", "drop")
QUADRATURE: Literal["gauss_legendre"] = "gauss_legendre"
# Tokens per forward/backward chunk: small enough to stay in cache, big enough to batch.
DEFAULT_MAX_BATCH_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class IntegratedGradients:
    attributions: list[float]  # (T,) toward the target logit
    baseline: Baseline
    steps: int
    logit: float  # F(x)
    baseline_logit: float  # F(b)
    delta: float  # sum(attributions) - (logit - baseline_logit)


@dataclass(frozen=True, slots=True)
class Occlusion:
    replacement: Replacement
    attributions: list[float]  # (T,) F(x) - F(x without token t), in logits
    probability_changes: list[float]  # (T,) p(x) - p(x without token t) for the target


def gauss_legendre(steps: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Nodes in (0, 1) and weights summing to 1 for integrating over [0, 1] (Golub-Welsch)."""
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    k = torch.arange(1, steps, dtype=torch.float64)
    beta = k / torch.sqrt(4 * k * k - 1)  # the Legendre recurrence's off-diagonal
    jacobi = torch.diag(beta, 1) + torch.diag(beta, -1)  # (steps, steps)
    nodes, vectors = torch.linalg.eigh(jacobi)
    weights = 2 * vectors[0] ** 2  # on [-1, 1], summing to 2
    return ((nodes + 1) / 2).to(dtype), (weights / 2).to(dtype)


def _chunks(total: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def integrated_gradients(
    model: SentimentRNN,
    ids: Sequence[int],
    target: int,
    *,
    baseline: Baseline = "pad",
    steps: int = 50,
    unk_id: int = 1,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> IntegratedGradients:
    """Integrated gradients of logit `target` w.r.t. the embeddings of `ids` (model in eval)."""
    if model.training:
        raise RuntimeError("explain a model in eval mode: dropout would make the path random")
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; expected one of {list(BASELINES)}")
    length = len(ids)
    # Gradients are needed here even if the caller runs under inference_mode or no_grad.
    with torch.inference_mode(False), torch.enable_grad():
        with torch.no_grad():
            inputs = model.embed(torch.tensor([list(ids)], dtype=torch.long))[0]  # (T, E)
            if baseline == "zero":
                base = torch.zeros_like(inputs)
            else:
                row = model.config.pad_id if baseline == "pad" else unk_id
                base = model.embedding.weight[row].expand_as(inputs).clone()  # (T, E)
            diff = inputs - base  # (T, E)
            ends = torch.stack([inputs, base])  # (2, T, E)
            end_logits = model.classify(ends, torch.full((2,), length))[:, target]  # (2,)
        alphas, weights = gauss_legendre(steps, inputs.dtype)
        integral = torch.zeros_like(inputs)  # (T, E): weighted sum of gradients on the path
        per_chunk = max(1, max_batch_tokens // length)
        for part in _chunks(steps, per_chunk):
            alpha = alphas[part].view(-1, 1, 1)  # (n, 1, 1)
            path = (base + alpha * diff).requires_grad_(True)  # (n, T, E)
            logits = model.classify(path, torch.full((path.size(0),), length))  # (n, C)
            (gradient,) = torch.autograd.grad(logits[:, target].sum(), path)  # (n, T, E)
            integral += (weights[part].view(-1, 1, 1) * gradient).sum(dim=0)
        attributions = (diff * integral).sum(dim=-1)  # (T,)
    logit, baseline_logit = end_logits.tolist()
    # Summed in float64, so `delta` is the sum a client gets from the attributions it receives.
    delta = float(attributions.double().sum()) - (logit - baseline_logit)
    return IntegratedGradients(
        attributions=attributions.tolist(),
        baseline=baseline,
        steps=steps,
        logit=logit,
        baseline_logit=baseline_logit,
        delta=delta,
    )


def occlusion(
    model: SentimentRNN,
    ids: Sequence[int],
    target: int,
    *,
    replacement: Replacement = "unk",
    unk_id: int = 1,
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
) -> Occlusion:
    """Leave-one-out occlusion of every token of `ids` for logit `target` (model in eval)."""
    if model.training:
        raise RuntimeError("explain a model in eval mode: dropout would make the scores random")
    if replacement not in REPLACEMENTS:
        raise ValueError(f"unknown replacement {replacement!r}; expected {list(REPLACEMENTS)}")
    ids = list(ids)
    length = len(ids)
    if replacement == "unk":
        variants = [[*ids[:t], unk_id, *ids[t + 1 :]] for t in range(length)]
    else:
        variants = [ids[:t] + ids[t + 1 :] for t in range(length)]
    pad = model.config.pad_id
    with torch.inference_mode():
        full = model(torch.tensor([ids]), torch.tensor([length]))[0]  # (C,)
        if length == 1 and replacement == "drop":
            # An empty text never moves the state from its zero start; the head reads that.
            hidden = full.new_zeros(model.head.in_features)  # (D*H,)
            occluded = model.head(hidden).unsqueeze(0)  # (1, C)
        else:
            padded, lengths = pad_ids(variants, pad)  # (T, W), (T,)
            width = padded.size(1)
            per_chunk = max(1, max_batch_tokens // width)
            occluded = torch.cat(
                [model(padded[part], lengths[part]) for part in _chunks(length, per_chunk)]
            )  # (T, C)
        logit_changes = full[target] - occluded[:, target]  # (T,)
        probability_changes = (
            torch.softmax(full, dim=-1)[target] - torch.softmax(occluded, dim=-1)[:, target]
        )  # (T,)
        if replacement == "unk":
            # Replacing <unk> by <unk> changes nothing; batched float32 would say 1e-8.
            unchanged = torch.tensor([token == unk_id for token in ids])  # (T,)
            logit_changes[unchanged] = 0.0
            probability_changes[unchanged] = 0.0
    return Occlusion(
        replacement=replacement,
        attributions=logit_changes.tolist(),
        probability_changes=probability_changes.tolist(),
    )


@dataclass(frozen=True, slots=True)
class Explanation:
    label: str  # the label explained
    prediction: PredictionResult  # as /predict gives it
    integrated_gradients: IntegratedGradients | None
    occlusion: Occlusion | None


class Explainer:
    """Attributions for the model a `Predictor` serves. Read-only after construction."""

    def __init__(
        self, predictor: Predictor, *, max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    ) -> None:
        self.predictor = predictor
        self.labels = predictor.labels
        self.unk_id = predictor.vocab.unk_id
        self.max_batch_tokens = max_batch_tokens
        model = predictor.model
        if next(model.parameters()).dtype != torch.float32:
            # A float32 copy of its own; gradients are only ever taken w.r.t. the inputs.
            model = copy.deepcopy(model).float().requires_grad_(False)
        self.model = model.eval()

    def explain(
        self,
        encoded: EncodedText,
        *,
        label: str | None = None,
        methods: Collection[str] = ("integrated_gradients", "occlusion"),
        steps: int = 50,
        baseline: Baseline = "pad",
        replacement: Replacement = "unk",
        decimals: int | None = None,
    ) -> Explanation:
        """Attribute the prediction for `label` (default: the predicted one) to each token."""
        (prediction,) = self.predictor.predict_ids([encoded.ids])
        target_label = prediction.label if label is None else label
        if target_label not in self.labels:
            raise ValueError(f"unknown label {target_label!r}; expected one of {self.labels}")
        target = self.labels.index(target_label)
        gradients = (
            integrated_gradients(
                self.model,
                encoded.ids,
                target,
                baseline=baseline,
                steps=steps,
                unk_id=self.unk_id,
                max_batch_tokens=self.max_batch_tokens,
            )
            if "integrated_gradients" in methods
            else None
        )
        occluded = (
            occlusion(
                self.model,
                encoded.ids,
                target,
                replacement=replacement,
                unk_id=self.unk_id,
                max_batch_tokens=self.max_batch_tokens,
            )
            if "occlusion" in methods
            else None
        )
        if decimals is not None:
            prediction, gradients, occluded = _rounded(prediction, gradients, occluded, decimals)
        return Explanation(target_label, prediction, gradients, occluded)

    def warm_up(self) -> None:
        """Run a backward pass once, so the first request pays no autograd start-up."""
        usable = max(3, min(len(self.predictor.vocab), 50))
        ids = [(j * 7) % (usable - 2) + 2 for j in range(5)]
        self.explain(EncodedText([], ids), steps=4)
        self.explain(EncodedText([], ids[:1]), methods=("occlusion",), replacement="drop")


def _rounded(
    prediction: PredictionResult,
    gradients: IntegratedGradients | None,
    occluded: Occlusion | None,
    decimals: int,
) -> tuple[PredictionResult, IntegratedGradients | None, Occlusion | None]:
    def r(values: list[float]) -> list[float]:
        return [round(value, decimals) + 0.0 for value in values]  # + 0.0: no "-0.0"

    prediction = PredictionResult(
        prediction.label,
        round(prediction.score, decimals),
        {label: round(p, decimals) for label, p in prediction.probabilities.items()},
    )
    if gradients is not None:
        gradients = replace(
            gradients,
            attributions=r(gradients.attributions),
            logit=round(gradients.logit, decimals),
            baseline_logit=round(gradients.baseline_logit, decimals),
            delta=round(gradients.delta, decimals) + 0.0,
        )
    if occluded is not None:
        occluded = replace(
            occluded,
            attributions=r(occluded.attributions),
            probability_changes=r(occluded.probability_changes),
        )
    return prediction, gradients, occluded
