"""The network: shapes, padding invariance and the unrolled trace, for every cell."""

from __future__ import annotations

import pytest
import torch

from training.model import CELL_TYPES, ModelConfig, SentimentRNN, pad_ids

VARIANTS = [
    pytest.param(
        cell, layers, bidirectional, id=f"{cell}-{layers}l{'-bi' if bidirectional else ''}"
    )
    for cell in CELL_TYPES
    for layers, bidirectional in ((1, False), (2, False), (2, True))
]


def make_model(cell: str, layers: int = 1, bidirectional: bool = False) -> SentimentRNN:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=40,
        num_labels=3,
        cell=cell,  # type: ignore[arg-type]
        embedding_dim=12,
        hidden_size=10,
        num_layers=layers,
        bidirectional=bidirectional,
        dropout=0.2,
    )
    return SentimentRNN(config).eval()


@pytest.mark.parametrize(("cell", "layers", "bidirectional"), VARIANTS)
def test_result_does_not_depend_on_batch_mates(cell: str, layers: int, bidirectional: bool) -> None:
    model = make_model(cell, layers, bidirectional)
    texts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [3]]
    with torch.inference_mode():
        batched = model(*pad_ids(texts))
        for row, text in enumerate(texts):
            alone = model(*pad_ids([text]))
            torch.testing.assert_close(batched[row], alone[0], rtol=0, atol=1e-6)
    assert batched.shape == (3, 3)


@pytest.mark.parametrize(("cell", "layers", "bidirectional"), VARIANTS)
def test_trace_matches_packed_forward(cell: str, layers: int, bidirectional: bool) -> None:
    model = make_model(cell, layers, bidirectional)
    ids = torch.tensor([4, 9, 2, 30, 7, 7])
    with torch.inference_mode():
        logits = model(ids.unsqueeze(0), torch.tensor([6]))[0]
        trace = model.forward_steps(ids)
    torch.testing.assert_close(trace.logits, logits, rtol=0, atol=1e-6)
    assert len(trace.layers) == layers
    for layer in trace.layers:
        assert len(layer) == (2 if bidirectional else 1)
        for direction in layer:
            assert direction.hidden.shape == (6, 10)
            assert (direction.cell is not None) == (cell == "lstm")
            expected_gates = {
                "rnn": set(),
                "lstm": {"input", "forget", "candidate", "output"},
                "gru": {"reset", "update"},
            }[cell]
            assert set(direction.gates) == expected_gates
            for name, values in direction.gates.items():
                if name != "candidate":
                    assert float(values.min()) >= 0.0
                    assert float(values.max()) <= 1.0
    if bidirectional:
        assert trace.step_logits is None
    else:
        assert trace.step_logits is not None
        assert trace.step_logits.shape == (6, 3)
        # The last step's prediction is the whole text's prediction.
        torch.testing.assert_close(trace.step_logits[-1], logits, rtol=0, atol=1e-6)
        # And step t is the prediction for the text cut after token t.
        with torch.inference_mode():
            prefix = model(ids[:3].unsqueeze(0), torch.tensor([3]))[0]
        torch.testing.assert_close(trace.step_logits[2], prefix, rtol=0, atol=1e-6)


def test_plain_rnn_is_the_tanh_recurrence() -> None:
    model = make_model("rnn")
    ids = torch.tensor([3, 4, 5])
    rnn = model.rnn
    h = torch.zeros(10)
    with torch.inference_mode():
        for x in model.embedding(ids):
            h = torch.tanh(
                rnn.weight_hh_l0 @ h + rnn.bias_hh_l0 + rnn.weight_ih_l0 @ x + rnn.bias_ih_l0
            )
        trace = model.forward_steps(ids)
    torch.testing.assert_close(trace.layers[0][0].hidden[-1], h, rtol=0, atol=1e-6)


def test_forward_steps_refuses_training_mode() -> None:
    model = make_model("gru").train()
    with pytest.raises(RuntimeError, match="eval"):
        model.forward_steps(torch.tensor([1, 2]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cell": "transformer"}, "unknown cell"),
        ({"hidden_size": 0}, "hidden_size must be positive"),
        ({"num_labels": 1}, "at least 2"),
        ({"dropout": 1.0}, "dropout"),
        ({"pad_id": 99}, "pad_id"),
    ],
)
def test_config_validation(changes: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"vocab_size": 10, "num_labels": 3}
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **changes})  # type: ignore[arg-type]


def test_config_json_round_trip_and_unknown_keys() -> None:
    config = ModelConfig(vocab_size=10, num_labels=3, cell="gru", bidirectional=True)
    assert ModelConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_json({**config.to_json(), "heads": 4})


def test_pad_ids() -> None:
    ids, lengths = pad_ids([[5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[5, 6], [7, 0]]
    assert lengths.tolist() == [2, 1]
    ids, lengths = pad_ids([[5, 6, 7], [7]], pad_id=9, multiple=4)  # width rounded up
    assert ids.tolist() == [[5, 6, 7, 9], [7, 9, 9, 9]]
    assert lengths.tolist() == [3, 1]
    assert pad_ids([[1] * 8], multiple=4)[0].shape == (1, 8)
    with pytest.raises(ValueError, match="at least one token"):
        pad_ids([[1], []])
