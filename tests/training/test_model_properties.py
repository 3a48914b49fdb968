"""Model properties over random id sequences, for every cell: batch-mates and padding change
nothing, and the label probabilities (softmax of the logits) sum to 1."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.model import CELL_TYPES, ModelConfig, SentimentRNN, pad_ids

VOCAB = 40
SEQUENCES = st.lists(
    st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=24), min_size=1, max_size=6
)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def make_model(cell: str, bidirectional: bool) -> SentimentRNN:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = ModelConfig(
            vocab_size=VOCAB,
            num_labels=3,
            cell=cell,  # type: ignore[arg-type]
            embedding_dim=8,
            hidden_size=6,
            num_layers=2,
            bidirectional=bidirectional,
            dropout=0.0,
        )
        # float64: the comparison is about padding, not rounding order in float32.
        return SentimentRNN(config).double().eval()


MODELS = {(cell, bi): make_model(cell, bi) for cell in CELL_TYPES for bi in (False, True)}
VARIANTS = [pytest.param(cell, bi, id=f"{cell}{'-bi' if bi else ''}") for cell, bi in MODELS]


def padded_twice(
    sequences: list[list[int]], extra: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids (B, T), lengths (B,), and the same ids with `extra` more pad columns."""
    ids, lengths = pad_ids(sequences)
    more = torch.cat([ids, torch.zeros(len(sequences), extra, dtype=ids.dtype)], 1)
    return ids, lengths, more


@pytest.mark.parametrize(("cell", "bidirectional"), VARIANTS)
@PROPERTY_SETTINGS
@given(sequences=SEQUENCES, extra_padding=st.integers(0, 5))
def test_batch_and_padding_invariance(
    cell: str, bidirectional: bool, sequences: list[list[int]], extra_padding: int
) -> None:
    model = MODELS[(cell, bidirectional)]
    ids, lengths, padded = padded_twice(sequences, extra_padding)
    with torch.inference_mode():
        batched = model(ids, lengths)
        more_padding = model(padded, lengths)
        for row, sequence in enumerate(sequences):
            alone = model(*pad_ids([sequence]))[0]
            torch.testing.assert_close(batched[row], alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(more_padding, batched, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELL_TYPES)
@PROPERTY_SETTINGS
@given(sequences=SEQUENCES, extra_padding=st.integers(0, 5))
def test_unpacked_forward_computes_the_packed_one(
    cell: str, sequences: list[list[int]], extra_padding: int
) -> None:
    model = MODELS[(cell, False)]
    ids, lengths, padded = padded_twice(sequences, extra_padding)
    with torch.inference_mode():
        packed = model(ids, lengths)
        unpacked = model.forward_padded(padded, lengths)
    torch.testing.assert_close(unpacked, packed, rtol=0, atol=1e-10)


def test_unpacked_forward_refuses_a_bidirectional_model() -> None:
    ids, lengths = pad_ids([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match="bidirectional"):
        MODELS[("lstm", True)].forward_padded(ids, lengths)


@pytest.mark.parametrize(("cell", "bidirectional"), VARIANTS)
@PROPERTY_SETTINGS
@given(sequences=SEQUENCES)
def test_probabilities_sum_to_one(
    cell: str, bidirectional: bool, sequences: list[list[int]]
) -> None:
    with torch.inference_mode():
        logits = MODELS[(cell, bidirectional)](*pad_ids(sequences))  # (B, labels)
    probabilities = torch.softmax(logits, dim=-1)
    assert logits.shape == (len(sequences), 3)
    assert bool(torch.isfinite(logits).all())
    assert bool(((probabilities >= 0) & (probabilities <= 1)).all())
    torch.testing.assert_close(
        probabilities.sum(-1), torch.ones(len(sequences), dtype=torch.float64), rtol=0, atol=1e-12
    )
