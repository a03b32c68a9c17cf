"""Re-ranking benchmark, one run: TREC DL 2019's BM25 top-100 re-ranked by PyTorch eager, the embedded engine
and Triton, for the MiniLM bi-encoder export and a cross-encoder on MiniLM weights.

Per-query latency (p50/p95 of re-ranking one query's 100 candidates, one call per query) and its pairs/s;
the throughput of one embedded `rerank_run` call over all queries (batched across queries and candidates). The
cross-encoder is all-MiniLM-L6-v2 with a seeded random head (tests/cross_builders.py), exported here: its
speed is that of any MiniLM-L6 cross-encoder, its nDCG@10 is meaningless. Starts a local Triton on free
ports. Writes bench-results/rerank.json and rerank.png.

    python benchmarks/bench_rerank.py --bi-encoder model_repository/minilm --data ../shared/data/trec-dl-2019
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lir.clients.onnx_engine import OnnxEngine
from lir.clients.reranker import Reranker
from lir.clients.triton_engine import TritonEngine
from lir.collections import Candidates, read_candidates
from lir.metrics import evaluate
from lir.serving.server import TritonServer, free_port
from lir.trec import read_qrels

REPO = Path(__file__).resolve().parents[1]
Rerank = Callable[[str, Sequence[str]], object]


@dataclass
class Workload:
    """The queries, their candidates (best first), the qrels and the batch size of every system."""

    queries: dict[str, str]
    candidates: Candidates
    qrels: dict
    batch_size: int

    @property
    def pairs(self) -> int:
        return sum(len(found) for found in self.candidates.values())


def per_query(rerank: Rerank, work: Workload) -> dict[str, float]:
    """Latency of re-ranking each query's candidates in one call, after one warm-up query."""
    texts = {qid: [text for _, text in found] for qid, found in work.candidates.items()}
    first = next(iter(texts))
    rerank(work.queries[first], texts[first])
    times = []
    for qid, found in texts.items():
        start = time.perf_counter()
        rerank(work.queries[qid], found)
        times.append(time.perf_counter() - start)
    return {
        "p50_ms": float(1000 * np.percentile(times, 50)),
        "p95_ms": float(1000 * np.percentile(times, 95)),
        "pairs_per_s": work.pairs / sum(times),
    }


def batched(reranker: Reranker, work: Workload) -> dict[str, float]:
    """Throughput of one `rerank_run` over all queries, and the run's nDCG@10."""
    start = time.perf_counter()
    run = reranker.rerank_run(work.queries, work.candidates)
    seconds = time.perf_counter() - start
    return {"pairs_per_s": work.pairs / seconds, "nDCG@10": evaluate(run, work.qrels, ["nDCG@10"])["nDCG@10"]}


def cross_encoder_export(checkpoint: str | None, scifact: Path, scratch: Path) -> tuple[Path, Path]:
    """The cross-encoder checkpoint (default: MiniLM with a random head, built here) and its export."""
    if checkpoint is None:
        sys.path.insert(0, str(REPO))  # the builders live with the tests
        from tests.cross_builders import minilm_cross_encoder_dir

        checkpoint = str(minilm_cross_encoder_dir(scratch / "minilm-cross-checkpoint"))
    from lir.export.bundle import export_model

    repository = scratch / "repository"
    repository.mkdir()
    print("exporting the cross-encoder …")
    return Path(checkpoint), export_model(checkpoint, repository, "minilm-cross", parity_data=str(scifact), log=print)


