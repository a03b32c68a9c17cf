"""The engine interface: texts of a role → encodings, whatever runs the graphs (embedded or Triton).

Encodings are the model family's packed form (`lir.vectors`): an [N, D] array (single-vector),
`MultiVectors` (multi-vector) or `SparseVectors` (sparse).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lir.clients.batching import length_batches
from lir.manifest import Manifest, check_role
from lir.tokenization import TextEncoder
from lir.vectors import Collector, Encoded


class Engine(ABC):
    """Encodes queries and documents under an exported model's manifest.

    Subclasses run one padded batch of token ids through the role's graph (`run_batch`); tokenization
    by the manifest's rules and length-bucketed batching are shared here.
    """

    def __init__(self, directory: str | Path, manifest: Manifest) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self._encoders = {role: TextEncoder.from_manifest(directory, manifest, role) for role in ("query", "doc")}

    @property
    def embedding_dim(self) -> int:
        """Vector size (single-vector), token vector size (multi-vector) or vocabulary size (sparse)."""
        return self.manifest.embedding_dim

    @property
    def family(self) -> str:
        return self.manifest.family

    @property
    def aggregation(self) -> str | None:
        """How a multi-vector model aggregates query tokens (`sum` or `mean`); None otherwise."""
        return self.manifest.aggregation

    @abstractmethod
    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """[B, L] ids and mask → the role's encoder outputs by name (`lir.manifest.OUTPUTS` of the family)."""

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 32,
        max_tokens: int | None = 2048,
        progress: bool = False,
    ) -> Encoded:
        """The encodings of `texts` in input order."""
        encoder = self._encoders[check_role(role)]
        ids = encoder.encode(texts)
        collector = Collector(self.family, len(ids), self.embedding_dim)
        lengths = [len(seq) for seq in ids]
        with tqdm(total=len(ids), desc=f"encoding {role}s", unit=role, disable=not progress) as bar:
            for batch in length_batches(lengths, batch_size, max_tokens):
                collector.add(batch, self.run_batch(role, *encoder.batch([ids[i] for i in batch])))
                bar.update(len(batch))
        return collector.result()

    def encode_queries(self, texts: Sequence[str], **options) -> Encoded:
        return self.encode(texts, "query", **options)

    def encode_docs(self, texts: Sequence[str], **options) -> Encoded:
        return self.encode(texts, "doc", **options)

    @property
    def fingerprint(self) -> dict[str, str]:
        """What identifies the model an index must be searched with (see `Manifest.fingerprint`)."""
        return self.manifest.fingerprint

    def close(self) -> None:  # noqa: B027 - engines without resources need not override it
        """Release resources (sessions, connections)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
