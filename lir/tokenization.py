"""Tokenization rules shared by training, export and clients, on Hugging Face `tokenizers` alone.

One `TextEncoder` per role turns texts into token ids exactly as the manifest says: optional prefix,
special tokens unless the rules drop them, truncation to `max_length` (special and marker tokens counted),
optional marker tokens right after the first token, optional expansion to `max_length` (ColBERT's query
`[MASK]` padding). `TextEncoder.batch`
pads a batch to its longest member with the attention mask the rules ask for. A `PairEncoder` joins the
query and document of cross-encoder pairs by the manifest's `PairRules` template.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lir.errors import LirError
from lir.files import confined
from lir.manifest import DOC, QUERY, Manifest, PairRules, TextRules


def as_text(value: object, position: int, role: str) -> str:
    """Return `value` as text, or raise a one-line error for bytes that are not UTF-8 or non-text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise LirError(f"{role} #{position} is not valid UTF-8 text") from None
    raise LirError(f"{role} #{position} is {type(value).__name__}, expected text")


class TextEncoder:
    """Turns texts of one role into token ids under that role's rules."""

    def __init__(self, tokenizer: Tokenizer, rules: TextRules, pad_token_id: int, role: str) -> None:
        self.role = role
        self.rules = rules
        self.pad_token_id = pad_token_id
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_padding()
        self._marker_ids = [self._token_id(marker, "marker") for marker in rules.markers]
        self.expansion_id = self._token_id(rules.expansion_token, "expansion")
        room = rules.max_length - len(self._marker_ids)
        if room < 1:
            raise LirError(f"{role} max_length {rules.max_length} leaves no room beside its marker tokens")
        self._tokenizer.enable_truncation(max_length=room)

    def _token_id(self, token: str | None, what: str) -> int | None:
        if token is None:
            return None
        found = self._tokenizer.token_to_id(token)
        if found is None:
            raise LirError(f"{what} token {token!r} is not in the tokenizer's vocabulary")
        return found

    @classmethod
    def from_manifest(cls, directory: str | Path, manifest: Manifest, role: str) -> TextEncoder:
        """The encoder for `role` of an exported model directory."""
        tokenizer = _load_tokenizer(directory, manifest)
        return cls(tokenizer, manifest.rules(role), manifest.tokenizer.pad_token_id, role)

    def encode(self, texts: Sequence[object]) -> list[list[int]]:
        """Token ids of each text, truncated per the rules. Empty queries are refused."""
        clean = [as_text(t, i, self.role) for i, t in enumerate(texts)]
        if self.role == "query":
            for i, text in enumerate(clean):
                if not text.strip():
                    raise LirError(f"query #{i} is empty")
        prefix = self.rules.prefix
        encodings = self._tokenizer.encode_batch(
            [prefix + t for t in clean] if prefix else clean, add_special_tokens=self.rules.special_tokens
        )
        ids = [e.ids for e in encodings]
        if self._marker_ids:
            ids = [[seq[0], *self._marker_ids, *seq[1:]] for seq in ids]
        if self.expansion_id is not None:
            ids = [seq + [self.expansion_id] * (self.rules.max_length - len(seq)) for seq in ids]
        return ids

    def batch(self, sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Pad token id lists into (input_ids, attention_mask); unattended expansion tokens get mask 0 (those
        after a text's last other token: a text's own mask token stays attended, as in Lightning IR)."""
        input_ids, attention_mask = pad_batch(sequences, self.pad_token_id)
        if self.expansion_id is not None and not self.rules.attend_expansion:
            positions = np.arange(input_ids.shape[1])
            own = (input_ids != self.expansion_id) & (attention_mask == 1)
            last_own = np.where(own, positions, -1).max(axis=1, keepdims=True)
            attention_mask[positions > last_own] = 0
        return input_ids, attention_mask


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad token id lists to the longest one: (input_ids, attention_mask), both int64."""
    if not sequences:
        raise LirError("cannot pad an empty batch")
    length = max(len(s) for s in sequences)
    input_ids = np.full((len(sequences), length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = seq
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def _load_tokenizer(directory: str | Path, manifest: Manifest) -> Tokenizer:
    path = confined(directory, manifest.tokenizer.file, "tokenizer file")
    if not path.is_file():
        raise LirError(f"tokenizer file {path} is missing")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise LirError(f"tokenizer file {path} cannot be read ({str(exc).splitlines()[0]})") from None


class PairEncoder:
    """Turns (query, document) pairs into one token sequence each under a cross-encoder's rules.

    Query and document are tokenized without special tokens and truncated to their roles' `max_length`
    (content tokens), then, past the pair's `max_length`, the longer one first (`longest_first`), then put
    into the template; `batch` pads to (input_ids, attention_mask[,
    token_type_ids]).
    """

    def __init__(
        self, tokenizer: Tokenizer, query: TextRules, doc: TextRules, pair: PairRules, pad_token_id: int
    ) -> None:
        pair.validate()
        self.pair = pair
        self.pad_token_id = pad_token_id
        self._roles = {}
        for role, rules in (("query", query), ("doc", doc)):
            copy = Tokenizer.from_str(tokenizer.to_str())
            copy.no_padding()
            copy.enable_truncation(max_length=rules.max_length)
            self._roles[role] = (copy, rules.prefix)
        plain = Tokenizer.from_str(tokenizer.to_str())
        plain.no_padding()
        plain.no_truncation()
        self._parts = [
            None if part in (QUERY, DOC) else plain.encode(part, add_special_tokens=False).ids for part in pair.template
        ]
        types = pair.token_types or [0] * len(pair.template)
        self._types = types
        template_tokens = sum(len(part) for part in self._parts if part is not None)
        self._room = None if pair.max_length is None else pair.max_length - template_tokens
        if self._room is not None and self._room < 2:
            raise LirError(f"a pair max_length of {pair.max_length} leaves no room beside the template's tokens")

    @classmethod
    def from_manifest(cls, directory: str | Path, manifest: Manifest) -> PairEncoder:
        """The pair encoder of an exported cross-encoder directory."""
        if manifest.pair is None:
            raise LirError(f"{manifest.name} is not a cross-encoder: it has no pair rules")
        tokenizer = _load_tokenizer(directory, manifest)
        return cls(tokenizer, manifest.query, manifest.doc, manifest.pair, manifest.tokenizer.pad_token_id)

    def _content(self, texts: Sequence[object], role: str) -> list[list[int]]:
        tokenizer, prefix = self._roles[role]
        clean = [as_text(t, i, role) for i, t in enumerate(texts)]
        if role == "query":
            for i, text in enumerate(clean):
                if not text.strip():
                    raise LirError(f"query #{i} is empty")
        encodings = tokenizer.encode_batch([prefix + t for t in clean] if prefix else clean, add_special_tokens=False)
        return [e.ids for e in encodings]

    def encode(self, queries: Sequence[object], docs: Sequence[object]) -> list[tuple[list[int], list[int]]]:
        """(token ids, token type ids) of each pair; `queries` and `docs` are parallel lists."""
        if len(queries) != len(docs):
            raise LirError(f"{len(queries)} queries for {len(docs)} documents: pairs need one of each")
        query_ids, doc_ids = self._content(queries, "query"), self._content(docs, "doc")
        pairs = []
        for q, d in zip(query_ids, doc_ids, strict=True):
            if self._room is not None:
                kept = longest_first(len(q), len(d), self._room)
                q, d = q[: kept[0]], d[: kept[1]]
            ids: list[int] = []
            types: list[int] = []
            for part, segment, slot in zip(self._parts, self._types, self.pair.template, strict=True):
                tokens = part if part is not None else (q if slot == QUERY else d)
                ids.extend(tokens)
                types.extend([segment] * len(tokens))
            pairs.append((ids, types))
        return pairs

    def batch(self, pairs: Sequence[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
        """Pad pairs into the scorer's inputs: input_ids, attention_mask and (with segments) token_type_ids."""
        input_ids, attention_mask = pad_batch([ids for ids, _ in pairs], self.pad_token_id)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.pair.token_types is not None:
            feeds["token_type_ids"] = pad_batch([types for _, types in pairs], 0)[0]
        return feeds


def longest_first(first: int, second: int, room: int) -> tuple[int, int]:
    """How many tokens of each of two sequences `room` keeps, as Hugging Face `tokenizers` truncates a pair
    `longest_first`: the shorter whole if the longer can take the rest, else half each (the second gets the
    odd one)."""
    if first + second <= room:
        return first, second
    short, long = min(first, second), max(first, second)
    long = short if short > room else max(short, room - short)
    if short + long > room:
        short, long = room // 2, room // 2 + room % 2
    return (short, long) if first <= second else (long, short)


def pair_template(tokenizer: Tokenizer) -> tuple[list[str], list[int]]:
    """The template and segment ids of the tokenizer's own pair post-processing (e.g. BERT's
    `[CLS] {query} [SEP] {doc} [SEP]` with segments 0 0 0 1 1), read from how it encodes a probe pair."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    copy.no_truncation()
    encoding = copy.encode("a", "b", add_special_tokens=True)
    template: list[str] = []
    types: list[int] = []
    for token, sequence, segment in zip(encoding.tokens, encoding.sequence_ids, encoding.type_ids, strict=True):
        part = token if sequence is None else (QUERY if sequence == 0 else DOC)
        if sequence is None or part not in template:
            template.append(part)
            types.append(segment)
    return template, types
