"""`SentimentRNN.step_from`: reading a text in pieces computes what one pass over it does."""

from __future__ import annotations

import itertools

import pytest
import torch

from training.model import CELL_TYPES, ModelConfig, RecurrentState, SentimentRNN

VARIANTS = [
    pytest.param(cell, layers, id=f"{cell}-{layers}l") for cell in CELL_TYPES for layers in (1, 2)
]
IDS = torch.tensor([4, 9, 2, 30, 7, 7, 1, 18, 25, 3, 3, 11])
CUTS = [
    pytest.param((), id="one-piece"),
    pytest.param((1,), id="first-token-alone"),
    pytest.param((5, 6, 11), id="uneven"),
    pytest.param(tuple(range(1, 12)), id="token-by-token"),
    pytest.param((0, 0, 4, 4, 12), id="empty-pieces"),
]


def make_model(
    cell: str, layers: int = 1, *, bidirectional: bool = False, dtype: torch.dtype = torch.float64
) -> SentimentRNN:
    config = ModelConfig(
        vocab_size=40,
        num_labels=3,
        cell=cell,  # type: ignore[arg-type]
        embedding_dim=12,
        hidden_size=10,
        num_layers=layers,
        bidirectional=bidirectional,
        dropout=0.2,  # off in eval mode, also between layers
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SentimentRNN(config).to(dtype).eval()


def read_in_pieces(
    model: SentimentRNN, ids: torch.Tensor, cuts: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, RecurrentState]:
    """Steps, final logits and state after reading `ids` cut at `cuts`, piece by piece."""
    bounds = [0, *cuts, len(ids)]
    state = model.initial_state()
    steps: list[torch.Tensor] = []
    logits = model.head(state.hidden[-1])
    for start, end in itertools.pairwise(bounds):
        result = model.step_from(ids[start:end], state)
        assert result.step_logits.shape == (end - start, 3)
        steps.append(result.step_logits)
        state, logits = result.state, result.logits
    return torch.cat(steps), logits, state


@pytest.mark.parametrize("cuts", CUTS)
@pytest.mark.parametrize(("cell", "layers"), VARIANTS)
def test_pieces_equal_one_pass(cell: str, layers: int, cuts: tuple[int, ...]) -> None:
    model = make_model(cell, layers)
    with torch.inference_mode():
        expected = model(IDS.unsqueeze(0), torch.tensor([len(IDS)]))[0]
        trace = model.forward_steps(IDS)
        steps, logits, state = read_in_pieces(model, IDS, cuts)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-12)
    assert trace.step_logits is not None
    torch.testing.assert_close(steps, trace.step_logits, rtol=0, atol=1e-12)
    # The state handed on is every layer's last hidden (and cell) state of the one pass.
    for layer, (forward,) in enumerate(trace.layers):
        torch.testing.assert_close(state.hidden[layer], forward.hidden[-1], rtol=0, atol=1e-12)
        if cell == "lstm":
            assert state.cell is not None
            assert forward.cell is not None
            torch.testing.assert_close(state.cell[layer], forward.cell[-1], rtol=0, atol=1e-12)
        else:
            assert state.cell is None


@pytest.mark.parametrize("cell", CELL_TYPES)
def test_float32_pieces_agree_closely(cell: str) -> None:
    model = make_model(cell, 2, dtype=torch.float32)
    with torch.inference_mode():
        expected = model(IDS.unsqueeze(0), torch.tensor([len(IDS)]))[0]
        _, logits, _ = read_in_pieces(model, IDS, tuple(range(1, 12)))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_initial_state_is_zeros_in_the_model_dtype() -> None:
    lstm = make_model("lstm", 2).initial_state()
    assert lstm.hidden.shape == (2, 10)
    assert lstm.hidden.dtype == torch.float64
    assert lstm.cell is not None
    assert lstm.cell.shape == (2, 10)
    assert not lstm.hidden.any()
    assert not lstm.cell.any()
    assert make_model("gru").initial_state().cell is None


def test_no_tokens_leaves_the_state_and_reads_the_head() -> None:
    model = make_model("gru")
    with torch.inference_mode():
        start = model.step_from(torch.tensor([], dtype=torch.long))
        assert start.step_logits.shape == (0, 3)
        torch.testing.assert_close(start.logits, model.head.bias, rtol=0, atol=0)
        after = model.step_from(IDS[:3])
        again = model.step_from(IDS[:0], after.state)
    assert again.state is after.state
    # A row of a matrix product and a vector product may differ in the last bit.
    torch.testing.assert_close(again.logits, after.logits, rtol=0, atol=1e-15)


def test_bidirectional_and_training_mode_are_refused() -> None:
    with pytest.raises(ValueError, match="bidirectional model cannot read a text in pieces"):
        make_model("lstm", bidirectional=True).step_from(IDS)
    with pytest.raises(RuntimeError, match=r"call model.eval\(\) first"):
        make_model("rnn").train().step_from(IDS)
