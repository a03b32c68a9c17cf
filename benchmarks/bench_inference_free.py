"""Query latency of inference-free sparse retrieval against a SPLADE query encoder, side by side in one run.

Two exports of one SPLADE model on all-MiniLM-L6-v2 (a fresh MLM head: latency does not depend on training):
contextualized queries (the query graph runs the model) and static query weights (Lightning IR's
inference-free layout; here each term weighs its SciFact idf), so queries need only the tokenizer and the
table. Each SciFact test query is encoded alone by the embedded engine; the table gives p50/p95 ms.

    python benchmarks/bench_inference_free.py --data ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from lir.clients.onnx_engine import OnnxEngine
from lir.collections import iter_docs, read_queries
from lir.errors import run_command

BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"


def checkpoints(work: Path, corpus: list[str]) -> dict[str, Path]:
    """A Lightning IR SPLADE checkpoint, and the same with static (idf) query weights."""
    import torch
    from safetensors.torch import load_file, save_file

    from lir.train.initialize import initialize
    from lir.train.saving import save_lightning_ir

    torch.manual_seed(0)
    loaded = initialize(BACKBONE, {"model_type": "splade"})
    contextualized = save_lightning_ir(loaded.model, loaded.tokenizer, work / "splade")
    static = Path(shutil.copytree(contextualized, work / "splade-inference-free"))
    config = json.loads((static / "config.json").read_text())
    config |= {"query_weighting": "static", "query_expansion": False}
    (static / "config.json").write_text(json.dumps(config))
    vocabulary = loaded.model.embedding_dim
    counts = np.zeros(vocabulary)
    for encoding in loaded.tokenizer.encode_batch(corpus, add_special_tokens=False):
        counts[np.unique(encoding.ids)] += 1
    idf = np.log((len(corpus) + 1) / (counts + 1)).astype(np.float32)
    tensors = load_file(str(static / "model.safetensors"))
    tensors["query_weights.weight"] = torch.from_numpy(idf)[:, None]
    save_file(tensors, str(static / "model.safetensors"))
    return {"SPLADE query graph": contextualized, "inference-free (static table)": static}


def latencies(engine: OnnxEngine, queries: list[str]) -> list[float]:
    """Milliseconds per query, each encoded alone (after 5 warm-up queries)."""
    for query in queries[:5]:
        engine.encode([query], "query")
    found = []
    for query in queries:
        start = time.perf_counter()
        engine.encode([query], "query")
        found.append((time.perf_counter() - start) * 1000)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/scifact", help="SciFact folder (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default: %(default)s)")
    parser.add_argument("--output", default="bench-results/inference_free.json", help="JSON results file")
    args = parser.parse_args(argv)

    def body() -> None:
        from lir.export.bundle import export_model

        corpus = [text for _, text in iter_docs(args.data)]
        queries = list(read_queries(args.data, "test").values())
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for label, checkpoint in checkpoints(work, corpus).items():
                directory = export_model(str(checkpoint), work / "repo", checkpoint.name, parity_data=args.data)
                engine = OnnxEngine(directory, threads=args.threads)
                found = latencies(engine, queries)
                rows.append(
                    {
                        "encoder": label,
                        "graphs": sorted(engine.manifest.encoders.values()),
                        "p50_ms": round(statistics.median(found), 3),
                        "p95_ms": round(float(np.percentile(found, 95)), 3),
                        "queries": len(found),
                    }
                )
        print(f"{'query encoder':32} {'p50 ms':>8} {'p95 ms':>8}   (SciFact test, one query at a time)")
        for row in rows:
            print(f"{row['encoder']:32} {row['p50_ms']:8.3f} {row['p95_ms']:8.3f}")
        print(f"speed-up at p50: {rows[0]['p50_ms'] / rows[1]['p50_ms']:.0f}x")
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")

    return run_command("bench_inference_free", body)


if __name__ == "__main__":
    raise SystemExit(main())
