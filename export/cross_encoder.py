"""Cross-encoder export: one `scorer` graph, the token sequences of (query, document) pairs → [batch] scores.

The graph takes the inputs of the manifest's pair rules (`PairRules.inputs`: input_ids, attention_mask
[batch, sequence]; token_type_ids when the model has segments; groups [batch] when it is listwise) and
returns `scores` float32 [batch]. Parity runs real probe pairs (SciFact queries, each with one to six
abstracts, long ones truncated by the doc rules) through PyTorch once and through every graph in batches
of 1, 7 and 32 pairs (listwise: whole groups of different sizes per batch, and every group again with its
candidates in reverse order):

- fp32: the max abs difference, relative to the score scale (divided by the largest |score| of the probe
  pairs when that is above 1: raw logits can be large), must stay within the tolerance;
- every variant: the Pearson correlation of its scores with PyTorch's over all probe pairs (the lowest of
  the batchings) is recorded in the manifest's `Variant.agreement` (measure `Pearson r`) and bounded per numeric variant
  (`lir.export.limits.MIN_SCORE_CORRELATION`);
- effectiveness: nDCG@10 of re-ranking each judged probe query's judged documents plus 20 others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from lir.batching import score_pair_batches
from lir.export.family import ModelExport
from lir.export.graphs import GraphPlan
from lir.export.limits import MIN_SCORE_CORRELATION, scaled_difference
from lir.export.parity import BATCH_SIZES, Parity, ProbeSet, ndcg_at_10
from lir.manifest import OUTPUTS, TensorSpec
from lir.tokenization import PairEncoder
from lir.train.cross_module import CrossEncoderModule

SCORER = "scorer"
GROUP_SIZES = (4, 1, 6, 3, 2, 5)
"""Candidates of successive probe queries: groups of different sizes in one batch."""
PROBE_QUERIES = 16
OTHER_CANDIDATES = 20
"""Unjudged documents re-ranked with each probe query's judged ones (effectiveness)."""
REFERENCE_BATCH = 8
Pairs = list[tuple[list[int], list[int]]]
Run = Callable[[dict[str, np.ndarray]], np.ndarray]
"""One padded batch of pairs (the scorer's inputs) → [B] scores."""


class PairScorerGraph(nn.Module):
    """The exported computation: the model's forward on the scorer's positional inputs, by name."""

    def __init__(self, model: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.inputs = inputs

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.inputs, tensors, strict=True)))


