"""`lir index`, `lir search`, `lir evaluate`: the embedded path from texts to a TREC run and its scores."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lir.clients.engines import open_engine
from lir.clients.indexes import open_index
from lir.clients.retriever import Retriever, write_index
from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.errors import LirError
from lir.metrics import DEFAULT_MEASURES, evaluate, format_table
from lir.trec import read_run, write_run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the client subcommands to the `lir` parser."""
    index = sub.add_parser(
        "index",
        help="encode a corpus and write an index",
        description="Encode a corpus with an exported model and write the index of its family: a Faiss index "
        "(single-vector), token vectors (multi-vector) or an inverted index (sparse).",
    )
    engine_options(index, required=True)
    index.add_argument("--corpus", required=True, help="BEIR folder, .jsonl, .tsv (id<TAB>text), or an ir_datasets id")
    index.add_argument("--output", required=True, help="index folder to write")
    index.add_argument(
        "--factory",
        help="index spec: a Faiss factory string for single-vector models (default Flat, exact); for multi-vector "
        "models exact (default) or a Faiss factory over token vectors for candidates (e.g. IVF1024,Flat); for "
        "sparse models the impact precision float32 (default, exact), float16 or uint8",
    )
    index.add_argument("--overwrite", action="store_true", help="replace an existing index")
    index.set_defaults(handler=run_index)

    search = sub.add_parser(
        "search",
        help="search an index and write a TREC run",
        description="Encode queries, search an index written by `lir index`, write a TREC run file.",
    )
    engine_options(search, required=False)
    search.add_argument("--index", required=True, help="index folder written by `lir index`")
    search.add_argument("--queries", required=True, help="BEIR folder, .jsonl, .tsv, or an ir_datasets id")
    search.add_argument("--split", help="with a BEIR folder: keep the queries judged in this split (e.g. test)")
    search.add_argument("--output", required=True, help="TREC run file to write")
    search.add_argument("-k", "--k", type=int, default=100, help="documents per query (default: %(default)s)")
    search.add_argument(
        "--search-params",
        help="search parameters, e.g. nprobe=16 or efSearch=128 (Faiss); multi-vector also token_k=…,candidates=…",
    )
    search.set_defaults(handler=run_search)

    evaluation = sub.add_parser(
        "evaluate", help="score a TREC run against qrels", description="Evaluate a TREC run with ir_measures."
    )
    evaluation.add_argument("--run", required=True, help="TREC run file")
    evaluation.add_argument("--qrels", required=True, help="qrels file, BEIR folder (+ --split), or ir_datasets id")
    evaluation.add_argument("--split", help="with a BEIR folder: the qrels split (e.g. test)")
    evaluation.add_argument(
        "--metrics", nargs="+", default=list(DEFAULT_MEASURES), help="ir_measures strings (default: %(default)s)"
    )
    evaluation.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluation.set_defaults(handler=run_evaluate)


def engine_options(parser: argparse.ArgumentParser, required: bool) -> None:
    """--engine, --variant, --device and --batch-size."""
    parser.add_argument(
        "--engine",
        required=required,
        help="onnx:MODEL_DIR or MODEL_DIR (embedded onnxruntime), triton://HOST:PORT/MODEL (gRPC) or "
        "triton+http://HOST:PORT/MODEL" + ("" if required else "; default: the model that built the index"),
    )
    parser.add_argument(
        "--variant", default="fp32", choices=("fp32", "int8", "fp16"), help="graph variant (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per batch (default: %(default)s)")


def run_index(args: argparse.Namespace) -> int:
    if Path(args.output).exists() and not args.overwrite:
        raise LirError(f"{args.output} already exists (pass --overwrite to replace it)")
    docs = list(iter_docs(args.corpus))
    if not docs:
        raise LirError(f"{args.corpus} holds no documents")
    with open_engine(args.engine, args.variant, args.device) as engine:
        directory = str(engine.directory.resolve()) if engine.directory else None
        built_by = {"url": args.engine, "directory": directory, "variant": args.variant}
        print(write_index(engine, docs, args.output, built_by, args.factory, args.overwrite, args.batch_size))
    return 0


def run_search(args: argparse.Namespace) -> int:
    index = open_index(args.index)
    if args.search_params:
        index.set_search_parameters(args.search_params)
    built_by = index.info.get("engine", {})
    url = args.engine or built_by.get("directory") or built_by.get("url")
    if not url:
        raise LirError(f"{args.index} does not record its model: pass --engine")
    queries = read_queries(args.queries, args.split)
    if not queries:
        raise LirError(f"{args.queries} holds no queries" + (f" for split {args.split}" if args.split else ""))
    with open_engine(url, args.variant, args.device) as engine:
        retriever = Retriever(engine, index)
        start = time.perf_counter()
        run = retriever.search(queries, k=args.k, batch_size=args.batch_size)
        seconds = time.perf_counter() - start
    write_run(args.output, run, system=index.info.get("model", {}).get("model", "lir"))
    print(
        f"searched {len(queries)} queries in {seconds:.2f} s ({1000 * seconds / len(queries):.2f} ms/query) "
        f"→ {args.output}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    results = evaluate(read_run(args.run), read_qrels_spec(args.qrels, args.split), args.metrics)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(format_table(results))
    return 0
