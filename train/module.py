"""`BiEncoderModule`: a loaded bi-encoder of any family plus its text rules, with `score(query, docs)`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lir.coil import CoilVectors, collect_rows
from lir.manifest import OUTPUTS
from lir.tokenization import TextEncoder
from lir.train.checkpoint_io import LoadedBiEncoder
from lir.train.checkpoints import load_bi_encoder
from lir.vectors import Encoded, MultiVectors, SparseVectors


@dataclass
class ScoreOutput:
    """Scores of one query against each document, in input order."""

    scores: torch.Tensor


class BiEncoderModule:
    """PyTorch inference with a single-vector, multi-vector or sparse bi-encoder, tokenized by the core's rules.

    >>> module = BiEncoderModule("webis/colbert")          # doctest: +SKIP
    >>> module.score("What is the capital of Germany?", ["Berlin is ...", "Paris is ..."]).scores
    """

    def __init__(self, model_name_or_path: str | LoadedBiEncoder) -> None:
        loaded = (
            model_name_or_path
            if isinstance(model_name_or_path, LoadedBiEncoder)
            else load_bi_encoder(model_name_or_path)
        )
        self.loaded = loaded
        self.model = loaded.model
        self.family = self.model.family
        self.encoders = {
            role: TextEncoder(loaded.tokenizer, self.model.config.rules(role), loaded.pad_token_id, role)
            for role in ("query", "doc")
        }

    def tokenize(self, texts: Sequence[str], role: str) -> list[list[int]]:
        """Token ids of `texts` under the rules of `role`."""
        return self.encoders[role].encode(texts)

    @torch.inference_mode()
    def forward_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str) -> tuple[torch.Tensor, ...]:
        """The model's raw outputs for one padded batch: (embeddings,), (vectors, scoring mask) or (weights,)."""
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        if self.family in ("multi-vector", "coil"):
            return self.model.encode(ids, mask, role)
        return (self.model.encode(ids, mask, role),)

    def encode(self, texts: Sequence[str], role: str, batch_size: int = 32) -> Encoded:
        """Texts → the family's packed form (numpy): [N, D] array, `MultiVectors` or `SparseVectors`."""
        encoder = self.encoders[role]
        ids = encoder.encode(texts)
        if self.family == "coil":
            return coil_encodings(self, ids, role, batch_size)
        parts: list = []
        for start in range(0, len(ids), batch_size):
            outputs = self.forward_batch(*encoder.batch(ids[start : start + batch_size]), role)
            if self.family == "multi-vector":
                vectors, mask = outputs
                parts.extend(v[m].numpy() for v, m in zip(vectors, mask, strict=True))
            else:
                parts.append(outputs[0].numpy())
        dim = self.model.embedding_dim
        if self.family == "multi-vector":
            return MultiVectors.from_list(parts, dim)
        dense = np.concatenate(parts).astype(np.float32) if parts else np.empty((0, dim), np.float32)
        if self.family == "sparse":
            return sparse_rows(dense)
        return dense

    @torch.inference_mode()
    def score(self, query: str, docs: Sequence[str], batch_size: int = 32) -> ScoreOutput:
        """Scores of `query` against each of `docs` with the model's own similarity (PyTorch)."""
        return ScoreOutput(self.score_matrix([query], docs, batch_size)[0])

    @torch.inference_mode()
    def score_matrix(self, queries: Sequence[str], docs: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """[Q, N] scores of every query against every document (brute force; each text encoded once)."""
        query_ids = self.tokenize(queries, "query")
        query_out = [
            self.forward_batch(*self.encoders["query"].batch(query_ids[i : i + batch_size]), "query")
            for i in range(0, len(query_ids), batch_size)
        ]
        doc_ids = self.tokenize(docs, "doc")
        columns = []
        for start in range(0, len(doc_ids), batch_size):
            doc_out = self.forward_batch(*self.encoders["doc"].batch(doc_ids[start : start + batch_size]), "doc")
            columns.append(torch.cat([self.model.similarity(*q, *doc_out) for q in query_out]))
        return torch.cat(columns, dim=1) if columns else torch.empty(len(queries), 0)


def sparse_rows(dense: np.ndarray) -> SparseVectors:
    """The nonzero entries of [N, V] weights as `SparseVectors`."""
    rows, cols = np.nonzero(dense)
    lengths = np.bincount(rows, minlength=len(dense))
    offsets = np.zeros(len(dense) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SparseVectors(cols.astype(np.int32), dense[rows, cols].astype(np.float32), offsets, dense.shape[1])


def coil_encodings(module: BiEncoderModule, ids: list[list[int]], role: str, batch_size: int) -> CoilVectors:
    """Token ids of texts → `CoilVectors` (cls vectors, scored token ids and vectors) in PyTorch."""
    rows = []
    for start in range(0, len(ids), batch_size):
        outputs = module.forward_batch(*module.encoders[role].batch(ids[start : start + batch_size]), role)
        rows.extend(collect_rows(dict(zip(OUTPUTS["coil"], (x.numpy() for x in outputs), strict=True))))
    return CoilVectors.from_rows(rows, module.model.cls_dim, module.model.embedding_dim)
