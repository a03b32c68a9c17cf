"""Parity of exported graphs with PyTorch on real text, and the effectiveness of numeric variants.

Probe texts are SciFact queries and abstracts when the data is found (`--parity-data`, `LIR_DATA`, or
`../shared/data/scifact`), otherwise a built-in set of sentences of varied length. Batches of several
sizes are compared, long texts included so that truncation at the manifest's max length is exercised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.metrics import evaluate
from lir.tokenization import pad_batch
from lir.train.module import BiEncoderModule

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


@dataclass
class Reference:
    """PyTorch embeddings of the probe texts, computed once and compared with every variant."""

    ids: dict[str, list[list[int]]]
    embeddings: dict[str, np.ndarray]
    pad_token_id: int

    @classmethod
    def compute(cls, module: BiEncoderModule, probes: ProbeSet, graph_normalizes: bool) -> Reference:
        ids, embeddings = {}, {}
        for role, texts in (("query", probes.queries), ("doc", probes.docs)):
            ids[role] = module.encoders[role].encode(texts)
            parts = []
            for start in range(0, len(ids[role]), 8):
                input_ids, mask = pad_batch(ids[role][start : start + 8], module.loaded.pad_token_id)
                with torch.inference_mode():
                    out = module.model.encode(torch.from_numpy(input_ids), torch.from_numpy(mask))
                    if graph_normalizes:
                        out = torch.nn.functional.normalize(out, p=2, dim=-1)
                parts.append(out.numpy())
            embeddings[role] = np.concatenate(parts)
        return cls(ids, embeddings, module.loaded.pad_token_id)

    def compare(self, session: ort.InferenceSession) -> tuple[float, float]:
        """Max abs difference and min cosine of a graph against PyTorch, over batches of several sizes."""
        worst_diff, worst_cos = 0.0, 1.0
        for role, ids in self.ids.items():
            for size in BATCH_SIZES:
                for start in range(0, len(ids), size):
                    input_ids, mask = pad_batch(ids[start : start + size], self.pad_token_id)
                    got = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
                    expected = self.embeddings[role][start : start + size]
                    worst_diff = max(worst_diff, float(np.abs(got - expected).max()))
                    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1)
                    worst_cos = min(worst_cos, float(((got * expected).sum(1) / norms.clip(min=1e-12)).min()))
        return worst_diff, worst_cos


def effectiveness(
    session: ort.InferenceSession, module: BiEncoderModule, probes: ProbeSet, cosine: bool
) -> dict[str, float | str] | None:
    """nDCG@10 of exact search with this graph over the judged probe subset."""
    if probes.collection is None:
        return None
    queries, docs, qrels = probes.collection

    def embed(texts: list[str], role: str) -> np.ndarray:
        encoder = module.encoders[role]
        ids = encoder.encode(texts)
        order = np.argsort([-len(s) for s in ids], kind="stable")
        out = np.zeros((len(ids), module.model.embedding_dim), np.float32)
        for start in range(0, len(order), 16):
            chunk = order[start : start + 16]
            input_ids, mask = pad_batch([ids[i] for i in chunk], encoder.pad_token_id)
            out[chunk] = session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        if cosine:
            out /= np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-12)
        return out

    doc_ids, query_ids = list(docs), list(queries)
    scores = embed([queries[q] for q in query_ids], "query") @ embed([docs[d] for d in doc_ids], "doc").T
    run = {}
    for row, qid in enumerate(query_ids):
        top = np.argsort(-scores[row])[:10]
        run[qid] = {doc_ids[i]: float(scores[row, i]) for i in top}
    value = evaluate(run, qrels, ["nDCG@10"])["nDCG@10"]
    return {
        "measure": "nDCG@10",
        "value": round(value, 4),
        "collection": f"SciFact test, {len(queries)} queries over {len(docs)} documents",
    }
