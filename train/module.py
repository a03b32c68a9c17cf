"""`BiEncoderModule`: a loaded model plus its text rules, with the paper's `score(query, docs)` convenience."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lir.manifest import TextRules
from lir.tokenization import TextEncoder, pad_batch
from lir.train.checkpoints import LoadedBiEncoder, load_bi_encoder


@dataclass
class ScoreOutput:
    """Scores of one query against each document, in input order, with the embeddings used."""

    scores: torch.Tensor
    query_embeddings: torch.Tensor
    doc_embeddings: torch.Tensor


class BiEncoderModule:
    """PyTorch inference with a single-vector bi-encoder, tokenized by the core's rules.

    >>> module = BiEncoderModule("webis/bert-bi-encoder")          # doctest: +SKIP
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
        config = self.model.config
        self.encoders = {
            role: TextEncoder(loaded.tokenizer, rules, loaded.pad_token_id, role)
            for role, rules in (
                ("query", TextRules(config.query_length, config.query_prefix, config.query_marker)),
                ("doc", TextRules(config.doc_length, config.doc_prefix, config.doc_marker)),
            )
        }

    def tokenize(self, texts: Sequence[str], role: str) -> list[list[int]]:
        """Token ids of `texts` under the rules of `role`."""
        return self.encoders[role].encode(texts)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], role: str, batch_size: int = 32) -> torch.Tensor:
        """[N, D] embeddings of `texts`, batched in input order."""
        ids = self.tokenize(texts, role)
        parts = []
        for start in range(0, len(ids), batch_size):
            input_ids, mask = pad_batch(ids[start : start + batch_size], self.loaded.pad_token_id)
            parts.append(self.model.encode(torch.from_numpy(input_ids), torch.from_numpy(mask)))
        return torch.cat(parts) if parts else torch.empty(0, self.model.embedding_dim)

    @torch.inference_mode()
    def score(self, query: str, docs: Sequence[str]) -> ScoreOutput:
        """Scores of `query` against each of `docs` (the model's similarity)."""
        query_embeddings = self.encode([query], "query")
        doc_embeddings = self.encode(docs, "doc")
        scores = self.model.similarity(query_embeddings, doc_embeddings)[0]
        return ScoreOutput(scores, query_embeddings, doc_embeddings)

    def encode_numpy(self, texts: Sequence[str], role: str, batch_size: int = 32) -> np.ndarray:
        """`encode` as a float32 numpy array."""
        return self.encode(texts, role, batch_size).numpy().astype(np.float32)