def scorer_interface(inputs: tuple[str, ...]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The scorer's inputs ([batch, sequence], groups [batch]) and its output."""
    specs = [TensorSpec(name, "int64", ["batch"] if name == "groups" else ["batch", "sequence"]) for name in inputs]
    return specs, [TensorSpec(OUTPUTS["cross-encoder"][0], "float32", ["batch"])]


def pearson(got: np.ndarray, expected: np.ndarray) -> float:
    """Pearson correlation of two score vectors; for constant scores, 1 when equal, else 0."""
    if got.std() == 0 or expected.std() == 0:
        return float(np.allclose(got, expected))
    return float(np.corrcoef(got.astype(np.float64), expected.astype(np.float64))[0, 1])


def reversed_groups(groups: np.ndarray) -> np.ndarray:
    """A permutation of the pairs that reverses the order of each group's candidates."""
    order = np.arange(len(groups))
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        order[members] = members[::-1]
    return order


@dataclass
class Candidates:
    """Encoded pairs, grouped by query (each query's candidates are one group), and their (query, doc) ids."""

    encoded: Pairs
    groups: np.ndarray
    ids: list[tuple[str, str]] = field(default_factory=list)


def probe_pairs(pairs: PairEncoder, probes: ProbeSet) -> Candidates:
    """Probe queries, each with `GROUP_SIZES` documents in turn (the probe documents taken in order)."""
    queries, docs, groups = [], [], []
    for number, query in enumerate(probes.queries[:PROBE_QUERIES]):
        for _ in range(GROUP_SIZES[number % len(GROUP_SIZES)]):
            docs.append(probes.docs[len(docs) % len(probes.docs)])
            queries.append(query)
            groups.append(number)
    return Candidates(pairs.encode(queries, docs), np.array(groups, np.int64))


def rerank_pairs(pairs: PairEncoder, probes: ProbeSet) -> Candidates | None:
    """Each judged probe query with its judged documents and `OTHER_CANDIDATES` others of the pool."""
    if probes.collection is None:
        return None
    queries, docs, qrels = probes.collection
    rng = np.random.default_rng(0)
    ids, groups = [], []
    for number, qid in enumerate(queries):
        judged = [did for did in qrels.get(qid, {}) if did in docs]
        others = [did for did in docs if did not in judged]
        chosen = judged + [str(d) for d in rng.choice(others, size=min(OTHER_CANDIDATES, len(others)), replace=False)]
        ids += [(qid, did) for did in chosen]
        groups += [number] * len(chosen)
    encoded = pairs.encode([queries[qid] for qid, _ in ids], [docs[did] for _, did in ids])
    return Candidates(encoded, np.array(groups, np.int64), ids)


@dataclass
class PairReference(Parity):
    """PyTorch's scores of the probe pairs (`expected` [N]) and of the re-ranking pairs."""

    family: CrossEncoderExport
    probes: ProbeSet
    pairs: Candidates
    expected: np.ndarray
    rerank: Candidates | None

    @classmethod
    def compute(cls, family: CrossEncoderExport, probes: ProbeSet) -> PairReference:
        encoder = family.module.pairs
        pairs = probe_pairs(encoder, probes)
        run = family.torch_scores
        expected = score_pair_batches(run, encoder, pairs.encoded, pairs.groups, REFERENCE_BATCH)
        return cls(family, probes, pairs, expected, rerank_pairs(encoder, probes))

    def measure(self, session: ort.InferenceSession, plan: GraphPlan) -> tuple[float, float]:
        """Max difference relative to the score scale and the lowest Pearson correlation, over batchings."""
        encoder, pairs = self.family.module.pairs, self.pairs
        run = graph_scores(session)
        found = [score_pair_batches(run, encoder, pairs.encoded, pairs.groups, size) for size in BATCH_SIZES]
        if encoder.pair.listwise:
            order = reversed_groups(pairs.groups)
            permuted = np.empty(len(order), np.float32)
            permuted[order] = score_pair_batches(
                run, encoder, [pairs.encoded[i] for i in order], pairs.groups[order], BATCH_SIZES[-1]
            )
            found.append(permuted)
        diff = max(scaled_difference(got, self.expected) for got in found)
        return diff, min(pearson(got, self.expected) for got in found)

    def effectiveness(self, sessions: dict[str, ort.InferenceSession]) -> dict[str, float | str] | None:
        """nDCG@10 of re-ranking each judged probe query's candidates with the scorer graph."""
        if self.rerank is None or self.probes.collection is None:
            return None
        rerank, run_graph = self.rerank, graph_scores(sessions[SCORER])
        scores = score_pair_batches(run_graph, self.family.module.pairs, rerank.encoded, rerank.groups, BATCH_SIZES[-1])
        run: dict[str, dict[str, float]] = {}
        for (qid, did), score in zip(rerank.ids, scores, strict=True):
            run.setdefault(qid, {})[did] = float(score)
        collection = f"SciFact test, {len(run)} queries re-ranking their judged documents and {OTHER_CANDIDATES} others"
        return ndcg_at_10(run, self.probes.collection[2], collection)


def graph_scores(session: ort.InferenceSession) -> Run:
    """A scorer graph as a batch runner."""
    return lambda feeds: session.run(None, feeds)[0]


class CrossEncoderExport(ModelExport):
    """A cross-encoder: one scorer graph over the pair sequences, compared by scores."""

    family = "cross-encoder"
    bounds = MIN_SCORE_CORRELATION
    agreement = "Pearson r"
    module: CrossEncoderModule

    def torch_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """PyTorch's scores of one padded batch."""
        return self.module.forward_batch(feeds).numpy()

    def plans(self) -> list[GraphPlan]:
        rules = self.model.config.pair_rules()
        inputs, outputs = scorer_interface(rules.inputs)
        encoder = self.module.pairs
        feeds = encoder.batch(encoder.encode(["what is a cell?"] * 3, ["a cell", "cells divide by mitosis", "no"]))
        feeds["groups"] = np.array([0, 0, 1], np.int64)
        sample = tuple(torch.from_numpy(feeds[name]) for name in rules.inputs)
        return [GraphPlan(SCORER, PairScorerGraph(self.model, rules.inputs), inputs, outputs, sample)]

    def reference(self, probes: ProbeSet) -> PairReference:
        return PairReference.compute(self, probes)

    def manifest_fields(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "similarity": None,
            "embedding_dim": None,
            "normalized": False,
            "encoders": {},
            "scorer": SCORER,
            "pair": self.model.config.pair_rules(),
        }

    def provenance(self, expected: np.ndarray) -> dict[str, Any]:
        """How the model scores and the range of its scores on the probe pairs (what the tolerance is relative to)."""
        return {
            "scoring": self.model.config.scoring,
            "probe_pairs": len(expected),
            "probe_score_range": [round(float(expected.min()), 4), round(float(expected.max()), 4)],
        }
