"""Word-level tokenizer for English reviews and social-media text, with character offsets.

One compiled regular expression scans the text left to right; each match becomes a `Token`
that keeps its exact span in the input (`text[start:end] == token.text`, offsets in Unicode
code points) and a normalised form (`norm`) that is looked up in the vocabulary.

Normalisation is what makes a small vocabulary go far:
- lower case (casing is dropped; "GREAT" and "great" share one embedding);
- URLs, @mentions and numbers become the placeholders `<url>`, `<user>`, `<number>`;
- a #hashtag is read as its word ("#fail" -> "fail"), which is how people use them;
- contractions are split the way treebanks do ("don't" -> "do" + "n't"), and the negation
  "n't" is normalised to "not", so "isn't", "is not" and "isnt" meet in one place
  (a negation typed without its apostrophe, "isnt", is split the same way: "is" + "nt");
- emoticons map to a handful of classes (`<smile>`, `<sad>`, `<heart>`, ...);
- runs of "!" / "?" / "." collapse ("!!!" -> "!").
Elongated words ("soooo goood") are handled at lookup time by `Vocabulary.lookup`, which
tries the word as written, then with letter runs cut to two, then to one.

Every entry point (`tokenize`, `token_norms`, `scan`, `Vocabulary.lookup` and the encoders) takes
time linear in the text's length whatever the text, so an untrusted text cannot make it slow
(see the comment on `_PATTERN` for how the pattern keeps to that).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

TOKENIZER_VERSION = 1

PAD = "<pad>"
UNK = "<unk>"
URL = "<url>"
USER = "<user>"
NUMBER = "<number>"
SMILE = "<smile>"
SAD = "<sad>"
HEART = "<heart>"
TONGUE = "<tongue>"
LAUGH = "<laugh>"
NEUTRAL_FACE = "<neutralface>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    UNK,
    URL,
    USER,
    NUMBER,
    SMILE,
    SAD,
    HEART,
    TONGUE,
    LAUGH,
    NEUTRAL_FACE,
)

# Stems left in front of "n't" that are not words on their own.
_NEGATED_STEMS = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}
# Negations typed without an apostrophe, mapped to their stem's normal form; "dont" is split
# into "do" + "nt" (normalised to "do" + "not") exactly like "don't".
NEGATION_FORMS = {
    "dont": "do",
    "doesnt": "does",
    "didnt": "did",
    "isnt": "is",
    "arent": "are",
    "wasnt": "was",
    "werent": "were",
    "cant": "can",
    "couldnt": "could",
    "wont": "will",
    "wouldnt": "would",
    "shouldnt": "should",
    "havent": "have",
    "hasnt": "has",
    "hadnt": "had",
    "aint": "is",
}

_EYES = r"[:;=8]"
_NOSE = r"[-o*'^]?"
# A scan stays linear in the text because no alternative walks a stretch of it more than a
# bounded number of times, whatever the text:
# - an emoticon that starts with a run of brackets ("((:", "]]]:") is tried from the run's first
#   bracket only. The scan can stand inside such a run only after the bracket before failed as
#   an emoticon and was taken as punctuation; from inside, the run ends at the same place and
#   fails the same way, so the lookbehind rejects it at once instead of walking the rest of the
#   run again, which made a long run of brackets quadratic. Same tokens as without it, given
#   that a scan starts at the text's start or after whitespace (`scan`, `tokenize`).
# - a run that can never give a character back to what follows it is possessive (`++`, `*+`):
#   "xxxx", ":dddd" or "^____" that do not end as a laugh fail in one pass instead of trying
#   every shorter run;
# - `negstem` must backtrack to find where "n't" starts, but it walks a run of letters only
#   where the scan enters the run, and when it fails `word` takes the rest of the run;
# - the other alternatives fail after a character or two, or match all they walk.
_PATTERN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s<>"]+)
  | (?P<heart><3+|♥|❤️?)
  | (?P<laugh>(?<![^\W\d_])x++d++(?![^\W\d_])|(?<![^\W\d_])[:;=8]-?+d++(?![^\W\d_])|\^_*+\^)
  | (?P<smile>"""
    + _EYES
    + _NOSE
    + r"""[)\]}>]+|\((?<!\(\()\(*+"""
    + _NOSE
    + _EYES
    + r""")
  | (?P<sad>"""
    + _EYES
    + r"""'?"""
    + _NOSE
    + r"""[(\[{<]+|[)\]](?<![)\]]{2})[)\]]*+"""
    + _NOSE
    + _EYES
    + r"""|</3)
  | (?P<tongue>"""
    + _EYES
    + _NOSE
    + r"""[pPb](?![^\W\d_]))
  | (?P<neutralface>"""
    + _EYES
    + _NOSE
    + r"""[|/\\](?!/))
  | (?P<user>@\w+)
  | (?P<hashtag>\#[^\W\d_]\w*)
  | (?P<number>\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|s|k|m|%)?)
  | (?P<negstem>[^\W\d_]+(?=n['\u2019]t(?![^\W\d_])))
  | (?P<neg>n['\u2019]t(?![^\W\d_]))
  | (?P<clitic>['\u2019](?:s|re|ve|ll|d|m)(?![^\W\d_]))
  | (?P<word>[^\W\d_]+)
  | (?P<bang>[!?]+)
  | (?P<dots>\.{2,}|…+)
  | (?P<emoji>[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\U0001F3FB-\U0001F3FF]*)
  | (?P<punct>[^\w\s\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\x00-\x1f\x7f])
    """,
    re.VERBOSE | re.IGNORECASE,
)
# What `tokenize` cuts a text into before scanning, and the one all-letter token that is not
# a word (`_PATTERN`'s first `laugh` alternative). Possessive, like the runs of `_PATTERN`, and
# so are the runs of one repeated character that `lookup_candidates` shortens: nothing after
# them could use a character they gave back, so each run is walked once.
_PIECE = re.compile(r"\S+")
_LAUGH = re.compile(r"x++d++", re.IGNORECASE)
_ELONGATED_TO_TWO = re.compile(r"(.)\1{2,}+")
_ELONGATED_TO_ONE = re.compile(r"(.)\1++")


