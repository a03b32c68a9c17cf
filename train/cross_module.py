"""`CrossEncoderModule`: a loaded cross-encoder plus its pair rules, with `score_pairs` and `score(query, docs)`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lir.batching import pair_groups, score_pair_batches
from lir.tokenization import PairEncoder
from lir.train.cross_encoder import LoadedCrossEncoder
from lir.train.module import ScoreOutput


class CrossEncoderModule:
    """PyTorch inference with a cross-encoder, tokenized by the core's `PairEncoder` (the rules that export
    and clients share). Listwise models (set-encoder) score whole groups in one batch.

    >>> module = CrossEncoderModule("webis/monoelectra-base")  # doctest: +SKIP
    >>> module.score("What is the capital of Germany?", ["Berlin is ...", "Paris is ..."]).scores
    """

    def __init__(self, model_name_or_path: str | LoadedCrossEncoder, t5_scoring: str | None = None) -> None:
        if isinstance(model_name_or_path, LoadedCrossEncoder):
            loaded = model_name_or_path
        else:
            from lir.train.cross_encoder import load_cross_encoder

            loaded = load_cross_encoder(model_name_or_path, t5_scoring)
        self.loaded = loaded
        self.model = loaded.model
        self.family = self.model.family
        config = self.model.config
        self.listwise = config.listwise
        self.pairs = PairEncoder(
            loaded.tokenizer, config.rules("query"), config.rules("doc"), config.pair_rules(), loaded.pad_token_id
        )

    @torch.inference_mode()
    def forward_batch(self, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        """[B] scores of one padded batch: the scorer graph's inputs (input_ids, attention_mask[,
        token_type_ids][, groups]) as numpy arrays."""
        inputs = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in feeds.items()}
        return self.model(**inputs)

    def score_pairs(
        self,
        queries: Sequence[str],
        docs: Sequence[str],
        groups: Sequence[int] | None = None,
        batch_size: int = 32,
    ) -> np.ndarray:
        """float32 [N] scores of the pairs (queries[i], docs[i]), in input order.

        Listwise models score each group's candidates jointly: `groups` gives one group id per pair (by
        default, pairs with the same query form a group); a batch holds whole groups (a group larger than
        `batch_size` is a batch of its own). Pointwise models ignore `groups`.
        """
        encoded = self.pairs.encode(queries, docs)
        numbers = pair_groups(queries, groups) if self.listwise or groups is not None else None
        return score_pair_batches(
            lambda feeds: self.forward_batch(feeds).numpy(), self.pairs, encoded, numbers, batch_size
        )

    def score(self, query: str, docs: Sequence[str], batch_size: int = 32) -> ScoreOutput:
        """Scores of `query` against each of `docs` (one group for listwise models), in input order."""
        groups = [0] * len(docs)
        return ScoreOutput(torch.from_numpy(self.score_pairs([query] * len(docs), docs, groups, batch_size)))
