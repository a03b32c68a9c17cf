"""Qdrant (`lir.clients.qdrant_index`, the embedded qdrant-edge store) side by side with lir's exact index of
the same family, on SciFact test encoded by real exports.

For each `--model` (an exported bi-encoder of any family): the corpus and the test queries are encoded once
by the embedded engine (kept as .npz in `--work`; `--vectors` reads the multi-vector encodings that
`bench_indexes.py --scale scifact-real` keeps); the family's exact index (Faiss Flat, exact MaxSim, the
float32 inverted index) and each Qdrant spec are built from the same vectors; each is measured for build
seconds, nDCG@10 of its top 100, recall@10 against the exact top 10, and latency: one query at a time
(p50/p99 ms) and all queries in one batch (ms/query). numpy and Faiss run one thread (OMP_NUM_THREADS=1
unless set); Qdrant's search pool has one thread a core. Prints a Markdown table, writes
bench-results/qdrant.json.

    python benchmarks/bench_qdrant.py --model model_repository/minilm --data ../shared/data/scifact \\
        --specs qdrant qdrant,indexing_threshold=1,full_scan_threshold=1 \\
        qdrant,int8,indexing_threshold=1,full_scan_threshold=1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from lir.clients.dense_index import DenseIndex  # noqa: E402
from lir.clients.multi_vector_index import MultiVectorIndex  # noqa: E402
from lir.clients.onnx_engine import OnnxEngine  # noqa: E402
from lir.clients.qdrant_index import QdrantIndex  # noqa: E402
from lir.clients.sparse_index import SparseIndex  # noqa: E402
from lir.collections import iter_docs, read_qrels_spec, read_queries  # noqa: E402
from lir.metrics import evaluate  # noqa: E402
from lir.vectors import Encoded, MultiVectors, SparseVectors  # noqa: E402

K, SINGLE_QUERIES = 100, 100  # depth of each run; queries timed one at a time


def encoded(engine: OnnxEngine, texts: list[str], path: Path, queries: bool) -> Encoded:
    """The encodings of `texts`, read from `path` (.npz) when an earlier run wrote them."""
    if path.is_file():
        arrays = np.load(path, allow_pickle=False)
        if engine.family == "multi-vector":
            return MultiVectors(arrays["vectors"], arrays["offsets"])
        if engine.family == "sparse":
            return SparseVectors(arrays["term_ids"], arrays["weights"], arrays["offsets"], int(arrays["dim"]))
        return arrays["dense"]
    encode = engine.encode_queries if queries else engine.encode_docs
    result = encode(texts, batch_size=32, progress=not queries)
    if isinstance(result, MultiVectors):
        np.savez(path, vectors=result.vectors, offsets=result.offsets)
    elif isinstance(result, SparseVectors):
        np.savez(path, term_ids=result.term_ids, weights=result.weights, offsets=result.offsets, dim=result.dim)
    else:
        np.savez(path, dense=result)
    return result


def query_row(queries: Encoded, i: int) -> Encoded:
    """Query i alone, in the family's packing."""
    if isinstance(queries, MultiVectors):
        return MultiVectors.from_list([queries[i]], queries.vectors.shape[1])
    if isinstance(queries, SparseVectors):
        return queries.take([i])
    return queries[i : i + 1]


def measure(index, queries: Encoded, query_ids: list[str], qrels, truth: list[list[str]] | None) -> dict:
    """nDCG@10, recall@10 against `truth` (the exact top 10) and latencies of one index."""
    start = time.perf_counter()
    scores, ids = index.search(queries, K)
    batch = (time.perf_counter() - start) / len(query_ids)
    singles = []
    for i in range(min(SINGLE_QUERIES, len(query_ids))):
        start = time.perf_counter()
        index.search(query_row(queries, i), 10)
        singles.append(time.perf_counter() - start)
    run = {
        q: {d: float(s) for d, s in zip(found, row, strict=False)}
        for q, found, row in zip(query_ids, ids, scores, strict=True)
    }
    top10 = [found[:10] for found in ids]
    recall = (
        1.0 if truth is None else float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(top10, truth, strict=True)]))
    )
    return {
        "nDCG@10": evaluate(run, qrels, ["nDCG@10"])["nDCG@10"],
        "recall@10": recall,
        "p50_ms": 1000 * float(np.percentile(singles, 50)),
        "p99_ms": 1000 * float(np.percentile(singles, 99)),
        "batch_ms_per_query": 1000 * batch,
        "top10": top10,
    }