class Token(NamedTuple):
    """One token: its exact text and span in the input, and its normalised form.

    A named tuple: immutable, and much cheaper to create than a frozen dataclass
    (a text has one per word, on every request)."""

    text: str
    start: int
    end: int
    norm: str


_FIXED_NORMS = {
    "neg": "not",
    "url": URL,
    "user": USER,
    "number": NUMBER,
    "dots": "...",
    "heart": HEART,
    "laugh": LAUGH,
    "smile": SMILE,
    "sad": SAD,
    "tongue": TONGUE,
    "neutralface": NEUTRAL_FACE,
}


def _normalise(kind: str, text: str) -> str:
    fixed = _FIXED_NORMS.get(kind)
    if fixed is not None:
        return fixed
    if kind == "word":
        return text.lower()
    if kind == "hashtag":
        return text[1:].lower()
    if kind == "negstem":
        lowered = text.lower()
        return _NEGATED_STEMS.get(lowered, lowered)
    if kind == "clitic":
        return "'" + text[1:].lower()
    if kind == "bang":
        return "!" if "!" in text else "?"
    if kind == "emoji":
        # Skin tones and presentation selectors do not change the sentiment of an emoji.
        return text[0]
    return text


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens; deterministic, never raises on any `str`, and linear in the
    text's length for any text (see `_PATTERN`).

    Same tokens as scanning the whole text with `_PATTERN` (`scan`), faster: no token spans
    whitespace, so the text is cut at whitespace first, and a piece made of letters only is one
    word (or a laugh, "xD") without trying the pattern's other alternatives on it. Letters
    (`str.isalpha`) are a subset of the pattern's word characters, and the lookarounds at a
    piece's ends see whitespace or the text's ends either way.
    """
    tokens: list[Token] = []
    for piece in _PIECE.finditer(text):
        surface = piece.group()
        if _is_word(surface):
            start, end = piece.span()
            _add_word(tokens, surface, start, end)
        else:
            _scan_into(tokens, text, *piece.span())
    return tokens


def token_norms(text: str) -> list[str]:
    """`[token.norm for token in tokenize(text)]`, without making the tokens.

    All a prediction needs, and kept beside `tokenize` for speed alone: every /predict text
    goes through it, and leaving out what only the routes that show tokens use (a `Token`, its
    span and a match object per word) saves a share of a request's CPU time worth this code
    (bench/tokenizer.py times both paths). The tests hold it to `tokenize` on any text.

    It cuts the text as `tokenize` does: `str.split()` splits where `_PIECE` does (both at
    `str.isspace` characters), and a piece scanned on its own gives the tokens it gives in
    place (the pattern's lookarounds see whitespace or a text's end around it either way).
    """
    norms: list[str] = []
    for piece in text.split():
        if _is_word(piece):
            _add_word_norms(norms, piece)
        elif piece[-1] in _TRAILING and _is_word(piece[:-1]):
            # "great!", "fine,": a word and a mark, the commonest piece that is not a plain
            # word; the mark is a token of its own whose norm is itself.
            _add_word_norms(norms, piece[:-1])
            norms.append(piece[-1])
        else:
            norms += [token.norm for token in scan(piece)]
    return norms


# Marks that are one token on their own after a word, with themselves as their norm.
_TRAILING = frozenset(".,!?")


def _is_word(piece: str) -> bool:
    """Whether the pattern reads all of `piece` as one `word`: letters only (`str.isalpha`
    letters are among the pattern's word characters), and not a laugh ("xD")."""
    return piece.isalpha() and _LAUGH.fullmatch(piece) is None


def _add_word_norms(norms: list[str], word: str) -> None:
    """The norms `_add_word` gives `word`: "dont" is "do" + "not"."""
    lowered = word.lower()
    stem = NEGATION_FORMS.get(lowered)
    if stem is None:
        norms.append(lowered)
    else:
        norms += (stem, "not")


def scan(text: str) -> list[Token]:
    """The tokens of `text` by `_PATTERN` alone: the definition `tokenize` keeps to."""
    tokens: list[Token] = []
    _scan_into(tokens, text, 0, len(text))
    return tokens


def _scan_into(tokens: list[Token], text: str, start: int, end: int) -> None:
    for match in _PATTERN.finditer(text, start, end):
        kind = match.lastgroup
        assert kind is not None  # every alternative is a named group
        surface = match.group()
        if kind == "word":
            _add_word(tokens, surface, *match.span())
        else:
            tokens.append(Token(surface, *match.span(), _normalise(kind, surface)))


def _add_word(tokens: list[Token], surface: str, start: int, end: int) -> None:
    lowered = surface.lower()
    stem = NEGATION_FORMS.get(lowered)
    if stem is None:
        tokens.append(Token(surface, start, end, lowered))
    else:  # "dont" reads as "do" + "not", like "don't"
        split = end - 2
        tokens.append(Token(surface[:-2], start, split, stem))
        tokens.append(Token(surface[-2:], split, end, "not"))


def lookup_candidates(norm: str) -> tuple[str, ...]:
    """Forms of `norm` to try in the vocabulary, most faithful first ("goood" -> "good")."""
    two = _ELONGATED_TO_TWO.sub(r"\1\1", norm)
    one = _ELONGATED_TO_ONE.sub(r"\1", two)
    if two == norm:
        return (norm,) if one == norm else (norm, one)
    return (norm, two) if one == two else (norm, two, one)


class Vocabulary:
    """Maps normalised tokens to ids. Id 0 is padding, id 1 the unknown token."""

    pad_id = 0
    unk_id = 1

    def __init__(self, itos: Sequence[str]) -> None:
        if tuple(itos[:2]) != (PAD, UNK):
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}; got {list(itos[:2])}")
        if len(set(itos)) != len(itos):
            raise ValueError("vocabulary contains duplicate entries")
        self.itos: tuple[str, ...] = tuple(itos)
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def lookup(self, norm: str) -> int:
        """Id of `norm`, trying de-elongated forms; `unk_id` when nothing matches."""
        found = self.stoi.get(norm)
        if found is not None:
            return found
        for candidate in lookup_candidates(norm)[1:]:
            found = self.stoi.get(candidate)
            if found is not None:
                return found
        return self.unk_id

    def encode(self, tokens: Iterable[Token]) -> list[int]:
        return self.encode_norms(token.norm for token in tokens)

    def encode_norms(self, norms: Iterable[str]) -> list[int]:
        """The ids of normalised tokens (`token_norms`'s output, say)."""
        return [self.lookup(norm) for norm in norms]

    @classmethod
    def build(
        cls,
        token_counts: dict[str, int],
        *,
        min_count: int = 1,
        max_size: int | None = None,
        extra: Iterable[str] = (),
    ) -> Vocabulary:
        """Special tokens, then `extra` (in order), then corpus tokens by count (ties by text)."""
        itos: list[str] = list(SPECIAL_TOKENS)
        seen = set(itos)
        for token in extra:
            if token not in seen:
                itos.append(token)
                seen.add(token)
        ranked = sorted(
            (item for item in token_counts.items() if item[1] >= min_count),
            key=lambda item: (-item[1], item[0]),
        )
        for token, _ in ranked:
            if max_size is not None and len(itos) >= max_size:
                break
            if token not in seen:
                itos.append(token)
                seen.add(token)
        return cls(itos)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokenizer_version": TOKENIZER_VERSION,
            "pad": PAD,
            "unk": UNK,
            "tokens": list(self.itos),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocabulary:
        version = data.get("tokenizer_version")
        if version != TOKENIZER_VERSION:
            raise ValueError(
                f"vocabulary was built for tokenizer version {version}, "
                f"this code implements version {TOKENIZER_VERSION}"
            )
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("vocabulary 'tokens' must be a list of strings")
        return cls(tokens)
