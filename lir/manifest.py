"""The model manifest: the contract between `lir-export` and everything that consumes an export.

An exported model directory holds `manifest.json`, the tokenizer file and the ONNX graphs. The
manifest tells a consumer everything it needs without torch: the model family, similarity,
dimension, the text rules for queries and documents, the graphs with their inputs and outputs,
their variants (fp32, int8, fp16) with checksums and measured deviations, and provenance.
"""

from __future__ import annotations

import json
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from lir.coil import DOC_AGGREGATIONS, QUERY_AGGREGATIONS
from lir.errors import LirError
from lir.files import atomic_write_text, confined, plain_name, read_json, sha256_file

MANIFEST_FILE = "manifest.json"
FORMAT = "lir-model"
FORMAT_VERSION = 2
"""2: variants record `agreement` and its `measure` (1 called every agreement `min_cosine`)."""
FAMILIES = ("single-vector", "multi-vector", "sparse", "coil", "cross-encoder")
BI_ENCODERS = ("single-vector", "multi-vector", "sparse", "coil")
SIMILARITIES = ("dot", "cosine")
VARIANTS = ("fp32", "int8", "fp16")
ROLES = ("query", "doc")
OUTPUTS = {
    "single-vector": ("embeddings",),
    "multi-vector": ("embeddings", "scoring_mask"),
    "sparse": ("term_ids", "weights"),
    "coil": ("cls", "embeddings", "token_ids", "scoring_mask"),
    "cross-encoder": ("scores",),
}
"""The outputs of each family's encoder graphs: one vector; token vectors and which of them score;
the top-k vocabulary terms and their weights (zero weight = no term); COIL's first-token vector, every
token's vector and id and which of them score; a cross-encoder's scorer graph
gives one score per (query, document) pair."""
PAIR_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "groups")
"""The inputs a cross-encoder's scorer graph may take, in this order: token ids and attention mask of the
pair sequences [batch, sequence] (always); segment ids [batch, sequence] (when `PairRules.token_types`);
one group id per pair [batch] (listwise models: pairs of one group see each other's first token)."""
QUERY, DOC = "{query}", "{doc}"


def check_role(role: str) -> str:
    """`role` if it is 'query' or 'doc', else a one-line error."""
    if role not in ROLES:
        raise LirError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type and shape (str entries are dynamic axes)."""

    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class Variant:
    """One numeric variant of a graph and what its export measured against PyTorch: the largest absolute
    difference and the lowest `agreement` by the family's `measure` (`min cosine` of vectors or term
    weights; a cross-encoder's scores: `Pearson r`)."""

    file: str
    sha256: str
    max_abs_diff: float
    agreement: float
    measure: str
    effectiveness: dict[str, Any] | None = None


