"""Serving benchmark, one run: the embedded engine against Triton (gRPC, HTTP) on the same queries.

Single-query latency (p50/p99) of embedded, Triton gRPC text/ids and Triton HTTP text; query
throughput with 1, 4 and 16 concurrent clients (one query per request) against in-process batched
encoding. Starts a local Triton on free ports. Writes bench-results/serving.json and serving.png.

    python benchmarks/bench_serving.py --model model_repository/minilm --data ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from pathlib import Path

import numpy as np

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.triton_engine import TritonEngine
from lir.collections import read_queries
from lir.serving.server import TritonServer, free_port


def latencies(encode, queries: list[str]) -> dict[str, float]:
    encode(queries[0])
    times = []
    for query in queries:
        start = time.perf_counter()
        encode(query)
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def concurrent_throughput(url: str, model: str, queries: list[str], clients: int) -> float:
    """Queries per second with `clients` threads, each sending one query per request."""
    work: queue.Queue[str] = queue.Queue()
    for query in queries:
        work.put(query)
    engines = [TritonEngine(url, model) for _ in range(clients)]

    def client(engine: TritonEngine) -> None:
        while True:
            try:
                query = work.get_nowait()
            except queue.Empty:
                return
            engine.encode_queries([query])

    threads = [threading.Thread(target=client, args=(e,)) for e in engines]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    for engine in engines:
        engine.close()
    return len(queries) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model_repository/minilm", help="exported model directory")
    parser.add_argument("--data", default="../shared/data/scifact", help="SciFact folder")
    parser.add_argument("--queries", type=int, default=300, help="queries to send (default: %(default)s)")
    parser.add_argument("--output", default="bench-results", help="folder for the JSON and PNG results")
    args = parser.parse_args()

    model_dir = Path(args.model).resolve()
    queries = list(read_queries(args.data, "test").values())[: args.queries]
    embedded = OnnxEngine(model_dir)
    server = TritonServer(model_dir.parent, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    server.start()
    try:
        grpc_text = TritonEngine(server.grpc_url, model_dir.name)
        grpc_ids = TritonEngine(server.grpc_url, model_dir.name, mode="ids", model_dir=model_dir)
        http_text = TritonEngine(server.http_url, model_dir.name, protocol="http")
        latency = {
            "embedded onnxruntime": latencies(lambda q: embedded.encode_queries([q]), queries),
            "Triton gRPC, text": latencies(lambda q: grpc_text.encode_queries([q]), queries),
            "Triton gRPC, token ids": latencies(lambda q: grpc_ids.encode_queries([q]), queries),
            "Triton HTTP, text": latencies(lambda q: http_text.encode_queries([q]), queries),
        }
        start = time.perf_counter()
        embedded.encode_queries(queries, batch_size=32)
        batched = len(queries) / (time.perf_counter() - start)
        throughput = {
            f"Triton gRPC, {n} clients": concurrent_throughput(server.grpc_url, model_dir.name, queries, n)
            for n in (1, 4, 16)
        }
        stats = server.statistics(model_dir.name)["model_stats"][0]
    finally:
        server.stop()

    base = latency["embedded onnxruntime"]["p50_ms"]
    print(f"\n{model_dir.name}: {len(queries)} SciFact test queries, one per request, local Triton 2.51 (CPU)")
    print(f"{'single query':<28} {'p50 ms':>8} {'p99 ms':>8} {'+ms p50':>8}")
    for name, r in latency.items():
        print(f"{name:<28} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['p50_ms'] - base:>8.2f}")
    print(f"\n{'throughput':<28} {'q/s':>8} {'x batched':>10}")
    print(f"{'embedded, batched (32)':<28} {batched:>8.1f} {1.0:>10.2f}")
    for name, qps in throughput.items():
        print(f"{name:<28} {qps:>8.1f} {qps / batched:>10.2f}")
    print(f"\ntext endpoint: {stats['inference_count']} inferences in {stats['execution_count']} executions")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "latency": latency,
        "batched_qps": batched,
        "throughput_qps": throughput,
        "inference_count": stats["inference_count"],
        "execution_count": stats["execution_count"],
    }
    (out / "serving.json").write_text(json.dumps(results, indent=2))
    plot(latency, batched, throughput, out / "serving.png", model_dir.name)
    print(f"wrote {out / 'serving.json'} and {out / 'serving.png'}")


def plot(latency: dict, batched: float, throughput: dict, path: Path, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    names = list(latency)
    axes[0].barh(names, [latency[n]["p50_ms"] for n in names], color="tab:orange", label="p50")
    axes[0].barh(
        names,
        [latency[n]["p99_ms"] - latency[n]["p50_ms"] for n in names],
        left=[latency[n]["p50_ms"] for n in names],
        color="tab:red",
        alpha=0.4,
        label="p99",
    )
    axes[0].set_xlabel("single query latency (ms, lower is better)")
    axes[0].legend()
    labels = ["embedded, batched", *throughput]
    axes[1].barh(labels, [batched, *throughput.values()], color="tab:blue")
    axes[1].set_xlabel("queries per second (higher is better)")
    fig.suptitle(f"{name}: embedded vs Triton (local, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
