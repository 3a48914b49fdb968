"""Examples for the OpenAPI document: request bodies (named, for `Body(openapi_examples=...)`)
and response bodies (for the models' `json_schema_extra`).

Kept apart from the models so a model reads as its fields; tests validate every request
example against its model.
"""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------------------------------------
# Pieces several examples share

PREDICTION: dict[str, Any] = {
    "label": "positive",
    "score": 0.9123,
    "probabilities": {"negative": 0.0311, "neutral": 0.0566, "positive": 0.9123},
}
MODEL: dict[str, Any] = {"name": "default", "version": "3f2a9c1b7d4e"}
STATE = "AQAd7pNc4M0ZS2dWAAAAAAA..."


def values(examples: dict[str, dict[str, Any]]) -> list[Any]:
    """The bodies of named examples, as a model's `examples` lists them."""
    return [example["value"] for example in examples.values()]


# ---------------------------------------------------------------------------------------------
# Requests

PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "single": {
        "summary": "One text",
        "value": {"text": "The food was great but the service was painfully slow."},
    },
    "batch": {
        "summary": "A batch of texts",
        "value": {
            "texts": [
                "Absolutely loved it, would buy again!",
                "It arrived on Tuesday.",
                "Worst purchase I have ever made :(",
            ]
        },
    },
    "threshold": {
        "summary": "One text, confident only at 0.8 or above",
        "value": {"text": "It arrived on Tuesday.", "min_confidence": 0.8},
    },
}

HIDDEN_STATES_EXAMPLES: dict[str, dict[str, Any]] = {
    "last_layer": {
        "summary": "Last layer, rounded",
        "value": {"text": "not bad at all", "decimals": 4},
    },
    "everything": {
        "summary": "All layers with LSTM cell states",
        "value": {
            "text": "I didn't like the ending.",
            "layers": "all",
            "include_cell_state": True,
            "decimals": 3,
        },
    },
    "gates_top_k": {
        "summary": "Gates of the 8 most active units, rounded",
        "value": {
            "text": "The plot was thin, the acting superb.",
            "include_gates": True,
            "top_k": 8,
            "decimals": 3,
        },
    },
    "units": {
        "summary": "Chosen hidden units only",
        "value": {"text": "not bad at all", "units": [0, 5, 17], "decimals": 4},
    },
    "full": {
        "summary": "Every unit at full precision",
        "value": {"text": "not bad at all", "full": True},
    },
}

TOKENIZE_EXAMPLES: dict[str, dict[str, Any]] = {
    "review": {
        "summary": "A review with a negation and an elongated word",
        "value": {"text": "The battery isn't great, but the screen is soooo good :)"},
    },
    "tweet": {
        "summary": "A tweet with a mention, a hashtag and a link",
        "value": {"text": "@shop loved it!!! #happy https://example.com/p/1"},
    },
}

EXPLAIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "predicted": {
        "summary": "Why the predicted label (both methods)",
        "value": {"text": "The food was great but the service was painfully slow.", "decimals": 4},
    },
    "requested": {
        "summary": "Toward a chosen label, integrated gradients only",
        "value": {
            "text": "Not bad at all.",
            "label": "positive",
            "methods": ["integrated_gradients"],
            "steps": 64,
            "baseline": "unk",
        },
    },
    "occlusion_drop": {
        "summary": "Occlusion by dropping each token",
        "value": {"text": "I wanted to love it.", "methods": ["occlusion"], "occlusion": "drop"},
    },
}

STREAM_EXAMPLES: dict[str, dict[str, Any]] = {
    "start": {
        "summary": "Start a stream (the text may end mid-word)",
        "value": {"text": "The food was gre", "state": None},
    },
    "continue": {
        "summary": "Continue it with the state from the previous response",
        "value": {"text": "at but the serv", "state": STATE},
    },
    "finish": {
        "summary": "End it: the unfinished word is read too",
        "value": {"text": "ice was slow.", "state": STATE, "final": True},
    },
}

# ---------------------------------------------------------------------------------------------
# Responses

# A /predict prediction: the prediction, its text's signals and, with a min_confidence, whether
# its score reaches it.
TEXT_PREDICTION: dict[str, Any] = {
    **PREDICTION,
    "oov_ratio": 0.0,
    "token_count": 11,
    "truncated": False,
    "warnings": [],
    "confident": True,
}

PREDICT_RESPONSE: dict[str, Any] = {**TEXT_PREDICTION, "model": MODEL}

BATCH_PREDICT_RESPONSE: dict[str, Any] = {"predictions": [TEXT_PREDICTION], "model": MODEL}

TOKENIZE_RESPONSE: dict[str, Any] = {
    "tokens": [
        {"text": "Sooo", "start": 0, "end": 4, "id": 97, "oov": False, "norm": "sooo"},
        {"text": "zyxxy", "start": 5, "end": 10, "id": 1, "oov": True, "norm": "zyxxy"},
    ],
    "count": 2,
    "oov_count": 1,
    "model": MODEL,
}

EXPLAIN_RESPONSE: dict[str, Any] = {
    "tokens": [
        {"text": "not", "start": 0, "end": 3, "id": 19, "oov": False},
        {"text": "bad", "start": 4, "end": 7, "id": 211, "oov": False},
    ],
    "label": "positive",
    "prediction": PREDICTION,
    "integrated_gradients": {
        "attributions": [0.8123, 0.4411],
        "baseline": "pad",
        "steps": 50,
        "quadrature": "gauss_legendre",
        "logit": 1.2034,
        "baseline_logit": -0.05,
        "delta": 0.0,
    },
    "occlusion": {
        "replacement": "unk",
        "attributions": [0.9312, 0.2208],
        "probability_changes": [0.4211, 0.0813],
    },
    "model": MODEL,
}

_STEP: dict[str, Any] = {"label": "positive", "probabilities": PREDICTION["probabilities"]}

STREAM_RESPONSE: dict[str, Any] = {
    "state": STATE,
    "position": 31,
    "token_count": 6,
    "tokens": [
        {"text": "great", "start": 13, "end": 18, "id": 84, "oov": False},
        {"text": "but", "start": 19, "end": 22, "id": 31, "oov": False},
        {"text": "the", "start": 23, "end": 26, "id": 2, "oov": False},
    ],
    "steps": [_STEP] * 3,
    "pending": [{"text": "serv", "start": 27, "end": 31, "id": 1, "oov": True}],
    "pending_steps": [_STEP],
    "prediction": PREDICTION,
    "final": False,
    "model": MODEL,
}
