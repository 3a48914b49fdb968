"""The predictor on its own: no HTTP, no event loop."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from app.inference import predictor as predictor_module
from app.inference.predictor import PADDED_MIN_ROWS, Predictor, native_bfloat16
from app.inference.results import (
    BFLOAT16_TOLERANCE,
    BIDIRECTIONAL_STEPS_NOTE,
    TextRejectedError,
    stream_tolerance,
)
from tests.conftest import CHECKPOINT_KINDS, LABELS
from training.checkpoint import load_checkpoint

TEXTS = [
    "I love this film",
    "terrible, awful service :(",
    "It arrived on Tuesday in a brown box and the phone is fine but the battery is not great",
    "zyxxy quorbl flimflam",  # every word unknown
    "👍",
    "ok",
    "Best purchase ever!!! @shop #happy http://example.com",
]


@pytest.fixture(scope="module", params=list(CHECKPOINT_KINDS))
def predictor(request: pytest.FixtureRequest, checkpoints: dict[str, Path]) -> Predictor:
    return Predictor(load_checkpoint(checkpoints[request.param]))


def test_batch_results_equal_single_results_exactly(predictor: Predictor) -> None:
    alone = [predictor.predict([text])[0] for text in TEXTS]
    together = predictor.predict(TEXTS)
    assert together == alone
    # ...and whatever the batch-mates and their order.
    shuffled = predictor.predict(TEXTS[::-1] + TEXTS[:3])
    assert shuffled[: len(TEXTS)] == alone[::-1]
    assert shuffled[len(TEXTS) :] == alone[:3]


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
@pytest.mark.parametrize(
    "dtype",
    [torch.bfloat16, torch.float32, torch.float64],
    ids=["bfloat16", "float32", "float64"],
)
def test_a_texts_result_never_depends_on_its_batch(
    checkpoints: dict[str, Path], kind: str, dtype: torch.dtype
) -> None:
    """Bit for bit, alone against batches of every size up to 40 and lengths from 1 to 60."""
    predictor = Predictor(load_checkpoint(checkpoints[kind]), dtype=dtype, torchscript=True)
    rng = random.Random(kind)
    usable = range(2, len(predictor.vocab))
    pool = [[rng.choice(usable) for _ in range(rng.randint(1, 60))] for _ in range(48)]
    alone = [predictor.predict_ids([ids])[0] for ids in pool]
    for size in range(1, 41):
        chosen = rng.sample(range(len(pool)), size)
        together = predictor.predict_ids([pool[i] for i in chosen])
        assert together == [alone[i] for i in chosen], f"batch of {size}"


@pytest.mark.parametrize(
    ("kind", "dtype"),
    [
        ("lstm", torch.float32),
        ("rnn", torch.float64),
        ("gru", torch.float64),
        ("bilstm", torch.float64),
    ],
)
def test_only_a_one_direction_lstm_runs_in_float32(
    checkpoints: dict[str, Path], kind: str, dtype: torch.dtype
) -> None:
    # Other kernels' rows move with the batch in float32, or need packing (module doc).
    predictor = Predictor(load_checkpoint(checkpoints[kind]), dtype=torch.float32)
    assert predictor.dtype == dtype
    assert next(predictor.model.parameters()).dtype == dtype
    assert predictor.padded == (dtype == torch.float32)


def test_a_bfloat16_pass_leaves_everything_else_in_float32(checkpoints: dict[str, Path]) -> None:
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.bfloat16)
    # Traces, streams and explanations use `model` and `dtype`: float32 either way.
    assert predictor.dtype == torch.float32
    assert next(predictor.model.parameters()).dtype == torch.float32
    assert predictor.padded
    assert predictor.pass_dtype == (torch.bfloat16 if native_bfloat16() else torch.float32)


def test_bfloat16_probabilities_stay_close_to_float32(checkpoints: dict[str, Path]) -> None:
    checkpoint = load_checkpoint(checkpoints["lstm"])
    half = Predictor(checkpoint, dtype=torch.bfloat16, torchscript=True)
    full = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.float32, torchscript=True)
    rng = random.Random(1)
    usable = range(2, len(full.vocab))
    pool = [[rng.choice(usable) for _ in range(rng.randint(1, 60))] for _ in range(64)]
    for a, b in zip(half.predict_ids(pool), full.predict_ids(pool), strict=True):
        for label, p in b.probabilities.items():
            assert abs(a.probabilities[label] - p) <= BFLOAT16_TOLERANCE
        assert sum(a.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


def test_bfloat16_falls_back_to_float32_without_native_support(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(predictor_module, "native_bfloat16", lambda: False)
    with caplog.at_level("INFO", logger="app.inference.predictor"):
        predictor = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.bfloat16)
    assert predictor.pass_dtype == torch.float32
    assert "no native bfloat16" in caplog.text


def test_bfloat16_falls_back_to_float32_where_rows_are_not_kept_apart(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(predictor_module, "native_bfloat16", lambda: True)
    checked: list[torch.dtype] = []

    def independent(self: Predictor) -> bool:
        checked.append(self.pass_dtype)
        return self.pass_dtype != torch.bfloat16

    monkeypatch.setattr(Predictor, "_rows_independent", independent)
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.bfloat16)
    # bfloat16 is tried on each minimum of filler rows, then float32 on the first.
    assert checked == [torch.bfloat16] * len(PADDED_MIN_ROWS) + [torch.float32]
    assert predictor.pass_dtype == torch.float32
    assert "bfloat16 results depend on the batch on this machine; predicting in float32" in (
        caplog.text
    )


def test_bfloat16_falls_down_to_float64_where_no_unpacked_pass_keeps_rows_apart(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(predictor_module, "native_bfloat16", lambda: True)
    monkeypatch.setattr(Predictor, "_rows_independent", lambda self: False)
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.bfloat16)
    assert predictor.pass_dtype == torch.float64
    assert not predictor.padded
    assert "bfloat16 results depend on the batch on this machine; predicting in float32" in (
        caplog.text
    )
    assert "float32 results depend on the batch on this machine; predicting in float64" in (
        caplog.text
    )


def test_unpacked_passes_run_on_few_shapes(checkpoints: dict[str, Path]) -> None:
    # oneDNN caches a kernel per shape (a bounded cache, app.__main__): rows and steps are
    # rounded up to multiples of 4, so everyday batches share a few shapes.
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]))
    shapes: list[tuple[int, ...]] = []
    forward = predictor._forward

    def recording(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(ids.shape))
        return forward(ids, lengths)

    predictor._forward = recording
    for texts, tokens in ((1, 1), (3, 4), (5, 5), (8, 9), (13, 17), (21, 3)):
        predictor.predict_ids([[2] * tokens for _ in range(texts)])
    least = predictor.min_rows  # the machine's minimum (see the next test)
    assert least in PADDED_MIN_ROWS
    rows = [max(least, rounded) for rounded in (4, 4, 8, 8, 16, 24)]
    assert shapes == list(zip(rows, (4, 4, 8, 12, 20, 4), strict=True))


def test_more_filler_rows_where_a_kernel_changes_path_at_a_larger_row_count(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # As on CPUs whose kernel for a few rows differs from the one for many: only the larger
    # minimum keeps rows apart, and float32 is kept on it, with no warning.
    monkeypatch.setattr(
        Predictor, "_rows_independent", lambda self: self.min_rows == PADDED_MIN_ROWS[-1]
    )
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]), dtype=torch.float32)
    assert (predictor.pass_dtype, predictor.min_rows) == (torch.float32, PADDED_MIN_ROWS[-1])
    assert "depend on the batch" not in caplog.text
    shapes: list[tuple[int, ...]] = []
    forward = predictor._forward

    def recording(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(ids.shape))
        return forward(ids, lengths)

    predictor._forward = recording
    predictor.predict_ids([[2, 3]])
    assert shapes == [(PADDED_MIN_ROWS[-1], 4)]


def test_float32_falls_back_to_float64_where_rows_are_not_kept_apart(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Predictor, "_rows_independent", lambda self: False)
    predictor = Predictor(load_checkpoint(checkpoints["lstm"]), torchscript=True)
    assert predictor.dtype == torch.float64
    assert not predictor.padded
    assert "predicting in float64" in caplog.text
    alone = [predictor.predict([text])[0] for text in TEXTS]
    assert predictor.predict(TEXTS) == alone


def test_prediction_is_argmax_of_a_distribution(predictor: Predictor) -> None:
    for prediction in predictor.predict(TEXTS):
        assert list(prediction.probabilities) == list(LABELS)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert prediction.score == max(prediction.probabilities.values())
        assert prediction.probabilities[prediction.label] == prediction.score


def test_all_unknown_words_still_get_a_prediction(predictor: Predictor) -> None:
    encoded = predictor.encode("zyxxy quorbl", max_chars=100, max_tokens=10)
    assert encoded.ids == [predictor.vocab.unk_id] * 2
    (prediction,) = predictor.predict_ids([encoded.ids])
    assert prediction.label in LABELS


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
def test_torchscript_forward_gives_the_eager_answers_exactly(
    checkpoints: dict[str, Path], kind: str
) -> None:
    eager = Predictor(load_checkpoint(checkpoints[kind]))
    traced = Predictor(load_checkpoint(checkpoints[kind]), torchscript=True)
    assert traced.predict(TEXTS) == eager.predict(TEXTS)
    assert [traced.predict([text])[0] for text in TEXTS] == eager.predict(TEXTS)


def test_float32_agrees_closely_with_float64(checkpoints: dict[str, Path]) -> None:
    exact = Predictor(load_checkpoint(checkpoints["gru"]), dtype=torch.float64)
    fast = Predictor(load_checkpoint(checkpoints["gru"]))
    for a, b in zip(exact.predict(TEXTS), fast.predict(TEXTS), strict=True):
        assert a.label == b.label or abs(a.score - b.score) < 1e-5
        for label in LABELS:
            assert a.probabilities[label] == pytest.approx(b.probabilities[label], abs=1e-5)


@pytest.mark.parametrize(
    ("text", "limits", "rejection"),
    [
        pytest.param("a" * 11, {"max_chars": 10, "max_tokens": 5}, "text_too_long", id="chars"),
        pytest.param("a b c d", {"max_chars": 10, "max_tokens": 3}, "too_many_tokens", id="tokens"),
        pytest.param(
            "\u200b\u200d\x00", {"max_chars": 10, "max_tokens": 3}, "no_tokens", id="none"
        ),
    ],
)
def test_encode_rejects_with_a_reason(
    predictor: Predictor, text: str, limits: dict[str, int], rejection: str
) -> None:
    with pytest.raises(TextRejectedError) as raised:
        predictor.encode(text, **limits)
    assert raised.value.rejection.type == rejection
    with pytest.raises(TextRejectedError) as raised_too:
        predictor.encode_ids(text, **limits)  # the prediction path's encoding
    assert raised_too.value.rejection == raised.value.rejection


def test_encode_ids_are_the_encoded_ids(predictor: Predictor) -> None:
    for text in TEXTS:
        limits = {"max_chars": 1000, "max_tokens": 1000}
        assert predictor.encode_ids(text, **limits) == predictor.encode(text, **limits).ids


def test_encode_offsets_slice_the_text(predictor: Predictor) -> None:
    text = "Didn't   LOVE it 😍😍 — #meh… at https://x.y/z"
    encoded = predictor.encode(text, max_chars=100, max_tokens=100)
    assert [text[t.start : t.end] for t in encoded.tokens] == [t.text for t in encoded.tokens]


def test_hidden_states_shapes(predictor: Predictor) -> None:
    config = predictor.model.config
    encoded = predictor.encode("not bad at all :)", max_chars=100, max_tokens=100)
    steps = len(encoded.ids)
    last = predictor.hidden_states(encoded)
    assert [(s.layer, s.direction) for s in last.layers] == [
        (config.num_layers - 1, direction)
        for direction in ("forward", "backward")[: config.num_directions]
    ]
    everything = predictor.hidden_states(encoded, all_layers=True, include_cell=True)
    assert len(everything.layers) == config.num_layers * config.num_directions
    for states in everything.layers:
        assert len(states.hidden) == steps
        assert all(len(row) == config.hidden_size for row in states.hidden)
        if config.cell == "lstm":
            assert states.cell is not None
            assert len(states.cell) == steps
        else:
            assert states.cell is None
    if config.bidirectional:
        assert everything.steps == []
        assert everything.steps_note == BIDIRECTIONAL_STEPS_NOTE
    else:
        assert len(everything.steps) == steps
        assert everything.steps_note is None
        # The last step is the whole text: it is the prediction.
        label, probabilities = everything.steps[-1]
        assert label == everything.prediction.label
        assert probabilities == everything.prediction.probabilities


def test_hidden_states_prediction_agrees_with_predict(predictor: Predictor) -> None:
    encoded = predictor.encode("the service was terrible", max_chars=100, max_tokens=100)
    traced = predictor.hidden_states(encoded).prediction
    predicted = predictor.predict_ids([encoded.ids])[0]
    tolerance = stream_tolerance(predictor.pass_dtype)
    for name in LABELS:
        assert traced.probabilities[name] == pytest.approx(
            predicted.probabilities[name], abs=tolerance
        )


def test_hidden_states_rounding(predictor: Predictor) -> None:
    encoded = predictor.encode("I love this film", max_chars=100, max_tokens=100)
    exact = predictor.hidden_states(encoded, include_cell=True)
    rounded = predictor.hidden_states(encoded, include_cell=True, decimals=2)
    for exact_layer, layer in zip(exact.layers, rounded.layers, strict=True):
        for exact_row, row in zip(exact_layer.hidden, layer.hidden, strict=True):
            for exact_value, value in zip(exact_row, row, strict=True):
                assert value == round(value, 2)
                assert abs(value - exact_value) <= 0.005 + 1e-9
    assert all(p == round(p, 2) for p in rounded.prediction.probabilities.values())
