"""The engine interface: texts of a role → encodings, or (query, document) pairs → scores, whatever runs
the graphs (embedded or Triton).

Encodings are the model family's packed form (`lir.vectors`): an [N, D] array (single-vector),
`MultiVectors` (multi-vector), `SparseVectors` (sparse) or `CoilVectors` (coil). Cross-encoders do not encode
texts alone: `score_pairs` gives one float32 score per pair.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lir.batching import length_batches, pair_groups, score_pair_batches
from lir.errors import LirError
from lir.manifest import Manifest, check_role
from lir.model_card import ModelCard
from lir.term_weights import TermTable
from lir.tokenization import PairEncoder, TextEncoder
from lir.vectors import Collector, Encoded

PAIR_TOKENS = 8192
"""Default bound on the padded tokens of a batch of pairs (32 pairs of 256 tokens)."""


class Engine(ABC):
    """Encodes queries and documents, or scores (query, document) pairs, under an exported model's manifest.

    Subclasses run one padded batch of token ids through the role's graph (`run_batch`) or the pairs of
    a cross-encoder through its scorer graph (`run_scores`); tokenization by the manifest's rules and
    length-bucketed batching are shared here. What the engine says of its model comes from one `ModelCard`
    (the manifest's). An engine without an exported directory (`manifest` None) passes its `card` and its
    own `encoders` (bi-encoders) or `pairs` (cross-encoders).
    """

    def __init__(
        self,
        directory: str | Path | None,
        manifest: Manifest | None,
        encoders: Mapping[str, TextEncoder] | None = None,
        pairs: PairEncoder | None = None,
        card: ModelCard | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.manifest = manifest
        self.card = card if card is not None else ModelCard.of(manifest)
        if manifest is not None and manifest.is_cross_encoder:
            pairs = PairEncoder.from_manifest(directory, manifest)
        elif manifest is not None:
            encoders = {role: TextEncoder.from_manifest(directory, manifest, role) for role in ("query", "doc")}
        self._encoders: dict[str, TextEncoder] = dict(encoders or {})
        self._pairs = pairs
        self._tables = {
            role: TermTable.from_manifest(directory, manifest, role)
            for role in (manifest.term_weights if manifest is not None else ())
        }

    @property
    def embedding_dim(self) -> int | None:
        """Vector size (single-vector), token vector size (multi-vector), vocabulary size (sparse); None for
        a cross-encoder."""
        return self.card.embedding_dim

    @property
    def family(self) -> str:
        return self.card.family

    @property
    def aggregation(self) -> str | None:
        """How a multi-vector or COIL model aggregates query tokens (`sum`, `mean` or `max`); None otherwise."""
        return self.card.aggregation

    @property
    def doc_aggregation(self) -> str | None:
        """How a multi-vector or COIL model aggregates document tokens per query token (`max`, `sum` or `mean`);
        None otherwise."""
        return self.card.doc_aggregation

    @property
    def listwise(self) -> bool:
        """Whether a cross-encoder scores the candidates of a group jointly (they then share batches)."""
        return self.card.listwise

    @abstractmethod
    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """[B, L] ids and mask → the role's encoder outputs by name (`lir.manifest.OUTPUTS` of the family)."""

    @abstractmethod
    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One padded batch of pairs (the scorer's inputs, `PairRules.inputs`) → float32 scores [B]."""

    def require(self, cross_encoder: bool) -> None:
        """A one-line error unless the model is (`cross_encoder`) or is not a cross-encoder."""
        if cross_encoder and self.family != "cross-encoder":
            raise LirError(f"{self.fingerprint['model']} is a {self.family} model: it encodes texts, not pairs")
        if not cross_encoder and self.family == "cross-encoder":
            raise LirError(
                f"{self.fingerprint['model']} is a cross-encoder: it scores (query, document) pairs, not texts alone"
            )

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 32,
        max_tokens: int | None = 2048,
        progress: bool = False,
    ) -> Encoded:
        """The encodings of `texts` in input order."""
        self.require(cross_encoder=False)
        encoder = self._encoders[check_role(role)]
        ids = encoder.encode(texts)
        collector = Collector(self.family, len(ids), self.embedding_dim)
        lengths = [len(seq) for seq in ids]
        with tqdm(total=len(ids), desc=f"encoding {role}s", unit=role, disable=not progress) as bar:
            for batch in length_batches(lengths, batch_size, max_tokens):
                collector.add(batch, self._run(role, *encoder.batch([ids[i] for i in batch])))
                bar.update(len(batch))
        return collector.result()

    def _run(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """One batch through the role's graph, or its term weights where it has no graph (no model call)."""
        table = self._tables.get(role)
        return (
            table.run(input_ids, attention_mask)
            if table is not None
            else self.run_batch(role, input_ids, attention_mask)
        )

    def score_pairs(
        self,
        queries: Sequence[str],
        docs: Sequence[str],
        groups: Sequence[Hashable] | None = None,
        batch_size: int = 32,
        max_tokens: int | None = PAIR_TOKENS,
        progress: bool = False,
    ) -> np.ndarray:
        """Cross-encoder scores of the pairs (queries[i], docs[i]): float32 [N] in input order.

        Listwise models score the pairs of a group (`groups[i]`, any hashable; default: pairs of the same
        query text form a group) together; a batch then holds whole groups.
        """
        self.require(cross_encoder=True)
        encoded = self._pairs.encode(queries, docs)
        numbers = pair_groups(queries, groups) if self.listwise else None
        with tqdm(total=len(encoded), desc="scoring pairs", unit="pair", disable=not progress) as bar:
            return score_pair_batches(
                self.run_scores, self._pairs, encoded, numbers, batch_size, max_tokens, on_batch=bar.update
            )

    def encode_queries(self, texts: Sequence[str], **options) -> Encoded:
        return self.encode(texts, "query", **options)

    def encode_docs(self, texts: Sequence[str], **options) -> Encoded:
        return self.encode(texts, "doc", **options)

    @property
    def fingerprint(self) -> dict[str, str]:
        """What identifies the model an index must be searched with (see `Manifest.fingerprint`)."""
        return self.manifest.fingerprint

    variant: str | None = None
    """The numeric variant of the graphs this engine runs (fp32, int8, fp16), where it knows it."""

    @property
    def doc_graph_sha256(self) -> str | None:
        """The checksum of the graph file that encodes documents in this engine's variant, where it knows it."""
        if self.manifest is None or self.manifest.is_cross_encoder or self.variant is None:
            return None
        encoder = self.manifest.encoder("doc")
        variant = encoder[1].variants.get(self.variant) if encoder is not None else None
        return variant.sha256 if variant is not None else None

    def close(self) -> None:  # noqa: B027 - engines without resources need not override it
        """Release resources (sessions, connections)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
