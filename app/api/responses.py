"""Response pieces several routes build the same way, from the predictor's own types.

`model_construct` skips validation: these values come from the model, not from a client.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.inference import predictor
from app.schemas import Prediction, TokenInfo
from training.tokenizer import Token


def token_infos(tokens: Sequence[Token], ids: Sequence[int], unk_id: int) -> list[TokenInfo]:
    """Each token with its vocabulary id, character offsets and out-of-vocabulary flag."""
    return [
        TokenInfo.model_construct(
            text=token.text, start=token.start, end=token.end, id=id_, oov=id_ == unk_id
        )
        for token, id_ in zip(tokens, ids, strict=True)
    ]


def prediction_of(result: predictor.Prediction) -> Prediction:
    return Prediction.model_construct(
        label=result.label, score=result.score, probabilities=result.probabilities
    )