@dataclass
class Graph:
    """An ONNX graph with its interface and variants."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    variants: dict[str, Variant]


@dataclass
class TextRules:
    """How one role (query or doc) turns text into token ids.

    `max_length` counts every token, special and marker tokens included. `prefix` is prepended to the
    text (sentence-transformers prompts); `marker` is a token, or a list of tokens (MVR's viewer tokens),
    inserted right after the first token.
    `expansion_token` (ColBERT's query `[MASK]`) pads every sequence to `max_length`; those tokens are
    attended by the others when `attend_expansion`, and always scored. `special_tokens` False: the text's
    own tokens alone, without the tokenizer's special tokens (a sparse role weighted by `TermWeights`).
    """

    max_length: int
    prefix: str = ""
    marker: str | list[str] | None = None
    expansion_token: str | None = None
    attend_expansion: bool = True
    special_tokens: bool = True

    @property
    def markers(self) -> list[str]:
        """The tokens inserted after the first token, in order (none, the one marker or the list)."""
        if self.marker is None:
            return []
        return [self.marker] if isinstance(self.marker, str) else list(self.marker)


@dataclass
class TermWeights:
    """A sparse role encoded without a graph (Lightning IR's `static` weighting, inference-free, or none):
    each distinct token of a text is one term, weighted by the [vocabulary] float32 table in `file` (a
    `.npy` file with its `sha256`), or 1 for every term when `file` is None."""

    file: str | None = None
    sha256: str | None = None


@dataclass
class PairRules:
    """How a cross-encoder joins a query and a document into one token sequence.

    `template` is a list of parts: `{query}` and `{doc}` (each exactly once) stand for the query's and the
    document's own tokens, truncated to the `max_length` of their role's TextRules (for cross-encoders it
    counts content tokens only, no special tokens, as Lightning IR truncates); every other part is text
    tokenized without special tokens (a special token written out, e.g. `[CLS]` or `</s>`, is that token).
    BERT: `[CLS] {query} [SEP] {doc} [SEP]`; monoT5: `Query: {query} Document: {doc} Relevant: </s>`.
    `token_types` gives each part's segment id (the graph then takes `token_type_ids`); None: no segments.
    `listwise`: the scorer also takes `groups` and scores the candidates of one group jointly. `max_length`:
    the most tokens of a whole pair, template tokens included; past it the longer content is cut first
    (Hugging Face's `longest_first`, what Lightning IR's and sentence-transformers' tokenizers do).
    """

    template: list[str]
    token_types: list[int] | None = None
    listwise: bool = False
    max_length: int | None = None

    def validate(self) -> None:
        """Raise LirError when the template is malformed."""
        for slot in (QUERY, DOC):
            if self.template.count(slot) != 1:
                raise LirError(f"invalid manifest: the pair template needs {slot} exactly once")
        if self.max_length is not None and self.max_length < 1:
            raise LirError("invalid manifest: the pair max_length must be positive")
        if self.token_types is not None and (
            len(self.token_types) != len(self.template) or any(t not in (0, 1) for t in self.token_types)
        ):
            raise LirError("invalid manifest: pair token_types must give 0 or 1 for each template part")

    @property
    def inputs(self) -> tuple[str, ...]:
        """The scorer graph's input names under these rules (see `PAIR_INPUTS`)."""
        wanted = {"input_ids", "attention_mask"}
        wanted |= {"token_type_ids"} if self.token_types is not None else set()
        wanted |= {"groups"} if self.listwise else set()
        return tuple(name for name in PAIR_INPUTS if name in wanted)


@dataclass
class TokenizerSpec:
    """The tokenizer file (Hugging Face `tokenizers` JSON) and the ids the rules need."""

    file: str
    pad_token_id: int


@dataclass
class Manifest:
    """Everything a consumer of an exported model needs to know.

    `embedding_dim` is the vector size (single-vector), the token vector size (multi-vector) or the
    vocabulary size (sparse). Multi-vector models name their `aggregation` over query tokens (sum, mean
    or max) and `doc_aggregation` over document tokens (max, sum or mean; absent: max) and may name a
    `scorer` graph (late interaction of padded token vectors); sparse models give the number of terms
    (`top_k`) their encoder graph returns per text, and may encode a role without a graph by
    `term_weights` (that role then has no entry in `encoders`).
    COIL models name `aggregation` over query tokens (sum, mean or max) and `doc_aggregation` over document
    tokens (max, sum or mean); `embedding_dim` is their token vector size.
    Cross-encoders have no encoders (`encoders` is empty; `similarity` and `embedding_dim` are None): their
    `scorer` graph scores token sequences of (query, document) pairs built by the `pair` rules.
    """

    name: str
    family: str
    similarity: str | None
    embedding_dim: int | None
    normalized: bool
    tokenizer: TokenizerSpec
    query: TextRules
    doc: TextRules
    encoders: dict[str, str]
    graphs: dict[str, Graph]
    aggregation: str | None = None
    doc_aggregation: str | None = None
    top_k: int | None = None
    scorer: str | None = None
    pair: PairRules | None = None
    term_weights: dict[str, TermWeights] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def rules(self, role: str) -> TextRules:
        """The text rules of `role` ('query' or 'doc')."""
        return self.query if check_role(role) == "query" else self.doc

    @property
    def is_cross_encoder(self) -> bool:
        return self.family == "cross-encoder"

    def encoder(self, role: str) -> tuple[str, Graph] | None:
        """The name and graph that encodes texts of `role`; None for a role encoded by `term_weights`."""
        self.rules(role)
        if self.is_cross_encoder:
            raise LirError(f"{self.name} is a cross-encoder: it scores (query, document) pairs, not texts alone")
        if role in self.term_weights:
            return None
        name = self.encoders[role]
        return name, self.graphs[name]

    @property
    def fingerprint(self) -> dict[str, str]:
        """What identifies the model an index must be searched with: its name and the checksum of its doc
        encoder (for a cross-encoder, of its scorer graph; for term weights, of their table; the key keeps
        its name)."""
        if self.is_cross_encoder:
            checksum = self.graphs[self.scorer].variants["fp32"].sha256
        elif "doc" in self.term_weights:
            checksum = self.term_weights["doc"].sha256 or "every term weighs 1"
        else:
            checksum = self.encoder("doc")[1].variants["fp32"].sha256
        return {"model": self.name, "doc_encoder_sha256": checksum}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, directory: str | Path) -> Path:
        """Write `manifest.json` into `directory` atomically."""
        path = Path(directory) / MANIFEST_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build and validate a manifest from its JSON form."""
        version = data.get("format_version") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("format") == FORMAT and version != FORMAT_VERSION:
            raise LirError(
                f"invalid manifest: format {FORMAT!r} v{version}, expected v{FORMAT_VERSION}: export the model again"
            )
        try:
            graphs = {
                name: Graph(
                    inputs=[typed(TensorSpec, t) for t in g["inputs"]],
                    outputs=[typed(TensorSpec, t) for t in g["outputs"]],
                    variants={k: typed(Variant, v) for k, v in g["variants"].items()},
                )
                for name, g in data["graphs"].items()
            }
            manifest = cls(
                name=data["name"],
                family=data["family"],
                similarity=data["similarity"],
                embedding_dim=int(data["embedding_dim"]) if data["embedding_dim"] is not None else None,
                normalized=bool(data["normalized"]),
                tokenizer=typed(TokenizerSpec, data["tokenizer"]),
                query=typed(TextRules, data["query"]),
                doc=typed(TextRules, data["doc"]),
                encoders=dict(data["encoders"]),
                graphs=graphs,
                aggregation=data.get("aggregation"),
                doc_aggregation=data.get("doc_aggregation"),
                top_k=int(data["top_k"]) if data.get("top_k") is not None else None,
                scorer=data.get("scorer"),
                pair=typed(PairRules, data["pair"]) if data.get("pair") is not None else None,
                term_weights={role: typed(TermWeights, w) for role, w in data.get("term_weights", {}).items()},
                provenance=dict(data.get("provenance", {})),
                format=data.get("format", ""),
                format_version=int(data.get("format_version", 0)),
            )
            manifest.validate()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LirError(f"invalid manifest: missing or malformed field ({exc})") from None
        return manifest

    def validate(self) -> None:
        """Raise LirError when a field is out of its allowed values."""
        if self.format != FORMAT or self.format_version != FORMAT_VERSION:
            raise LirError(
                f"invalid manifest: format {self.format!r} v{self.format_version}, "
                f"expected {FORMAT!r} v{FORMAT_VERSION}"
            )
        plain_name(self.name, "invalid manifest: the model name")
        plain_name(self.tokenizer.file, "invalid manifest: the tokenizer file")
        for graph in self.graphs.values():
            for variant in graph.variants.values():
                plain_name(variant.file, "invalid manifest: the graph file")
        for weights in self.term_weights.values():
            if weights.file is not None:
                plain_name(weights.file, "invalid manifest: the term weights file")
        if self.family not in FAMILIES:
            raise LirError(f"invalid manifest: unknown family {self.family!r} (known: {', '.join(FAMILIES)})")
        for role in ROLES:
            if self.rules(role).max_length < 1 + (not self.is_cross_encoder) + len(self.rules(role).markers):
                raise LirError(f"invalid manifest: {role} max_length is too small")
        if self.is_cross_encoder:
            self._validate_cross_encoder()
        else:
            if self.similarity not in SIMILARITIES:
                raise LirError(f"invalid manifest: unknown similarity {self.similarity!r}")
            for role in ROLES:
                if role not in self.term_weights and self.encoders.get(role) not in self.graphs:
                    raise LirError(f"invalid manifest: the {role} encoder names no graph of the manifest")
            self._validate_family()
        for name, graph in self.graphs.items():
            if "fp32" not in graph.variants:
                raise LirError(f"invalid manifest: graph {name!r} has no fp32 variant")
            unknown = set(graph.variants) - set(VARIANTS)
            if unknown:
                raise LirError(f"invalid manifest: graph {name!r} has unknown variants {sorted(unknown)}")

    def _validate_family(self) -> None:
        multi, sparse = self.family == "multi-vector", self.family == "sparse"
        self._validate_coil()
        if self.family != "coil" and (
            multi != (self.aggregation is not None) or (multi and self.aggregation not in QUERY_AGGREGATIONS)
        ):
            raise LirError(
                f"invalid manifest: aggregation {self.aggregation!r} does not fit a {self.family} model "
                f"(multi-vector models need one of {', '.join(QUERY_AGGREGATIONS)})"
            )
        if self.pair is not None:
            raise LirError("invalid manifest: only cross-encoders have pair rules")
        if sparse != (self.top_k is not None) or (sparse and self.top_k < 1):
            what = "a sparse model needs a positive" if sparse else "only sparse models have a"
            raise LirError(f"invalid manifest: {what} top_k")
        if self.scorer is not None and (not multi or self.scorer not in self.graphs):
            raise LirError(f"invalid manifest: scorer {self.scorer!r} names no graph of a multi-vector model")
        self._validate_term_weights()
        for role in ROLES:
            rules = self.rules(role)
            if rules.expansion_token is not None and not multi:
                raise LirError(f"invalid manifest: {role} expansion is for multi-vector models only")
            if role in self.term_weights:
                continue
            outputs = [t.name for t in self.graphs[self.encoders[role]].outputs]
            if outputs != list(OUTPUTS[self.family]):
                raise LirError(
                    f"invalid manifest: the {role} encoder of a {self.family} model must output "
                    f"{', '.join(OUTPUTS[self.family])}, not {', '.join(outputs)}"
                )

    def _validate_coil(self) -> None:
        """COIL names both aggregations; a multi-vector model may name its doc aggregation (absent: max)."""
        coil = self.family == "coil"
        late = coil or self.family == "multi-vector"
        missing = coil and (self.doc_aggregation is None or self.aggregation not in QUERY_AGGREGATIONS)
        wrong = self.doc_aggregation is not None and (not late or self.doc_aggregation not in DOC_AGGREGATIONS)
        if missing or wrong:
            raise LirError(
                f"invalid manifest: aggregations {self.aggregation!r}/{self.doc_aggregation!r} do not fit a "
                f"{self.family} model (COIL and multi-vector: query {', '.join(QUERY_AGGREGATIONS)}, "
                f"doc {', '.join(DOC_AGGREGATIONS)})"
            )

    def _validate_term_weights(self) -> None:
        unknown = set(self.term_weights) - set(ROLES)
        if unknown:
            raise LirError(f"invalid manifest: term weights for unknown roles {sorted(unknown)}")
        if self.term_weights and self.family != "sparse":
            raise LirError("invalid manifest: only sparse models encode a role by term weights")
        for role in ROLES:
            weights, rules = self.term_weights.get(role), self.rules(role)
            if weights is None:
                if not rules.special_tokens:
                    raise LirError(f"invalid manifest: the {role} rules drop special tokens but a graph encodes it")
                continue
            if role in self.encoders:
                raise LirError(f"invalid manifest: the {role} role has both an encoder and term weights")
            if rules.special_tokens or rules.marker is not None:
                raise LirError(f"invalid manifest: a {role} role encoded by term weights takes no special tokens")
            if (weights.file is None) != (weights.sha256 is None):
                raise LirError(f"invalid manifest: the {role} term weights need both a file and its sha256")

    def _validate_cross_encoder(self) -> None:
        if self.pair is None:
            raise LirError("invalid manifest: a cross-encoder needs pair rules")
        self.pair.validate()
        if self.encoders or self.aggregation is not None or self.top_k is not None or self.similarity is not None:
            raise LirError("invalid manifest: a cross-encoder has no encoders, similarity, aggregation or top_k")
        if self.scorer not in self.graphs:
            raise LirError(f"invalid manifest: scorer {self.scorer!r} names no graph of the cross-encoder")
        for role in ROLES:
            if self.rules(role).expansion_token is not None or self.rules(role).marker is not None:
                raise LirError(f"invalid manifest: cross-encoder {role} rules take no marker or expansion")
        graph = self.graphs[self.scorer]
        inputs, outputs = [t.name for t in graph.inputs], [t.name for t in graph.outputs]
        if inputs != list(self.pair.inputs) or outputs != list(OUTPUTS["cross-encoder"]):
            raise LirError(
                f"invalid manifest: the scorer of this cross-encoder must take {', '.join(self.pair.inputs)} "
                f"and output scores, not {', '.join(inputs)} → {', '.join(outputs)}"
            )


def typed(cls: type, data: object) -> Any:
    """An instance of the dataclass `cls` from a JSON object, each field checked against its annotation."""
    if not isinstance(data, dict):
        raise LirError(f"invalid manifest: a {cls.__name__} must be a JSON object, not {type(data).__name__}")
    hints = get_type_hints(cls)
    for name, value in data.items():
        if name in hints and not _matches(value, hints[name]):
            raise LirError(f"invalid manifest: {cls.__name__}.{name} is {value!r}, expected {hints[name]}")
    return cls(**data)


def _matches(value: object, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_matches(value, option) for option in get_args(hint))
    if origin is list:
        return isinstance(value, list) and all(_matches(item, get_args(hint)[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, int | float if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint)


def load_manifest(directory: str | Path) -> Manifest:
    """Read and validate the manifest of an exported model directory."""
    path = Path(directory) / MANIFEST_FILE
    if not Path(directory).is_dir():
        raise LirError(f"model directory {directory} does not exist")
    if not path.is_file():
        raise LirError(f"{directory} is not an exported lir model: no {MANIFEST_FILE}")
    return Manifest.from_dict(read_json(path))


def verified_file(directory: str | Path, variant: Variant) -> Path:
    """The path of a variant's graph file, inside `directory`, after checking that its SHA-256 matches the
    manifest."""
    path = confined(directory, variant.file, "graph file")
    if not path.is_file():
        raise LirError(f"graph file {path} is missing")
    if sha256_file(path) != variant.sha256:
        raise LirError(f"graph file {path} does not match its checksum in the manifest (corrupted?)")
    return path
