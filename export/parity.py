"""Parity of exported graphs with PyTorch on real text, and the effectiveness of numeric variants.

Probe texts are SciFact queries and abstracts when the data is found (`--parity-data`, `LIR_DATA`, or
`../shared/data/scifact`), otherwise a built-in set of sentences of varied length. Batches of several
sizes are compared, long texts included so that truncation at the manifest's max length is exercised.
What is compared and how outputs are scored is the family's (`lir.export.family`): PyTorch's outputs are
computed once (a `Parity`: `Reference` for bi-encoders, `lir.export.cross_encoder.PairReference` for
cross-encoders) and every graph and numeric variant is measured against them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.export.graphs import GraphPlan
from lir.metrics import evaluate
from lir.vectors import Encoded

if TYPE_CHECKING:
    from lir.export.family import BiEncoderExport, ModelExport

BATCH_SIZES = (1, 7, 32)
FALLBACK_TEXTS = [
    "What is the capital of Germany?",
    "Berlin is the capital and largest city of Germany by both area and population.",
    "Paris is the capital of France.",
    "Aspirin reduces the risk of heart attack in patients with cardiovascular disease.",
    "Transformers encode text into contextual token representations with self-attention layers. " * 40,
    "Short.",
    "Dense retrieval compares query and document embeddings by dot product or cosine similarity.",
    "Ä, é, 漢字 and emoji 🙂 are tokenized the same way on every side of the stack.",
]


@dataclass
class ProbeSet:
    """Real queries and documents to compare with, and a small judged collection if available."""

    source: str
    queries: list[str]
    docs: list[str]
    collection: tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]] | None = None


def find_probe_data(explicit: str | None) -> Path | None:
    """The SciFact folder to probe with, or None."""
    candidates = [
        explicit,
        os.environ.get("LIR_DATA") and f"{os.environ['LIR_DATA']}/scifact",
        "../shared/data/scifact",
        str(Path(__file__).resolve().parents[1] / "../shared/data/scifact"),
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "corpus.jsonl").is_file():
            return Path(candidate)
    return None


def load_probes(data: Path | None, n_texts: int = 64, n_queries: int = 30, n_docs: int = 300) -> ProbeSet:
    """Probe texts from SciFact (plus a judged subset for effectiveness), or the built-in ones."""
    if data is None:
        return ProbeSet("built-in sentences", FALLBACK_TEXTS, FALLBACK_TEXTS)
    docs = dict(iter_docs(str(data)))
    queries = read_queries(str(data), "test")
    qrels = read_qrels_spec(str(data), "test")
    query_ids = sorted(queries)[:n_queries]
    judged = {did for qid in query_ids for did in qrels.get(qid, {})}
    rng = np.random.default_rng(0)
    others = [d for d in sorted(docs) if d not in judged]
    pool = sorted(judged) + list(rng.choice(others, size=max(0, n_docs - len(judged)), replace=False))
    doc_ids = sorted(docs)
    probe_docs = [docs[d] for d in rng.choice(doc_ids, size=n_texts, replace=False)]
    probe_queries = [queries[q] for q in sorted(queries)[:n_texts]]
    collection = ({q: queries[q] for q in query_ids}, {d: docs[d] for d in pool}, {q: qrels[q] for q in query_ids})
    return ProbeSet(f"SciFact ({data})", probe_queries, probe_docs, collection)


class Parity(ABC):
    """PyTorch's outputs on the probes (`expected`), computed once; every graph and variant is measured
    against them."""

    family: ModelExport
    probes: ProbeSet
    expected: Any

    @abstractmethod
    def measure(self, session: ort.InferenceSession, plan: GraphPlan) -> tuple[float, float]:
        """The graph's max difference from PyTorch and its lowest agreement (`ModelExport.agreement`)."""

    @abstractmethod
    def effectiveness(self, sessions: dict[str, ort.InferenceSession]) -> dict[str, float | str] | None:
        """nDCG@10 on the judged probe subset with these graphs (by graph name); None without one."""


