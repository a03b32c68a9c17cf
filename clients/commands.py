"""`lir index`, `lir search`, `lir evaluate`: the embedded path from texts to a TREC run and its scores."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lir.clients.engine import Engine
from lir.clients.engines import open_engine
from lir.clients.indexes import check_index_output, open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.retriever import Retriever, write_index
from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.errors import LirError
from lir.files import check_not_an_input, check_output_file
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
    search.add_argument("-k", "--k", type=positive, default=100, help="documents per query (default: %(default)s)")
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


def positive(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def engine_options(parser: argparse.ArgumentParser, required: bool) -> None:
    """--engine, --variant, --device and --batch-size."""
    parser.add_argument(
        "--engine",
        required=required,
        help="onnx:MODEL_DIR or MODEL_DIR (embedded onnxruntime), triton://HOST:PORT/MODEL (gRPC) or "
        "triton+http://HOST:PORT/MODEL"
        + ("" if required else "; default: the local model directory that built the index (never a server)"),
    )
    parser.add_argument(
        "--variant",
        choices=("fp32", "int8", "fp16"),
        help="graph variant (default: " + ("fp32)" if required else "the one that built the index)"),
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="default: %(default)s")
    parser.add_argument("--batch-size", type=positive, default=32, help="texts per batch (default: %(default)s)")


def run_index(args: argparse.Namespace) -> int:
    check_index_output(args.output, args.overwrite, [args.corpus])
    variant = args.variant or "fp32"
    with open_engine(args.engine, variant, args.device) as engine:
        docs = list(iter_docs(args.corpus))
        if not docs:
            raise LirError(f"{args.corpus} holds no documents")
        directory = str(engine.directory.resolve()) if engine.directory else None
        built_by = {"url": args.engine, "directory": directory, "variant": variant}
        print(write_index(engine, docs, args.output, built_by, args.factory, args.overwrite, args.batch_size))
    return 0


def run_search(args: argparse.Namespace) -> int:
    check_output_file(args.output)
    check_not_an_input(args.output, [args.queries])
    index = open_index(args.index)
    if args.search_params:
        index.set_search_parameters(args.search_params)
    built_by = index.info.get("engine") or {}
    variant = index_variant(built_by, args.variant)
    queries = read_queries(args.queries, args.split)
    if not queries:
        raise LirError(f"{args.queries} holds no queries" + (f" for split {args.split}" if args.split else ""))
    with index_engine(args.index, built_by, args.engine, variant, args.device) as engine:
        check_doc_graph(built_by, variant, engine)
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


def index_variant(built_by: dict, asked: str | None) -> str:
    """The variant that searches an index: the one that built it unless asked otherwise (then a warning)."""
    built = built_by.get("variant") if built_by.get("variant") in ("fp32", "int8", "fp16") else None
    if asked and built and asked != built:
        print(f"lir search: warning: the index was built with {built} graphs, queries use {asked}", file=sys.stderr)
    return asked or built or "fp32"


def check_doc_graph(built_by: dict, variant: str, engine: Engine) -> None:
    """Refuse an engine whose doc graph in the index's own variant is not the file that built the index."""
    recorded, found = built_by.get("doc_graph_sha256"), engine.doc_graph_sha256
    if variant == built_by.get("variant") and None not in (recorded, found) and recorded != found:
        raise LirError(f"the {variant} doc graph of {engine.fingerprint['model']} is not the one that built the index")


def index_engine(index: str, built_by: dict, url: str | None, variant: str, device: str) -> Engine:
    """The engine named by `url`, or else the local model directory the index records; a server is dialled
    only when the user names it, never because an index says so."""
    if url:
        return open_engine(url, variant, device)
    directory = built_by.get("directory")
    if isinstance(directory, str) and Path(directory).is_dir():
        return OnnxEngine(directory, variant=variant, device=device)
    if isinstance(built_by.get("url"), str) and "://" in built_by["url"]:
        raise LirError(f"{index} was built through a server ({built_by['url']}): name the engine with --engine")
    raise LirError(f"{index} records no local model directory that exists: pass --engine")


def run_evaluate(args: argparse.Namespace) -> int:
    results = evaluate(read_run(args.run), read_qrels_spec(args.qrels, args.split), args.metrics)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(format_table(results))
    return 0
