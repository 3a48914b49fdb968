"""The engine, directly (`app.streaming.engine`): any text, cut anywhere, equals /predict at every
step; and a stream stops at its length cap.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from app.inference.predictor import Predictor
from app.streaming.codec import MAX_STREAM_CHARS, StreamState
from app.streaming.engine import StreamEngine
from app.streaming.errors import StreamError
from app.streaming.service import StreamService
from tests.app.stream.conftest import SECRET, STREAMING_KINDS, TEXTS, TOLERANCE, assert_close
from training.checkpoint import load_checkpoint
from training.tokenizer import tokenize


@pytest.fixture(scope="module")
def engines(checkpoints: dict[str, Path]) -> dict[str, StreamEngine]:
    built = {}
    for kind in STREAMING_KINDS:
        settings_ = Settings(model_dir=checkpoints[kind], stream_secret=SECRET, max_tokens=10_000)
        predictor = Predictor(load_checkpoint(checkpoints[kind]))
        built[kind] = StreamService.build(settings_, predictor, executor=None).engine
    return built


@pytest.mark.parametrize("kind", STREAMING_KINDS)
def test_any_text_cut_anywhere_matches_predict(engines: dict[str, StreamEngine], kind: str) -> None:
    engine = engines[kind]
    predictor = engine.predictor

    @given(text=TEXTS, data=st.data())
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    def check(text: str, data: st.DataObject) -> None:
        points = data.draw(st.lists(st.integers(0, len(text)), max_size=8).map(sorted))
        bounds = [0, *points, len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
        state = None
        tokens = []
        for index, piece in enumerate([*pieces, ""]):
            final = index == len(pieces)
            update = engine.compute(engine.prepare(piece, state, final=final))
            state = update.state
            tokens += update.tokens
            so_far = text[: update.position]
            expected = tokenize(so_far)
            if not expected:
                assert update.prediction is None
                continue
            (one_shot,) = predictor.predict_ids([predictor.vocab.encode(expected)])
            assert update.prediction is not None
            assert update.prediction.label == one_shot.label or (
                abs(update.prediction.score - one_shot.score) <= TOLERANCE
            )
            assert_close(update.prediction.probabilities, one_shot.probabilities)
            assert tokens + update.pending == expected
        assert update.final
        assert update.position == len(text)
        assert tokens == tokenize(text)

    check()


def test_a_stream_stops_at_its_length_cap(engines: dict[str, StreamEngine]) -> None:
    engine = engines["gru"]
    start = engine.compute(engine.prepare("good ", None, final=False))
    near = engine.codec.decode(start.state)
    at_cap = StreamState(near.recurrent, "", MAX_STREAM_CHARS - 3, near.token_count)
    state = engine.codec.encode(at_cap)
    with pytest.raises(StreamError, match="the stream would reach 1000000001 characters") as caught:
        engine.prepare("food", state, final=False)
    assert (caught.value.status, caught.value.type, caught.value.field) == (
        422,
        "stream_too_long",
        "text",
    )
    last = engine.compute(engine.prepare("bad", state, final=True))
    assert last.position == MAX_STREAM_CHARS
    assert engine.codec.decode(last.state).position == MAX_STREAM_CHARS