@dataclass
class Reference(Parity):
    """PyTorch's rows for the probe texts of a bi-encoder."""

    family: BiEncoderExport
    probes: ProbeSet
    ids: dict[str, list[list[int]]]
    expected: dict[str, list[Any]]

    @classmethod
    def compute(cls, family: BiEncoderExport, probes: ProbeSet, batch_size: int = 8) -> Reference:
        ids, expected = {}, {}
        for role, texts in (("query", probes.queries), ("doc", probes.docs)):
            ids[role] = family.module.encoders[role].encode(texts)
            expected[role] = []
            for start in range(0, len(ids[role]), batch_size):
                chunk = ids[role][start : start + batch_size]
                batch = family.module.encoders[role].batch(chunk)
                expected[role].extend(family.expected_rows(*batch, role, [len(s) for s in chunk]))
        return cls(family, probes, ids, expected)

    def measure(self, session: ort.InferenceSession, plan: GraphPlan) -> tuple[float, float]:
        """Encoders on the probe texts of their roles; the scorer on pairs of probe rows."""
        return self.compare(graph_runner(session), plan.roles) if plan.roles else self.compare_scorer(session)

    def compare(self, runner: Runner, roles: Sequence[str]) -> tuple[float, float]:
        """Max abs difference and min cosine of an encoder against PyTorch, over batches of several sizes."""
        worst_diff, worst_cos = 0.0, 1.0
        for role in roles:
            ids = self.ids[role]
            for size in BATCH_SIZES:
                for start in range(0, len(ids), size):
                    chunk = ids[start : start + size]
                    rows = run_rows(self.family, runner, role, chunk)
                    for got, expected in zip(rows, self.expected[role][start : start + size], strict=True):
                        diff, cos = self.family.compare(got, expected)
                        worst_diff, worst_cos = max(worst_diff, diff), min(worst_cos, cos)
        return worst_diff, worst_cos

    def compare_scorer(self, session: ort.InferenceSession) -> tuple[float, float]:
        """Max relative difference and min cosine of a scoring graph against PyTorch on probe pairs."""
        return self.family.compare_scorer(session, self.expected)

    def effectiveness(self, sessions: dict[str, ort.InferenceSession]) -> dict[str, float | str] | None:
        """nDCG@10 of exact search over the judged probe subset, each role encoded by its graph's session."""
        if self.probes.collection is None:
            return None
        family = self.family
        queries, docs, qrels = self.probes.collection
        doc_ids, query_ids = list(docs), list(queries)
        scores = family.scores(
            encode_texts(family, family.runner("query", sessions), [queries[q] for q in query_ids], "query"),
            encode_texts(family, family.runner("doc", sessions), [docs[d] for d in doc_ids], "doc"),
        )
        run = {qid: dict(zip(doc_ids, row.tolist(), strict=True)) for qid, row in zip(query_ids, scores, strict=True)}
        return ndcg_at_10(run, qrels, f"SciFact test, {len(queries)} queries over {len(docs)} documents")


Runner = Callable[[np.ndarray, np.ndarray], list[np.ndarray]]
"""What encodes one padded batch (input ids, attention mask) into an encoder's outputs, in order."""


def graph_runner(session: ort.InferenceSession) -> Runner:
    """An encoder graph's session as a `Runner`."""
    return lambda input_ids, attention_mask: session.run(
        None, {"input_ids": input_ids, "attention_mask": attention_mask}
    )


def run_rows(family: BiEncoderExport, runner: Runner, role: str, chunk: list[list[int]]) -> list[Any]:
    """One padded batch of token id lists through an encoder, split into rows per text."""
    input_ids, attention_mask = family.module.encoders[role].batch(chunk)
    return family.graph_rows(runner(input_ids, attention_mask), [len(s) for s in chunk])


def encode_texts(family: BiEncoderExport, runner: Runner, texts: list[str], role: str, batch_size: int = 16) -> Encoded:
    """Texts through an encoder graph in length-sorted batches, packed in input order."""
    ids = family.module.encoders[role].encode(texts)
    order = np.argsort([-len(s) for s in ids], kind="stable")
    rows: list[Any] = [None] * len(ids)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, row in zip(chunk, run_rows(family, runner, role, [ids[i] for i in chunk]), strict=True):
            rows[i] = row
    return family.pack(rows)


def ndcg_at_10(
    run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], collection: str
) -> dict[str, float | str]:
    """nDCG@10 of a run (every scored document of each query; the top 10 count) as the manifest records it."""
    top = {qid: dict(sorted(scores.items(), key=lambda item: -item[1])[:10]) for qid, scores in run.items()}
    value = evaluate(top, qrels, ["nDCG@10"])["nDCG@10"]
    return {"measure": "nDCG@10", "value": round(value, 4), "collection": collection}
