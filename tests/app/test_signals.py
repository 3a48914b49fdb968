"""The signals every /predict prediction carries (token count, share of unknown words,
truncation), its warnings and `confident`, in process, through the fast path and the route."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.schemas import ErrorResponse
from app.api.schemas.predict import PredictResponse
from app.core.config import Settings
from app.inference.predictor import Predictor, trained_tokens
from app.inference.results import (
    LOW_CONFIDENCE,
    MOSTLY_UNKNOWN_WORDS,
    TRUNCATED,
    VERY_SHORT,
    WARNING_CODES,
    PredictionResult,
    warnings_of,
)
from tests.app.conftest import serve_app
from tests.conftest import build_checkpoint
from training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.anyio

# The tiny checkpoints' training is said to have cut texts to this many tokens.
TRAINED_TOKENS = 6
UNKNOWN = "zyxxy quorbl flimflam love"  # 4 tokens, the first 3 unknown
SHORT = "great"  # 1 token
LONG = "I love this film , it is great and wonderful"  # 10 tokens, over TRAINED_TOKENS
PLAIN = "The service was terrible"  # 4 known tokens


def signals_checkpoint(directory: Path) -> Path:
    """The tiny LSTM, its card naming the token limit its training cut texts to."""
    build_checkpoint(directory, "lstm")
    loaded = load_checkpoint(directory)
    card = {**loaded.card, "training": {"config": {"max_tokens": TRAINED_TOKENS}}}
    target = directory.parent / f"{directory.name}-card"
    save_checkpoint(target, model=loaded.model, labels=loaded.labels, vocab=loaded.vocab, card=card)
    return target


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return signals_checkpoint(tmp_path_factory.mktemp("signals") / "lstm")


@pytest.fixture(params=[True, False], ids=["fast-path", "route"])
def start(request: pytest.FixtureRequest, model_dir: Path) -> Callable[..., Any]:
    """`async with start(**settings) as client:` the app on both /predict paths."""

    def make(**overrides: Any) -> Any:
        values: dict[str, Any] = {
            "model_dir": model_dir,
            "gc_freeze": False,
            "fast_path": request.param,
        }
        values.update(overrides)
        return serve_app(Settings(**values))

    return make


def result(**values: Any) -> PredictionResult:
    fields: dict[str, Any] = {
        "label": "positive",
        "score": 0.6,
        "probabilities": {"negative": 0.1, "neutral": 0.3, "positive": 0.6},
        "token_count": 5,
        "oov_ratio": 0.0,
        "truncated": False,
    }
    fields.update(values)
    return PredictionResult(**fields)


# --- the rules ---------------------------------------------------------------------------------


def test_no_warning_for_an_ordinary_text() -> None:
    assert warnings_of(result(), None) == []
    assert warnings_of(result(), 0.6) == []  # at the threshold: confident


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"oov_ratio": 0.5}, []),  # half unknown: not "mostly"
        ({"oov_ratio": 0.51}, [MOSTLY_UNKNOWN_WORDS]),
        ({"token_count": 3}, []),
        ({"token_count": 2}, [VERY_SHORT]),
        ({"token_count": 1, "oov_ratio": 1.0}, [MOSTLY_UNKNOWN_WORDS, VERY_SHORT]),
        ({"truncated": True}, [TRUNCATED]),
    ],
)
def test_each_rule_at_its_boundary(values: dict[str, Any], expected: list[str]) -> None:
    assert warnings_of(result(**values), None) == expected


def test_low_confidence_only_under_a_threshold() -> None:
    low = result(score=0.4, label="neutral")
    assert warnings_of(low, None) == []
    assert warnings_of(low, 0.4) == []
    assert warnings_of(low, 0.41) == [LOW_CONFIDENCE]
    every = result(score=0.1, token_count=2, oov_ratio=0.9, truncated=True)
    assert warnings_of(every, 0.5) == list(WARNING_CODES)  # all of them, in the stable order


def test_the_schema_lists_every_code() -> None:
    schema = PredictResponse.model_json_schema()
    item = schema["properties"]["warnings"]["items"]
    codes = item.get("enum") or schema["$defs"][item["$ref"].rsplit("/", 1)[1]]["enum"]
    assert sorted(codes) == sorted(WARNING_CODES)


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"training": {"config": {"max_tokens": 128}}}, 128),
        ({}, None),
        ({"training": {"config": {}}}, None),
        ({"training": {"config": {"max_tokens": "128"}}}, None),
        ({"training": {"config": {"max_tokens": True}}}, None),
        ({"training": []}, None),
    ],
)
def test_trained_tokens_read_from_the_card(card: dict[str, Any], expected: int | None) -> None:
    assert trained_tokens(card) == expected


def test_predictor_computes_the_signals_from_the_ids(model_dir: Path) -> None:
    predictor = Predictor(load_checkpoint(model_dir))
    assert predictor.trained_tokens == TRAINED_TOKENS
    unk = predictor.vocab.unk_id
    known = predictor.vocab.encode_norms(["love", "great", "film"])
    assert unk not in known
    batch = [[unk, unk, unk, known[0]], known[:1], known * 3, known * 2]
    results = predictor.predict_ids(batch)
    assert [r.token_count for r in results] == [4, 1, 9, 6]
    assert [r.oov_ratio for r in results] == [0.75, 0.0, 0.0, 0.0]
    assert [r.truncated for r in results] == [False, False, True, False]  # 6 is not over 6
    # The signals ride along; the prediction is the same as without them.
    alone = predictor.predict_ids([batch[2]])[0]
    assert (alone.label, alone.score, alone.probabilities) == (
        results[2].label,
        results[2].score,
        results[2].probabilities,
    )


# --- through the API ---------------------------------------------------------------------------


async def predict(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_signals_of_crafted_texts(start: Callable[..., Any]) -> None:
    async with start() as client:
        unknown = await predict(client, text=UNKNOWN)
        short = await predict(client, text=SHORT)
        long = await predict(client, text=LONG)
        plain = await predict(client, text=PLAIN)
    assert (unknown["token_count"], unknown["oov_ratio"], unknown["truncated"]) == (4, 0.75, False)
    assert unknown["warnings"] == ["mostly_unknown_words"]
    assert (short["token_count"], short["oov_ratio"], short["truncated"]) == (1, 0.0, False)
    assert short["warnings"] == ["very_short"]
    assert (long["token_count"], long["oov_ratio"], long["truncated"]) == (10, 0.0, True)
    assert long["warnings"] == ["truncated"]
    assert (plain["token_count"], plain["oov_ratio"], plain["warnings"]) == (4, 0.0, [])
    for body in (unknown, short, long, plain):
        assert body["confident"] is None  # no threshold anywhere
        PredictResponse.model_validate(body)


async def test_batch_keeps_order_and_each_texts_signals(start: Callable[..., Any]) -> None:
    texts = [UNKNOWN, SHORT, LONG, PLAIN]
    async with start() as client:
        singles = [await predict(client, text=text) for text in texts]
        forward = (await predict(client, texts=texts))["predictions"]
        backward = (await predict(client, texts=texts[::-1]))["predictions"]
    expected = [{k: v for k, v in single.items() if k != "model"} for single in singles]
    assert forward == expected
    assert backward == expected[::-1]
    assert [p["token_count"] for p in forward] == [4, 1, 10, 4]


async def test_min_confidence_per_request(start: Callable[..., Any]) -> None:
    async with start() as client:
        score = (await predict(client, text=PLAIN))["score"]
        at = await predict(client, text=PLAIN, min_confidence=score)
        above = await predict(client, text=PLAIN, min_confidence=math.nextafter(score, 1.0))
        zero = await predict(client, text=PLAIN, min_confidence=0)
        one = await predict(client, text=PLAIN, min_confidence=1.0)
        none = await predict(client, text=PLAIN, min_confidence=None)
        batch = await predict(client, texts=[PLAIN, SHORT], min_confidence=1.0)
    assert (at["confident"], at["warnings"]) == (True, [])
    assert (above["confident"], above["warnings"]) == (False, ["low_confidence"])
    assert zero["confident"] is True
    assert one["confident"] is False
    assert none["confident"] is None
    assert [p["confident"] for p in batch["predictions"]] == [False, False]
    assert [p["warnings"] for p in batch["predictions"]] == [
        ["low_confidence"],
        ["very_short", "low_confidence"],
    ]


async def test_min_confidence_by_setting(start: Callable[..., Any]) -> None:
    async with start(min_confidence=0.99) as client:
        by_setting = await predict(client, text=PLAIN)
        overridden = await predict(client, text=PLAIN, min_confidence=0.0)
        batch = await predict(client, texts=[PLAIN, LONG])
    assert (by_setting["confident"], by_setting["warnings"]) == (False, ["low_confidence"])
    assert (overridden["confident"], overridden["warnings"]) == (True, [])
    assert [p["confident"] for p in batch["predictions"]] == [False, False]


@pytest.mark.parametrize("value", [-0.01, 1.01, 2, -1, 1e308])
async def test_min_confidence_out_of_range(start: Callable[..., Any], value: float) -> None:
    async with start() as client:
        response = await client.post("/predict", json={"text": PLAIN, "min_confidence": value})
    detail = assert_validation_error(response)
    assert detail["loc"] == ["body", "min_confidence"]
    assert detail["type"] in {"greater_than_equal", "less_than_equal"}


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b'{"text": "ok", "min_confidence": NaN}', {"finite_number", "json_invalid"}),
        (b'{"text": "ok", "min_confidence": Infinity}', {"finite_number", "json_invalid"}),
        (b'{"text": "ok", "min_confidence": -Infinity}', {"finite_number", "json_invalid"}),
        (b'{"text": "ok", "min_confidence": "NaN"}', {"float_type"}),
        (b'{"text": "ok", "min_confidence": "0.5"}', {"float_type"}),
        (b'{"text": "ok", "min_confidence": true}', {"float_type"}),
        (b'{"text": "ok", "min_confidence": [0.5]}', {"float_type"}),
        (b'{"text": "ok", "min_confidence": {"value": 0.5}}', {"float_type"}),
    ],
)
async def test_hostile_min_confidence(
    start: Callable[..., Any], raw: bytes, kind: set[str]
) -> None:
    async with start() as client:
        response = await client.post(
            "/predict", content=raw, headers={"content-type": "application/json"}
        )
    detail = assert_validation_error(response)
    assert detail["type"] in kind
    assert "min_confidence" in detail["loc"] or detail["type"] == "json_invalid"


def assert_validation_error(response: httpx.Response) -> dict[str, Any]:
    """A 422 in the API's one error shape; its first detail."""
    assert response.status_code == 422, response.text
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["error"]["code"] == "validation_error"
    detail: dict[str, Any] = body["error"]["details"][0]
    return detail


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf])
def test_setting_out_of_range_is_refused(value: float, model_dir: Path) -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        Settings(model_dir=model_dir, min_confidence=value)


def test_setting_from_the_environment(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_MIN_CONFIDENCE", "0.7")
    assert Settings(model_dir=model_dir).min_confidence == 0.7
    monkeypatch.setenv("APP_MIN_CONFIDENCE", "nan")
    with pytest.raises(ValueError, match="min_confidence"):
        Settings(model_dir=model_dir)
