"""Search on the server, one query per call: `TritonRetriever` (gRPC, HTTP) against the in-process `Retriever`.

The demo's MiniLM export and SciFact index (`make demo`: model_repository/minilm, indexes/scifact-minilm;
built here with the lir CLI when missing or stale), a local Triton that serves the index as the search model
`<index name>.search`, and the SciFact test queries sent one at a time: p50/p95 latency of each path and the
server's own stage times. Prints a Markdown table, writes bench-results/serving-search.json.

    python benchmarks/bench_serving_search.py --model model_repository/minilm --index indexes/scifact-minilm \
        --data ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lir.clients.indexes import open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, check_model
from lir.clients.triton_retriever import TritonRetriever
from lir.collections import read_queries
from lir.errors import LirError
from lir.manifest import load_manifest
from lir.serving.searches import SearchSpec
from lir.serving.server import TritonServer, free_port
from lir.trec import Run

CHECKPOINT = "sentence-transformers/all-MiniLM-L6-v2"


def ensure_demo(model: Path, index: Path, data: str) -> None:
    """The export and the index as `make demo` writes them, (re)built with the lir CLI when missing or stale."""
    try:
        fingerprint = load_manifest(model).fingerprint
    except LirError as exc:
        print(f"{model}: {exc}: exporting {CHECKPOINT}", flush=True)
        lir(
            "lir.export.cli",
            "--model",
            CHECKPOINT,
            "--name",
            model.name,
            "--output",
            str(model.parent),
            "--int8",
            "--overwrite",
        )
        fingerprint = load_manifest(model).fingerprint
    try:
        check_model(open_index(index).info.get("model"), fingerprint)
    except LirError as exc:
        print(f"{index}: {exc}: indexing {data}", flush=True)
        lir("lir.cli", "index", "--engine", f"onnx:{model}", "--corpus", data, "--output", str(index), "--overwrite")


def lir(module: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", module, *args], check=True)


def latencies(search: Callable[[dict[str, str]], Run], queries: dict[str, str]) -> tuple[dict[str, float], Run]:
    """p50/p95 ms of `search` on each query alone (after one warm-up call), and the run it returned."""
    search(dict(list(queries.items())[:1]))
    times, run = [], {}
    for qid, text in queries.items():
        start = time.perf_counter()
        run |= search({qid: text})
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}, run


def recorded(triton: TritonRetriever, k: int, stages: dict[str, list[float]]) -> Callable[[dict[str, str]], Run]:
    """`triton.search` that appends the server's stage times of each call to `stages`, and the rest of the
    round trip (queueing, transport, the python backend's IPC) as `other_ms`."""

    def search(queries: dict[str, str]) -> Run:
        found = triton.search(queries, k=k)
        timings = dict(triton.timings)
        timings["other_ms"] = timings.pop("total_ms") - sum(timings.values())
        for stage, ms in timings.items():
            stages.setdefault(stage, []).append(ms)
        return found

    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model_repository/minilm", help="exported model directory")
    parser.add_argument("--index", default="indexes/scifact-minilm", help="its SciFact index")
    parser.add_argument("--data", default="../shared/data/scifact", help="SciFact folder")
    parser.add_argument("--queries", type=int, default=300, help="test queries to send (default: %(default)s)")
    parser.add_argument("-k", type=int, default=100, help="documents per query (default: %(default)s)")
    parser.add_argument("--output", default="bench-results", help="folder for the JSON results")
    args = parser.parse_args()

    model, index = Path(args.model).resolve(), Path(args.index).resolve()
    ensure_demo(model, index, args.data)
    queries = dict(list(read_queries(args.data, "test").items())[: args.queries])
    retriever = Retriever(OnnxEngine(model), open_index(index))
    spec = SearchSpec.parse(str(index))
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(model.parent, **ports, searches=[spec]).start()
    stages: dict[str, dict[str, list[float]]] = {}
    latency: dict[str, dict[str, float]] = {}
    runs: dict[str, Run] = {}
    try:
        latency["in-process Retriever"], expected = latencies(lambda q: retriever.search(q, k=args.k), queries)
        for protocol, url in (("gRPC", server.grpc_url), ("HTTP", server.http_url)):
            with TritonRetriever(url, spec.model, protocol.lower()) as triton:
                search = recorded(triton, args.k, stages.setdefault(protocol, {}))
                latency[f"TritonRetriever {protocol}"], runs[protocol] = latencies(search, queries)
    finally:
        server.stop()

    identical = {name: sum(list(run[q]) == list(docs) for q, docs in expected.items()) for name, run in runs.items()}
    round_trip = {
        f"{protocol} {stage}": float(np.percentile(values, 50))
        for protocol, found in stages.items()
        for stage, values in found.items()
    }
    base = latency["in-process Retriever"]["p50_ms"]
    print(f"\n{model.name} on {index.name}: {len(queries)} SciFact test queries, one per call, k={args.k}, CPU")
    print("\n| path | p50 ms | p95 ms | + p50 ms |\n|---|---:|---:|---:|")
    for name, found in latency.items():
        print(f"| {name} | {found['p50_ms']:.2f} | {found['p95_ms']:.2f} | {found['p50_ms'] - base:+.2f} |")
    print("\n| round trip (p50) | ms |\n|---|---:|")
    for name, ms in round_trip.items():
        print(f"| {name} | {ms:.2f} |")
    print(f"\nrankings identical to the in-process Retriever: {identical} of {len(queries)}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "model": model.name,
        "index": index.name,
        "queries": len(queries),
        "k": args.k,
        "latency": latency,
        "round_trip_p50_ms": round_trip,
        "identical_rankings": identical,
    }
    (out / "serving-search.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out / 'serving-search.json'}")


if __name__ == "__main__":
    main()
