"""Encoder benchmark, one run, same model and SciFact texts for every system.

Index throughput (docs/s) and single-query latency (encode + exact search, p50/p99) of the embedded
engine (fp32, int8) against PyTorch eager (sentence-transformers, and lir's own PyTorch model).
Prints a table with ratios, writes bench-results/encoders.json and encoders.png.

    python benchmarks/bench_encoders.py --model model_repository/minilm --data ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from lir.clients.dense_index import DenseIndex
from lir.clients.onnx_engine import OnnxEngine
from lir.collections import iter_docs, read_queries
from lir.manifest import load_manifest


def sample_texts(data: Path, n_docs: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    docs = [text for _, text in iter_docs(str(data))]
    rng = np.random.default_rng(seed)
    picked = [docs[i] for i in sorted(rng.choice(len(docs), min(n_docs, len(docs)), replace=False))]
    queries = list(read_queries(str(data), "test").values())[:n_queries]
    return picked, queries


def measure(encode_docs, encode_query, docs: list[str], queries: list[str]) -> dict[str, float]:
    encode_query(queries[0])  # warm up
    start = time.perf_counter()
    doc_vectors = np.asarray(encode_docs(docs), dtype=np.float32)
    seconds = time.perf_counter() - start
    index = DenseIndex.build(doc_vectors, [str(i) for i in range(len(docs))])
    latencies = []
    for query in queries:
        start = time.perf_counter()
        index.search(np.asarray(encode_query(query), dtype=np.float32).reshape(1, -1), k=10)
        latencies.append(1000 * (time.perf_counter() - start))
    return {
        "docs_per_s": len(docs) / seconds,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
    }


def torch_systems(model_dir: Path, threads: int):
    import torch

    from lir.train import BiEncoderModule

    torch.set_num_threads(threads)
    manifest = load_manifest(model_dir)
    source = manifest.provenance["source"]
    systems = {}
    try:
        from sentence_transformers import SentenceTransformer

        from lir.train.hub import resolve_model_path

        st = SentenceTransformer(str(resolve_model_path(source)), device="cpu")
        st.max_seq_length = manifest.doc.max_length
        systems["PyTorch eager (sentence-transformers)"] = (
            lambda texts: st.encode(texts, batch_size=32, normalize_embeddings=True),
            lambda text: st.encode([text], normalize_embeddings=True)[0],
        )
    except Exception as exc:  # a checkpoint sentence-transformers cannot read: lir's PyTorch model only
        print(f"sentence-transformers skipped: {exc}")
    module = BiEncoderModule(source)

    def lir_docs(texts):
        order = np.argsort([-len(t) for t in texts])
        out = np.empty((len(texts), module.model.embedding_dim), np.float32)
        out[order] = module.encode([texts[i] for i in order], "doc", batch_size=32)
        return out

    systems["PyTorch eager (lir.train)"] = (lir_docs, lambda text: module.encode([text], "query")[0])
    return systems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model_repository/minilm", help="exported model directory")
    parser.add_argument("--data", default="../shared/data/scifact", help="SciFact folder")
    parser.add_argument("--docs", type=int, default=1000, help="documents to encode (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=100, help="single queries to time (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench-results", help="folder for the JSON and PNG results")
    args = parser.parse_args()

    model_dir = Path(args.model)
    docs, queries = sample_texts(Path(args.data), args.docs, args.queries, args.seed)
    manifest = load_manifest(model_dir)
    variants = list(manifest.graphs[manifest.encoders["doc"]].variants)
    systems = torch_systems(model_dir, args.threads)
    for variant in (v for v in ("fp32", "int8") if v in variants):
        engine = OnnxEngine(model_dir, variant=variant, threads=args.threads)
        systems[f"lir embedded onnxruntime {variant}"] = (
            engine.encode_docs,
            lambda text, e=engine: e.encode_queries([text])[0],
        )
    results = {}
    for name, (encode_docs, encode_query) in systems.items():
        print(f"measuring {name} ...", flush=True)
        results[name] = measure(encode_docs, encode_query, docs, queries)

    baseline = results[next(iter(results))]
    header = f"{'system':<40} {'docs/s':>8} {'x':>6} {'p50 ms':>8} {'p99 ms':>8} {'x p50':>6}"
    print(
        f"\n{manifest.name}: {len(docs)} SciFact docs (max length {manifest.doc.max_length}), "
        f"{len(queries)} single queries, {args.threads} threads, {platform.processor() or platform.machine()}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<40} {r['docs_per_s']:>8.1f} {r['docs_per_s'] / baseline['docs_per_s']:>6.2f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {baseline['p50_ms'] / r['p50_ms']:>6.2f}"
        )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoders.json").write_text(
        json.dumps(
            {
                "model": manifest.name,
                "docs": len(docs),
                "queries": len(queries),
                "threads": args.threads,
                "results": results,
            },
            indent=2,
        )
    )
    plot(results, out / "encoders.png", f"{manifest.name}, {len(docs)} SciFact docs, {args.threads} threads")
    print(f"\nwrote {out / 'encoders.json'} and {out / 'encoders.png'}")


def plot(results: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    axes[0].barh(names, [results[n]["docs_per_s"] for n in names], color="tab:blue")
    axes[0].set_xlabel("index throughput (docs/s, higher is better)")
    axes[1].barh(names, [results[n]["p50_ms"] for n in names], color="tab:orange")
    axes[1].set_xlabel("one query, encode + exact search (p50 ms, lower is better)")
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
