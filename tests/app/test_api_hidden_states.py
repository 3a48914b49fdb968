"""POST /hidden-states through the real app."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from app.api.schemas.hidden_states import DEFAULT_DECIMALS, DEFAULT_TOP_K
from app.inference.predictor import Predictor
from app.inference.results import BIDIRECTIONAL_STEPS_NOTE
from tests.conftest import CHECKPOINT_KINDS, CORPUS, LABELS
from training.checkpoint import save_checkpoint
from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary, tokenize

pytestmark = pytest.mark.anyio

HIDDEN_SIZE = 12  # tests/conftest.py


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
@pytest.mark.parametrize("layers", ["last", "all"])
@pytest.mark.parametrize("include_cell_state", [False, True])
async def test_shapes_per_cell(
    serve: Any, kind: str, layers: str, include_cell_state: bool
) -> None:
    spec = CHECKPOINT_KINDS[kind]
    text = "Didn't LOVE it 😍 — but not bad"
    async with serve(kind) as client:
        response = await client.post(
            "/hidden-states",
            json={
                "text": text,
                "layers": layers,
                "include_cell_state": include_cell_state,
                "full": True,
            },
        )
        predicted = (await client.post("/predict", json={"text": text})).json()
        tolerance = (await client.get("/model")).json()["inference"]["stream_tolerance"]
    assert response.status_code == 200, response.text
    body = response.json()
    tokens = body["tokens"]
    steps = len(tokens)
    assert [text[t["start"] : t["end"]] for t in tokens] == [t["text"] for t in tokens]
    directions = ["forward", "backward"] if spec["bidirectional"] else ["forward"]
    wanted_layers = range(spec["num_layers"]) if layers == "all" else [spec["num_layers"] - 1]
    assert [(s["layer"], s["direction"]) for s in body["layers"]] == [
        (layer, direction) for layer in wanted_layers for direction in directions
    ]
    for states in body["layers"]:
        assert len(states["hidden"]) == steps
        assert {len(row) for row in states["hidden"]} == {HIDDEN_SIZE}
        if include_cell_state and spec["cell"] == "lstm":
            assert len(states["cell"]) == steps
            assert {len(row) for row in states["cell"]} == {HIDDEN_SIZE}
        else:
            assert "cell" not in states
    if spec["bidirectional"]:
        assert body["steps"] == []
        assert body["steps_note"] == BIDIRECTIONAL_STEPS_NOTE
    else:
        assert len(body["steps"]) == steps
        assert "steps_note" not in body
        for step in body["steps"]:
            assert list(step["probabilities"]) == list(LABELS)
            assert step["label"] in LABELS
    # The trace's own prediction: /predict's to within the tolerance of /predict's dtype.
    assert list(body["prediction"]["probabilities"]) == list(LABELS)
    for label, probability in predicted["probabilities"].items():
        assert body["prediction"]["probabilities"][label] == pytest.approx(
            probability, abs=tolerance
        )
    assert body["model"] == predicted["model"]


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
@pytest.mark.parametrize("decimals", [None, 0, 3, 8])
async def test_prediction_is_the_last_step(serve: Any, kind: str, decimals: int | None) -> None:
    texts = [
        "I really did not enjoy this film, it dragged on forever.",
        "Didn't LOVE it 😍 — but not bad",
        "great",
        "terrible, awful service :(",
        "zyxxy quorbl flimflam",
    ]
    request = {} if decimals is None else {"decimals": decimals}
    async with serve(kind) as client:
        bodies = [
            (await client.post("/hidden-states", json={"text": text} | request)).json()
            for text in texts
        ]
    for body in bodies:
        prediction = body["prediction"]
        if CHECKPOINT_KINDS[kind]["bidirectional"]:
            assert body["steps"] == []  # nothing to agree with: the final state alone
            assert prediction["score"] == max(prediction["probabilities"].values())
            continue
        last = body["steps"][-1]
        # One pass per answer: the prediction is its trace's last step, to the last digit.
        assert prediction["probabilities"] == last["probabilities"]
        assert prediction["label"] == last["label"]
        assert prediction["score"] == last["probabilities"][last["label"]]


async def test_prediction_does_not_come_from_the_predict_pass(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where /predict's pass runs in another dtype (bfloat16) it differs from the trace; made
    # to differ here on any CPU, the answer must still be the trace's alone.
    text = "I really did not enjoy this film, it dragged on forever."
    async with serve("lstm") as client:
        original = Predictor._probabilities

        def shifted(self: Predictor, batch: Any) -> list[list[float]]:
            return [[p * 0.5 for p in row] for row in original(self, batch)]

        monkeypatch.setattr(Predictor, "_probabilities", shifted)
        body = (await client.post("/hidden-states", json={"text": text})).json()
    assert body["prediction"]["probabilities"] == body["steps"][-1]["probabilities"]
    assert body["prediction"]["score"] == max(body["steps"][-1]["probabilities"].values())


async def test_tokens_have_ids_and_oov_flags(client: Any) -> None:
    response = await client.post("/hidden-states", json={"text": "I love zyxxy"})
    tokens = response.json()["tokens"]
    assert [(t["text"], t["start"], t["end"], t["oov"]) for t in tokens] == [
        ("I", 0, 1, False),
        ("love", 2, 6, False),
        ("zyxxy", 7, 12, True),
    ]
    assert tokens[2]["id"] == 1
    assert tokens[0]["id"] > 1


@pytest.mark.parametrize(
    "text",
    [
        "e\u0301 café\u200b naïve 👩🏽‍💻 עברית 😀",
        "\ufeff\u202edon't\u202c stop",
        "tab\tnewline\ncr\rend",
    ],
)
async def test_offsets_round_trip_on_unicode(client: Any, text: str) -> None:
    response = await client.post("/hidden-states", json={"text": text})
    assert response.status_code == 200
    tokens = response.json()["tokens"]
    assert tokens
    for token in tokens:
        assert text[token["start"] : token["end"]] == token["text"]


async def test_decimals_round_every_number(client: Any) -> None:
    response = await client.post(
        "/hidden-states",
        json={"text": "not bad", "layers": "all", "include_cell_state": True, "decimals": 3},
    )
    body = response.json()
    numbers = [
        v for s in body["layers"] for rows in (s["hidden"], s["cell"]) for r in rows for v in r
    ]
    numbers += [v for step in body["steps"] for v in step["probabilities"].values()]
    numbers += list(body["prediction"]["probabilities"].values())
    assert numbers
    assert all(round(v, 3) == v for v in numbers)


async def test_token_limit_is_its_own(serve: Any) -> None:
    async with serve("gru", max_hidden_state_tokens=3, max_tokens=100) as client:
        ok = await client.post("/hidden-states", json={"text": "one two three"})
        too_long = await client.post("/hidden-states", json={"text": "one two three four"})
        predict = await client.post("/predict", json={"text": "one two three four"})
    assert ok.status_code == 200
    assert too_long.status_code == 422
    assert too_long.json()["error"]["details"] == [
        {
            "loc": ["body", "text"],
            "msg": "text has 4 tokens; the limit is 3",
            "type": "too_many_tokens",
        }
    ]
    assert predict.status_code == 200


# --- right-sized by default: the most active units, rounded; `full` for everything -------------

WIDE = 40  # hidden units: more than the default top_k


@pytest.fixture(scope="module")
def wide_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM checkpoint with more hidden units than the default selection shows."""
    counts = Counter(token.norm for text in CORPUS for token in tokenize(text))
    vocab = Vocabulary.build(dict(counts))
    config = ModelConfig(
        vocab_size=len(vocab),
        num_labels=len(LABELS),
        embedding_dim=8,
        hidden_size=WIDE,
        num_layers=2,
        cell="lstm",
        dropout=0.0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SentimentRNN(config).eval()
    card = {"name": "tiny-wide", "data": {"source": "tests", "sha256": "0" * 64}, "seed": 0}
    directory = tmp_path_factory.mktemp("wide")
    save_checkpoint(directory, model=model, labels=LABELS, vocab=vocab, card=card)
    return directory


def numbers(body: dict[str, Any]) -> list[float]:
    """Every state and probability in a /hidden-states answer."""
    values = [
        v
        for layer in body["layers"]
        for name in ("hidden", "cell")
        for row in layer.get(name, [])
        for v in row
    ]
    values += [
        v
        for layer in body["layers"]
        for rows in layer.get("gates", {}).values()
        for row in rows
        for v in row
    ]
    values += [v for step in body["steps"] for v in step["probabilities"].values()]
    return values + list(body["prediction"]["probabilities"].values())


async def test_default_answer_is_the_most_active_units_rounded(
    serve: Any, wide_checkpoint: Path
) -> None:
    text = "I really did not enjoy this film, it dragged on forever."
    request = {"text": text, "layers": "all", "include_gates": True, "include_cell_state": True}
    async with serve(model_dir=wide_checkpoint) as client:
        default = await client.post("/hidden-states", json=request)
        full = await client.post("/hidden-states", json=request | {"full": True})
    assert default.status_code == full.status_code == 200
    small, whole = default.json(), full.json()
    assert (small["hidden_size"], small["decimals"]) == (WIDE, DEFAULT_DECIMALS)
    assert whole["hidden_size"] == WIDE
    assert "decimals" not in whole
    assert len(default.content) * 2 < len(full.content)
    for part, every in zip(small["layers"], whole["layers"], strict=True):
        assert "units" not in every
        assert {len(row) for row in every["hidden"]} == {WIDE}
        # The DEFAULT_TOP_K units of largest mean |h|, named, as `top_k` would choose them.
        activity = [sum(abs(row[u]) for row in every["hidden"]) for u in range(WIDE)]
        chosen = sorted(range(WIDE), key=lambda u: -activity[u])[:DEFAULT_TOP_K]
        assert part["units"] == chosen
        for name in ("hidden", "cell"):
            assert part[name] == [
                [round(row[u], DEFAULT_DECIMALS) for u in chosen] for row in every[name]
            ]
        assert part["norm"] == [round(value, DEFAULT_DECIMALS) for value in every["norm"]]
    assert all(round(v, DEFAULT_DECIMALS) == v for v in numbers(small))
    assert any(round(v, DEFAULT_DECIMALS) != v for v in numbers(whole))


@pytest.mark.parametrize(
    ("extra", "units", "decimals"),
    [
        pytest.param({}, DEFAULT_TOP_K, DEFAULT_DECIMALS, id="defaults"),
        pytest.param({"full": True}, WIDE, None, id="full"),
        pytest.param({"full": True, "decimals": 2}, WIDE, 2, id="full-rounded"),
        pytest.param({"full": True, "top_k": 3}, 3, None, id="full-precision-top-3"),
        pytest.param({"full": True, "units": [5, 1]}, 2, None, id="full-precision-units"),
        pytest.param({"top_k": 30}, 30, DEFAULT_DECIMALS, id="top-k"),
        pytest.param({"units": [39, 0]}, 2, DEFAULT_DECIMALS, id="units"),
        pytest.param({"decimals": 6}, DEFAULT_TOP_K, 6, id="decimals"),
        pytest.param({"full": False}, DEFAULT_TOP_K, DEFAULT_DECIMALS, id="not-full"),
    ],
)
async def test_explicit_choices_win_over_the_defaults(
    serve: Any, wide_checkpoint: Path, extra: dict[str, Any], units: int, decimals: int | None
) -> None:
    async with serve(model_dir=wide_checkpoint) as client:
        response = await client.post("/hidden-states", json={"text": "not bad at all"} | extra)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.get("decimals") == decimals
    (layer,) = body["layers"]
    assert {len(row) for row in layer["hidden"]} == {units}
    if "units" in extra:
        assert layer["units"] == extra["units"]
    assert ("units" in layer) == (units < WIDE)
    if decimals is not None:
        assert all(round(v, decimals) == v for v in numbers(body))


async def test_a_model_with_few_units_shows_them_all_in_order(client: Any) -> None:
    body = (await client.post("/hidden-states", json={"text": "not bad"})).json()
    assert body["hidden_size"] == HIDDEN_SIZE <= DEFAULT_TOP_K
    assert body["decimals"] == DEFAULT_DECIMALS
    for layer in body["layers"]:
        assert "units" not in layer  # nothing left out
        assert {len(row) for row in layer["hidden"]} == {HIDDEN_SIZE}


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"full": True, "decimals": 2, "top_k": 3}, id="top-k"),
        pytest.param({"full": True, "decimals": 0, "units": [1]}, id="units"),
    ],
)
async def test_full_that_would_change_nothing_is_422(client: Any, extra: dict[str, Any]) -> None:
    response = await client.post("/hidden-states", json={"text": "not bad"} | extra)
    assert response.status_code == 422
    (detail,) = response.json()["error"]["details"]
    assert detail["type"] == "full_overridden"
    assert "'full'" in detail["msg"]
    assert "'decimals'" in detail["msg"]


async def test_full_must_be_a_boolean(client: Any) -> None:
    response = await client.post("/hidden-states", json={"text": "not bad", "full": "yes"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "bool_type"