def measure(name: str, torch_module, directory: Path, server: TritonServer, work: Workload) -> dict:
    """Every system on one model, one query per call: PyTorch eager, embedded onnxruntime and Triton gRPC
    (text); then the embedded engine on all queries in one call."""
    print(f"{name}: PyTorch eager …")
    found = {"PyTorch eager": per_query(lambda q, texts: torch_module.score(q, texts, work.batch_size), work)}
    embedded = Reranker(OnnxEngine(directory), batch_size=work.batch_size)
    print(f"{name}: embedded onnxruntime …")
    found["embedded onnxruntime"] = per_query(embedded.rerank, work)
    with TritonEngine(server.grpc_url, directory.name) as engine:
        print(f"{name}: Triton gRPC …")
        found["Triton gRPC (text)"] = per_query(Reranker(engine, batch_size=work.batch_size).rerank, work)
    print(f"{name}: embedded onnxruntime, all queries in one call …")
    return {"per_query": found, "all_queries": {"embedded onnxruntime": batched(embedded, work)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bi-encoder", default="model_repository/minilm", help="exported bi-encoder directory")
    parser.add_argument(
        "--bi-checkpoint", default="sentence-transformers/all-MiniLM-L6-v2", help="its checkpoint (PyTorch)"
    )
    parser.add_argument("--cross-checkpoint", help="cross-encoder checkpoint (default: MiniLM, random head)")
    parser.add_argument("--data", default="../shared/data/trec-dl-2019", help="TREC DL 2019 folder")
    parser.add_argument("--scifact", default="../shared/data/scifact", help="SciFact (export parity probes)")
    parser.add_argument("--queries", type=int, default=43, help="DL19 queries (default: all %(default)s)")
    parser.add_argument("--depth", type=int, default=100, help="candidates per query (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts or pairs per batch (default: %(default)s)")
    parser.add_argument("--output", default="bench-results", help="folder for the JSON and PNG results")
    args = parser.parse_args()

    from lir.train.cross_module import CrossEncoderModule
    from lir.train.module import BiEncoderModule

    data = Path(args.data)
    all_queries, all_candidates = read_candidates(data / "bm25_top100_dl19.candidates.tsv")
    candidates = {qid: found[: args.depth] for qid, found in list(all_candidates.items())[: args.queries]}
    qrels = read_qrels(data / "qrels.dl19-passage.txt")
    work = Workload(
        {qid: all_queries[qid] for qid in candidates},
        candidates,
        {qid: judged for qid, judged in qrels.items() if qid in candidates},
        args.batch_size,
    )
    bi_encoder = Path(args.bi_encoder).resolve()
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        scratch = Path(tmp)
        cross_checkpoint, cross_encoder = cross_encoder_export(args.cross_checkpoint, Path(args.scifact), scratch)
        served = scratch / "served"
        for source in (bi_encoder, bi_encoder.parent / f"{bi_encoder.name}.encoder", *cross_encoder.parent.iterdir()):
            shutil.copytree(source, served / source.name, symlinks=True)
        server = TritonServer(served, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
        server.start()
        try:
            results = {
                "bi-encoder": measure(bi_encoder.name, BiEncoderModule(args.bi_checkpoint), bi_encoder, server, work),
                "cross-encoder": measure(
                    cross_encoder.name, CrossEncoderModule(str(cross_checkpoint)), cross_encoder, server, work
                ),
            }
        finally:
            server.stop()

    print(f"\n{len(candidates)} DL19 queries x {args.depth} BM25 candidates ({work.pairs} pairs), CPU, Triton 2.51")
    print(
        f"{'model':<14} {'system':<22} {'p50 ms':>8} {'p95 ms':>8} {'pairs/s':>8} {'all-q pairs/s':>14} {'nDCG@10':>8}"
    )
    for model, found in results.items():
        for system, r in found["per_query"].items():
            together = found["all_queries"].get(system)
            tail = (
                f"{together['pairs_per_s']:>14.1f} {together['nDCG@10']:>8.4f}" if together else f"{'-':>14} {'-':>8}"
            )
            print(f"{model:<14} {system:<22} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['pairs_per_s']:>8.1f} {tail}")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"queries": len(candidates), "depth": args.depth, "batch_size": args.batch_size, **results}
    (out / "rerank.json").write_text(json.dumps(summary, indent=2))
    plot(results, out / "rerank.png", len(candidates), args.depth)
    print(f"wrote {out / 'rerank.json'} and {out / 'rerank.png'}")


def plot(results: dict, path: Path, queries: int, depth: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    labels, p50, p95, rates, together = [], [], [], [], []
    for model, found in results.items():
        for system, r in found["per_query"].items():
            labels.append(f"{model}: {system}")
            p50.append(r["p50_ms"])
            p95.append(r["p95_ms"])
            rates.append(r["pairs_per_s"])
            together.append(found["all_queries"].get(system, {}).get("pairs_per_s", 0.0))
    axes[0].barh(labels, p50, color="tab:orange", label="p50")
    axes[0].barh(labels, np.subtract(p95, p50), left=p50, color="tab:red", alpha=0.4, label="p95")
    axes[0].set_xlabel(f"latency of one query's {depth} candidates (ms, lower is better)")
    axes[0].legend()
    y = np.arange(len(labels))
    axes[1].barh(y - 0.2, rates, height=0.4, color="tab:blue", label="one query per call")
    axes[1].barh(y + 0.2, together, height=0.4, color="tab:green", label="all queries in one call")
    axes[1].set_yticks(y, [""] * len(labels))
    axes[1].set_xlabel("pairs per second (higher is better)")
    axes[1].legend()
    fig.suptitle(f"Re-ranking TREC DL 2019 BM25 top-{depth} ({queries} queries): PyTorch eager vs lir (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
