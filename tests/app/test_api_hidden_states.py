"""POST /hidden-states through the real app."""

from __future__ import annotations

from typing import Any

import pytest

from app.inference.predictor import Predictor
from app.inference.results import BIDIRECTIONAL_STEPS_NOTE
from tests.conftest import CHECKPOINT_KINDS, LABELS

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
            json={"text": text, "layers": layers, "include_cell_state": include_cell_state},
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
