"""TF-IDF + logistic regression on the same split: the bar an RNN has to clear."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from training.data import Example
from training.metrics import classification_metrics
from training.tokenizer import tokenize


def _features(text: str) -> list[str]:
    """Unigrams and bigrams of the project's own token norms, so both models read alike."""
    norms = [token.norm for token in tokenize(text)]
    return norms + [f"{a} {b}" for a, b in itertools.pairwise(norms)]


def tfidf_logistic_regression(
    train: Sequence[Example],
    dev: Sequence[Example],
    test: Sequence[Example],
    labels: Sequence[str],
    class_weighting: str,
) -> dict[str, Any]:
    """Word 1-2 gram TF-IDF, C picked on dev macro-F1; returns test metrics and the C used."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    index = {label: i for i, label in enumerate(labels)}
    vectorizer = TfidfVectorizer(analyzer=_features, min_df=2, sublinear_tf=True).fit(
        [e.text for e in train]
    )
    x_train, x_dev, x_test = (vectorizer.transform([e.text for e in s]) for s in (train, dev, test))
    y_train, y_dev, y_test = ([index[e.label] for e in s] for s in (train, dev, test))
    weights = [e.weight for e in train]
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in (0.5, 1.0, 2.0, 4.0, 8.0):
        model = LogisticRegression(
            C=c,
            max_iter=2000,
            class_weight="balanced" if class_weighting != "none" else None,
        ).fit(x_train, y_train, sample_weight=weights)
        score = classification_metrics(y_dev, model.predict(x_dev).tolist(), labels)["macro_f1"]
        if score > best[0]:
            best = (score, c, model)
    _, c, model = best
    metrics = classification_metrics(y_test, model.predict(x_test).tolist(), labels)
    return {"C": c, "features": "tfidf over tokenizer norms, unigrams + bigrams", "test": metrics}
