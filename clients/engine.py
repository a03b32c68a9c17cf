"""The engine interface: texts of a role → embeddings, whatever runs the graphs (embedded or Triton)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lir.clients.batching import length_batches
from lir.manifest import Manifest, check_role
from lir.tokenization import TextEncoder, pad_batch


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
        return self.manifest.embedding_dim

    @abstractmethod
    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[B, L] ids and mask → [B, D] float32 embeddings."""

    def encode(
        self,
        texts: Sequence[str],
        role: str,
        batch_size: int = 32,
        max_tokens: int | None = 2048,
        progress: bool = False,
    ) -> np.ndarray:
        """[N, D] float32 embeddings of `texts` in input order."""
        encoder = self._encoders[check_role(role)]
        ids = encoder.encode(texts)
        out = np.empty((len(ids), self.embedding_dim), dtype=np.float32)
        lengths = [len(seq) for seq in ids]
        with tqdm(total=len(ids), desc=f"encoding {role}s", unit=role, disable=not progress) as bar:
            for batch in length_batches(lengths, batch_size, max_tokens):
                input_ids, mask = pad_batch([ids[i] for i in batch], encoder.pad_token_id)
                out[batch] = self.run_batch(role, input_ids, mask)
                bar.update(len(batch))
        return out

    def encode_queries(self, texts: Sequence[str], **options) -> np.ndarray:
        return self.encode(texts, "query", **options)

    def encode_docs(self, texts: Sequence[str], **options) -> np.ndarray:
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
