"""The model behind the API, with no web framework in sight: text in, predictions out.

`Predictor` wraps a loaded `Checkpoint`: tokenize, encode, pad, forward under
`torch.inference_mode()`, softmax, label. Routes and the micro-batcher call it; tests call it
directly.

Same answer alone or batched: a text's probabilities must not depend on who shares its forward
pass. A CPU matrix multiply does not promise that: its kernels block the work by the number of
rows, and with packed sequences (the usual way to batch texts of different lengths) the rows
left at each step shrink as texts end, down to one. So in float32 a packed text's
probabilities move in the 7th digit with its batch-mates. Two ways keep them fixed:

- float32 (the default), unpacked: every row runs every step of the pass and is read at its
  own last token (`SentimentRNN.forward_padded`), on at least a minimum of rows
  (`PADDED_MIN_ROWS`: filler rows added and dropped; more on CPUs whose kernels change path
  at a larger row count). Each step then multiplies the same rows with the same kernel,
  whatever the batch; a float32 LSTM also gets oneDNN's fused RNN kernel this way. The
  padding costs steps, which the batcher bounds by grouping texts by length
  (`app.inference.batching`). Only a one-direction LSTM runs this way: oneDNN keeps its rows
  apart at every size measured, while the GRU and plain RNN kernels' rows still differed with
  the row count (their elementwise steps vectorise a batch's values as one block), and a
  bidirectional model cannot run unpacked (its backward direction would read the padding
  first). At load, probe texts are run alone and in batches of several sizes up to a full
  one; should they differ on some machine's kernels, the pass runs on more filler rows, and
  failing that in float64, with a warning.
- float64, packed: rows still differ with the batch, by about 1e-16, which rounding the result
  to float32 hides. About half the speed of the float32 path.

bfloat16 (the service's default, `APP_INFERENCE_DTYPE`) is the float32 way with the embedding
and the recurrence in bfloat16, on CPUs that run it natively (AVX-512 BF16, AMX; elsewhere
float32 is used). oneDNN's bfloat16 LSTM keeps rows apart as its float32 one does (same probe at
load, same tests) and costs about 0.6 of float32's time per pass; the head reads the final
state in float32. Probabilities move by up to `BFLOAT16_TOLERANCE` from float32's; the default
model's test metrics do not change (`bench/cpu_paths.py`). Only the batched pass runs in
bfloat16: traces, streams and explanations (`model`, `dtype`) stay float32, so a stream's last
prediction agrees with /predict to that tolerance instead of float32's ~1e-7.

A /hidden-states answer comes from one pass, the trace in `dtype` (`Predictor.hidden_states`):
its `prediction` is the trace's own final step, so it equals the last of its `steps` exactly
(for a bidirectional model, which has no steps, it is the trace's final state read by the
head). It agrees with /predict for the same text to `stream_tolerance(pass_dtype)`, as a
stream does, not exactly: mixing the two passes in one answer would let it disagree with
itself whenever the batched pass runs in another dtype.

Tests check the property for every kind of cell, alone against batches of every size.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch

from app.inference.results import (
    BIDIRECTIONAL_STEPS_NOTE,
    SATURATION_THRESHOLD,
    EncodedText,
    HiddenStates,
    LayerStateValues,
    PredictionResult,
    check_chars,
    check_tokens,
    dtype_name,
    prediction_from,
)
from training.checkpoint import Checkpoint
from training.model import LayerTrace, pad_ids
from training.tokenizer import token_norms, tokenize

logger = logging.getLogger("app.inference.predictor")


# An unpacked pass runs on at least this many rows (filler rows added and dropped): oneDNN may
# take another kernel path for a small row count, and a text's result would then depend on how
# many texts it came with. Where that path changes at a larger count (between 9 and 16 rows
# on some AVX-512 CPUs), the probe at load moves up to the next minimum.
PADDED_MIN_ROWS: tuple[int, ...] = (4, 16)
# ...and on a multiple of this many rows and steps. oneDNN compiles (and caches) a kernel per
# input shape; rounding makes the shapes of everyday traffic few, so they stay in its cache,
# which the server keeps small (`app.__main__`: ONEDNN_PRIMITIVE_CACHE_CAPACITY).
PADDED_SHAPE_STEP = 4


class Predictor:
    """A loaded model, ready to predict. Read-only after construction; safe to share."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        dtype: torch.dtype = torch.float32,
        torchscript: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.labels: tuple[str, ...] = checkpoint.labels
        self.name = checkpoint.name
        self.version = checkpoint.version
        self.vocab = checkpoint.vocab
        # Longer texts were cut to this many tokens in training (None: the card does not say):
        # a prediction marks a text over it `truncated`.
        self.trained_tokens = trained_tokens(checkpoint.card)
        self.num_parameters = sum(p.numel() for p in checkpoint.model.parameters())
        config = checkpoint.config
        if config.cell != "lstm" or config.bidirectional:
            dtype = torch.float64  # float32 would not keep rows apart (module doc)
        if dtype == torch.bfloat16 and not native_bfloat16():
            logger.info("this CPU has no native bfloat16: predictions run in float32")
            dtype = torch.float32
        # Down the chain bfloat16 -> float32 -> float64, each on the fewest filler rows that
        # keep rows apart; float64 runs packed and needs no check (module doc).
        chain = [torch.bfloat16, torch.float32, torch.float64]
        for pass_dtype in chain[chain.index(dtype) :]:
            self._use(pass_dtype, torchscript)
            if self._padding_that_keeps_rows_apart():
                break
            logger.warning(
                "%s results depend on the batch on this machine; predicting in %s",
                dtype_name(pass_dtype),
                dtype_name(chain[chain.index(pass_dtype) + 1]),
            )

    def _use(self, pass_dtype: torch.dtype, torchscript: bool) -> None:
        """Predict in `pass_dtype`: bfloat16 or float32 unpacked, float64 packed (module doc).

        `dtype` is what everything else computes in (traces, streams, explanations): the
        pass's own dtype, except float32 under a bfloat16 pass.
        """
        self.pass_dtype = pass_dtype
        self.dtype = torch.float32 if pass_dtype == torch.bfloat16 else pass_dtype
        # Serving only: no parameter ever needs a gradient (`app.inference.explain` takes them
        # w.r.t. the inputs), so autograd records nothing for the weights.
        self.model = self.checkpoint.model.to(self.dtype).eval().requires_grad_(False)
        self.padded = pass_dtype != torch.float64
        self.min_rows = PADDED_MIN_ROWS[0] if self.padded else 1
        method = "forward_padded" if self.padded else "forward"
        model = self.model
        if pass_dtype == torch.bfloat16:
            # The embedding and recurrence in bfloat16; the head reads the final state in
            # float32 (`SentimentRNN.forward_padded`), so softmax sees float32 logits.
            model = copy.deepcopy(self.model).to(pass_dtype)
            model.head.float()
        self.pass_model = model  # the module /predict's passes run (self.model, or its copy)
        self._forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = getattr(model, method)
        if torchscript:
            self._forward = _traced(model, method)

    def _padding_that_keeps_rows_apart(self) -> bool:
        """Set `min_rows` to the first minimum under which rows are kept apart (True), or
        report that none does (False). A packed pass needs none."""
        if not self.padded:
            return True
        for rows in PADDED_MIN_ROWS:
            self.min_rows = rows
            if self._rows_independent():
                return True
        return False

    def _rows_independent(self) -> bool:
        """Whether texts get the same probabilities alone and in batches of several sizes up
        to a full one: the property an unpacked pass relies on, checked on this machine's
        kernels (which may change their path with the row count)."""
        usable = max(1, len(self.vocab) - 2)
        probe = [[(7 * i + 3 * j) % usable + 2 for j in range(1 + (5 * i) % 48)] for i in range(24)]
        alone = [self._probabilities([ids])[0] for ids in probe]
        for size in (3, 9, 17, 24, 64):
            chosen = [(5 * k + size) % len(probe) for k in range(size)]
            batch = self._probabilities([probe[i] for i in chosen])
            if batch != [alone[i] for i in chosen]:
                return False
        return True

    # -- input ---------------------------------------------------------------------------------

    def encode(self, text: str, *, max_chars: int, max_tokens: int) -> EncodedText:
        """Tokenize and look up `text`; `TextRejectedError` says which limit it breaks."""
        check_chars(text, max_chars)
        tokens = tokenize(text)
        check_tokens(len(tokens), max_tokens)
        return EncodedText(tokens, self.vocab.encode(tokens))

    def encode_ids(self, text: str, *, max_chars: int, max_tokens: int) -> list[int]:
        """`encode(...).ids`, without making the tokens: what a prediction needs."""
        check_chars(text, max_chars)
        norms = token_norms(text)
        check_tokens(len(norms), max_tokens)
        return self.vocab.encode_norms(norms)

    # -- prediction ----------------------------------------------------------------------------

    def predict_ids(self, batch: Sequence[Sequence[int]]) -> list[PredictionResult]:
        """One forward pass over encoded texts (each non-empty); results in input order, each
        with the signals its ids give (`PredictionResult`)."""
        if not batch:
            return []
        rows = self._probabilities(batch)
        labels = self.labels
        unk_id = self.vocab.unk_id
        limit = self.trained_tokens
        results: list[PredictionResult] = []
        for ids, row in zip(batch, rows, strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            count = len(ids)
            results.append(
                PredictionResult(
                    labels[best],
                    row[best],
                    dict(zip(labels, row, strict=True)),
                    count,
                    ids.count(unk_id) / count,
                    limit is not None and count > limit,
                )
            )
        return results

    def predict(self, texts: Sequence[str]) -> list[PredictionResult]:
        """Convenience for scripts and tests: no limits beyond needing at least one token."""
        encoded = [
            self.encode(text, max_chars=len(text), max_tokens=len(text) + 1) for text in texts
        ]
        return self.predict_ids([item.ids for item in encoded])

    def _probabilities(self, batch: Sequence[Sequence[int]]) -> list[list[float]]:
        count = len(batch)
        step = PADDED_SHAPE_STEP if self.padded else 1
        height = max(self.min_rows, -(-count // step) * step)
        if height > count:  # filler rows, dropped below: see module doc
            batch = [*batch, *[[self.vocab.pad_id]] * (height - count)]
        ids, lengths = pad_ids(batch, self.vocab.pad_id, multiple=step)  # (B, T), (B,)
        with torch.inference_mode():
            logits = self._forward(ids, lengths)[:count]  # (B, C)
            probabilities = torch.softmax(logits, dim=-1).float()  # rounding: see module doc
        rows: list[list[float]] = probabilities.tolist()
        return rows

    # -- introspection -------------------------------------------------------------------------

    def hidden_states(
        self,
        encoded: EncodedText,
        *,
        all_layers: bool = False,
        include_cell: bool = False,
        decimals: int | None = None,
        include_gates: bool = False,
        units: Sequence[int] | None = None,
        top_k: int | None = None,
    ) -> HiddenStates:
        """Per-token states of the last (or every) layer, per-step predictions, the prediction:
        all from one trace in `dtype`, the prediction being its final step (module doc).

        `units` keeps only those hidden units (in that order); `top_k` keeps each layer's and
        direction's k most active units (largest mean |h_t| over the tokens, ties to the lower
        index). Cell states and gates follow the same units; `norm` and `saturated` always
        summarise every unit.
        """
        config = self.model.config
        with torch.inference_mode():
            trace = self.model.forward_steps(torch.tensor(encoded.ids, dtype=torch.long))
            step_probabilities = (
                None
                if trace.step_logits is None
                else torch.softmax(trace.step_logits, dim=-1)  # (T, C)
            )
            wanted = range(config.num_layers) if all_layers else (config.num_layers - 1,)
            layers = [
                _layer_states(
                    layer,
                    direction,
                    states,
                    include_cell=include_cell,
                    include_gates=include_gates,
                    units=units,
                    top_k=top_k,
                    decimals=decimals,
                )
                for layer in wanted
                for direction, states in enumerate(trace.layers[layer])
            ]
            rows = (
                []
                if step_probabilities is None
                else _rounded(step_probabilities, decimals)  # (T, C)
            )
            # The prediction is the trace's own final step, so the answer agrees with itself
            # (module doc); a bidirectional trace has no steps, only its final state's logits.
            final = (
                rows[-1]
                if rows
                else _rounded(torch.softmax(trace.logits, dim=-1).unsqueeze(0), decimals)[0]
            )
        labels = self.labels
        steps = [
            (step.label, step.probabilities)
            for step in (prediction_from(labels, row) for row in rows)
        ]
        prediction = prediction_from(labels, final)
        return HiddenStates(
            layers=layers,
            steps=steps,
            steps_note=BIDIRECTIONAL_STEPS_NOTE if config.bidirectional else None,
            prediction=prediction,
            flips=[t for t in range(1, len(steps)) if steps[t][0] != steps[t - 1][0]],
        )

    def warm_up(self) -> None:
        """Run every code path once so the first real request pays no one-off costs."""
        usable = max(2, min(len(self.vocab), 50))
        batch = [
            [(i * 7 + j) % (usable - 2) + 2 for j in range(n)] for i, n in enumerate((1, 5, 20))
        ]
        self.predict_ids(batch)
        self.predict_ids(batch[:1])
        self.hidden_states(
            EncodedText([], batch[1]), all_layers=True, include_cell=True, include_gates=True
        )


def _layer_states(
    layer: int,
    direction: int,
    states: LayerTrace,
    *,
    include_cell: bool,
    include_gates: bool,
    units: Sequence[int] | None,
    top_k: int | None,
    decimals: int | None,
) -> LayerStateValues:
    """One layer's and direction's trace as lists, for the units asked for."""
    hidden = states.hidden  # (T, H)
    if units is not None:
        chosen: list[int] | None = list(units)
    elif top_k is not None:
        activity = hidden.abs().mean(dim=0)  # (H,)
        # A stable sort on -activity keeps ties in index order, so the choice is reproducible.
        order = torch.sort(-activity, stable=True).indices[:top_k]
        chosen = order.tolist()
    else:
        chosen = None
    index = None if chosen is None else torch.tensor(chosen, dtype=torch.long)

    def pick(tensor: torch.Tensor) -> list[list[float]]:
        return _rounded(tensor if index is None else tensor[:, index], decimals)

    norm = torch.linalg.vector_norm(hidden, dim=-1)  # (T,)
    saturated = (hidden.abs() > SATURATION_THRESHOLD).to(hidden.dtype).mean(dim=-1)  # (T,)
    return LayerStateValues(
        layer=layer,
        direction="backward" if direction else "forward",
        hidden=pick(hidden),
        cell=pick(states.cell) if include_cell and states.cell is not None else None,
        gates=(
            {name: pick(values) for name, values in states.gates.items()}
            if include_gates and states.gates
            else None
        ),
        units=chosen,
        norm=_rounded_row(norm, decimals),
        saturated=_rounded_row(saturated, decimals),
    )


def _rounded_row(tensor: torch.Tensor, decimals: int | None) -> list[float]:
    values = tensor.float()
    if decimals is not None:
        values = values.double().round(decimals=decimals)
    row: list[float] = values.tolist()
    return row


def _rounded(tensor: torch.Tensor, decimals: int | None) -> list[list[float]]:
    """float32 precision (see module doc), then optionally rounded in float64 (short JSON)."""
    values = tensor.float()
    if decimals is not None:
        values = values.double().round(decimals=decimals)
    rows: list[list[float]] = values.tolist()
    return rows


def trained_tokens(card: dict[str, Any]) -> int | None:
    """The `max_tokens` a checkpoint's training cut its texts to, from its model card."""
    training = card.get("training")
    config = training.get("config") if isinstance(training, dict) else None
    value = config.get("max_tokens") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def native_bfloat16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX-512 BF16 or AMX); emulated it is slow.

    oneDNN also reports bfloat16 as supported on AVX-512 CPUs without those instructions,
    where it converts every value; on Linux the CPU's own flags tell the two apart."""
    if not (
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return False
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return True  # no flags to read: trust oneDNN
    for line in lines:
        if line.startswith("flags"):  # x86's list; other architectures: trust oneDNN
            return bool(set(line.partition(":")[2].split()) & {"avx512_bf16", "amx_bf16"})
    return True


def _traced(
    model: torch.nn.Module, method: str
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model`'s (ids, lengths) -> logits `method` as a traced TorchScript graph.

    Same weights, dtype and operations (packed or unpacked), less Python per call: the
    bench measured half the time at batch 1 in float64. Tracing records shapes only through
    operations that take them at run time, so one example covers every batch and length.
    Not `torch.jit.freeze`d: freezing bakes the weights into the graph as constants, which
    TorchScript's global compilation unit keeps for the life of the process, so every reload
    (app.inference.slot) would leak a model's worth of memory; it measured no faster here.
    """
    example = (torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2]))
    with warnings.catch_warnings(), torch.inference_mode():
        # Tracer and deprecation notices are about TorchScript itself, not about this model.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {method: example}).eval()  # type: ignore[no-untyped-call]
    return cast(Callable[[torch.Tensor, torch.Tensor], torch.Tensor], getattr(traced, method))