def side_by_side(name: str, family: str, aggregation: str, docs: Encoded, doc_ids: list[str], queries: Encoded,
                 query_ids: list[str], qrels, specs: list[str]) -> list[dict]:  # fmt: skip
    """The family's exact index, then each Qdrant spec, over the same vectors."""
    rows, truth = [], None
    for spec in [None, *specs]:
        start = time.perf_counter()
        if spec is not None:
            index = QdrantIndex.build(docs, doc_ids, spec, aggregation=aggregation)
            index.search(query_row(queries, 0), 1)  # the shard is written (and its HNSW graph built) here
        elif family == "multi-vector":
            index = MultiVectorIndex.build(docs, doc_ids, "exact", aggregation=aggregation)
        else:
            index = SparseIndex.build(docs, doc_ids) if family == "sparse" else DenseIndex.build(docs, doc_ids)
        built = time.perf_counter() - start
        result = measure(index, queries, query_ids, qrels, truth)
        truth = truth or result["top10"]
        row = {"model": name, "family": family, "index": spec or "exact", "build_s": built}
        rows.append(row | {key: value for key, value in result.items() if key != "top10"})
        print(json.dumps(rows[-1]), flush=True)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="*", default=[], help="exported bi-encoders (model directories)")
    parser.add_argument(
        "--vectors", help="multi-vector SciFact encodings kept by bench_indexes.py --scale scifact-real (its folder)"
    )
    parser.add_argument("--data", default="../shared/data/scifact")
    parser.add_argument("--specs", nargs="+", default=["qdrant"], help="Qdrant index specs")
    parser.add_argument("--work", default="bench-results/qdrant-work", help="where encodings are kept")
    parser.add_argument("--output", default="bench-results/qdrant.json")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    qrels = read_qrels_spec(args.data, "test")
    rows = []
    if args.vectors:
        folder = Path(args.vectors)
        meta = json.loads((folder / "meta.json").read_text())
        load = lambda name: np.load(folder / name, mmap_mode="r")  # noqa: E731
        docs = MultiVectors(load("doc_vectors.npy"), np.asarray(load("doc_offsets.npy")))
        queries = MultiVectors(np.asarray(load("query_vectors.npy"), np.float32), np.asarray(load("query_offsets.npy")))
        name = meta["model"]["model"]
        rows += side_by_side(name, "multi-vector", meta["aggregation"], docs, meta["doc_ids"], queries,
                             meta["query_ids"], qrels, args.specs)  # fmt: skip
    if args.model:
        corpus = [(doc_id, text) for doc_id, text in iter_docs(args.data) if text.strip()]
        texts = read_queries(args.data, "test")
        query_ids = list(texts)
    for model in args.model:
        engine = OnnxEngine(model)
        name = Path(model).name
        docs = encoded(engine, [t for _, t in corpus], work / f"{name}-docs.npz", queries=False)
        queries = encoded(engine, [texts[q] for q in query_ids], work / f"{name}-queries.npz", True)
        aggregation = engine.aggregation or "sum"
        rows += side_by_side(name, engine.family, aggregation, docs, [d for d, _ in corpus], queries, query_ids,
                             qrels, args.specs)  # fmt: skip
    print("\n| model | family | index | build s | nDCG@10 | recall@10 | p50 ms | p99 ms | batch ms/q |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['family']} | {r['index']} | {r['build_s']:.1f} | {r['nDCG@10']:.4f} | "
            f"{r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['batch_ms_per_query']:.2f} |"
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
