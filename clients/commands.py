"""`lir index`, `lir search`, `lir evaluate`: the embedded path from texts to a TREC run and its scores."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from lir.clients.engine import Engine
from lir.clients.engines import open_engine
from lir.clients.indexes import check_index_output, open_index
from lir.clients.onnx_engine import OnnxEngine
from lir.clients.qdrant_index import target_spec
from lir.clients.ray_index import RayCluster, ray_index
from lir.clients.retriever import Retriever
from lir.clients.streaming_index import DEFAULT_BLOCK_DOCS, stream_index
from lir.collections import iter_docs, read_qrels_spec, read_queries
from lir.errors import LirError, run_command
from lir.files import check_not_an_input, check_output_file
from lir.metrics import DEFAULT_MEASURES, evaluate, format_table
from lir.trec import read_run, write_run

F = TypeVar("F", bound=Callable[..., int])
POSITIVE = click.IntRange(min=1)
VARIANTS = ("fp32", "int8", "fp16")


class ClientCommand(click.Command):
    """A client command: its callback runs through `run_command` (one line on stderr and exit 1 on an error,
    130 on Ctrl-C), named as the user called it (`lir re-rank`)."""

    def invoke(self, ctx: click.Context) -> int:
        invoke = super().invoke
        return run_command(ctx.command_path, lambda: invoke(ctx))


def engine_options(required: bool) -> Callable[[F], F]:
    """--engine, --variant, --device and --batch-size."""
    options = [
        click.option(
            "--engine",
            required=required,
            help="onnx:MODEL_DIR or MODEL_DIR (embedded onnxruntime), triton://HOST:PORT/MODEL (gRPC) or "
            "triton+http://HOST:PORT/MODEL"
            + ("" if required else "; default: the local model directory that built the index (never a server)"),
        ),
        click.option(
            "--variant",
            type=click.Choice(VARIANTS),
            default="fp32" if required else None,
            help="graph variant" + ("" if required else " (default: the one that built the index)"),
        ),
        click.option("--device", type=click.Choice(("cpu", "cuda")), default="cpu", help="where the model runs"),
        click.option("--batch-size", type=POSITIVE, default=32, help="texts per batch"),
    ]

    def add(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return add


@click.command(
    cls=ClientCommand,
    short_help="encode a corpus and write an index",
    help="Encode a corpus with an exported model and write the index of its family: a Faiss index "
    "(single-vector), token vectors (multi-vector) or an inverted index (sparse).",
)
@engine_options(required=True)
@click.option("--corpus", required=True, help="BEIR folder, .jsonl, .tsv (id<TAB>text), or an ir_datasets id")
@click.option(
    "--output",
    required=True,
    help="index folder to write, or a Qdrant collection: qdrant://HOST:PORT/COLLECTION (with --factory qdrant)",
)
@click.option(
    "--factory",
    help="index spec: a Faiss factory string for single-vector models (default Flat, exact); for multi-vector "
    "models exact (default), plaid (PLAID: centroids + 2-bit residuals, far faster; plaid,nbits=4,centroids=…; "
    "vectors=fp16 keeps the vectors for exact re-scoring) "
    "or a Faiss factory over token vectors for candidates (e.g. IVF1024,Flat); for "
    "sparse models the impact precision float32 (default, exact), float16 or uint8, or seismic (approximate, "
    "far faster; build parameters as seismic,n_postings=3500,summary_energy=0.4); for any of the three, qdrant "
    "(a Qdrant store in the folder, or in the collection --output names: qdrant,hnsw_m=16,ef_construct=100,int8)",
)
@click.option("--overwrite", is_flag=True, help="replace an existing index (and the blocks of an interrupted run)")
@click.option(
    "--block-docs",
    type=POSITIVE,
    default=DEFAULT_BLOCK_DOCS,
    show_default=True,
    help="documents read, encoded and written at a time (what bounds memory) into OUTPUT.lir-blocks",
)
@click.option("--resume", is_flag=True, help="continue a killed run from its finished blocks in OUTPUT.lir-blocks")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    metavar="[ADDRESS]",
    help="encode the blocks on Ray actors (pip install 'lir[ray]'): alone, a local cluster started for the run; "
    "auto, the cluster `ray start` runs here; ray://HOST:10001, a remote one",
)
@click.option("--ray-workers", type=POSITIVE, help="encoder actors (default: as many as the cluster's CPUs hold)")
@click.option("--ray-cpus", type=click.FloatRange(min=0, min_open=True), help="CPUs per actor (default 1)")
@click.option(
    "--ray-gpus", type=click.FloatRange(min=0, min_open=True), help="GPU share per actor: encodes with CUDA there"
)
def index(
    engine: str,
    variant: str,
    device: str,
    batch_size: int,
    corpus: str,
    output: str,
    factory: str | None,
    overwrite: bool,
    block_docs: int,
    resume: bool,
    ray_address: str | None,
    ray_workers: int | None,
    ray_cpus: float | None,
    ray_gpus: float | None,
) -> int:
    """`lir index`."""
    ray_options = {"--ray-workers": ray_workers, "--ray-cpus": ray_cpus, "--ray-gpus": ray_gpus}
    if ray_address is None and (given := [name for name, value in ray_options.items() if value is not None]):
        raise LirError(f"{given[0]} needs --ray")
    check_index_output(output, overwrite, [corpus])
    factory = target_spec(output, factory)
    if ray_address is not None:
        cluster = RayCluster(ray_address or None, ray_workers, ray_cpus or 1.0, ray_gpus or 0.0)
        options = {"spec": factory, "overwrite": overwrite, "batch_size": batch_size, "block_docs": block_docs}
        print(ray_index(engine, corpus, output, variant, device, resume=resume, cluster=cluster, **options))
        return 0
    with open_engine(engine, variant, device) as model:
        directory = str(model.directory.resolve()) if model.directory else None
        built_by = {"url": engine, "directory": directory, "variant": variant}
        print(
            stream_index(
                model, lambda: iter_docs(corpus), output, built_by, factory, overwrite, batch_size, block_docs, resume
            )
        )
    return 0


@click.command(
    cls=ClientCommand,
    short_help="search an index and write a TREC run",
    help="Encode queries, search an index written by `lir index`, write a TREC run file.",
)
@engine_options(required=False)
@click.option(
    "--index",
    "index_dir",
    required=True,
    help="index folder written by `lir index`, or a Qdrant collection it wrote (qdrant://HOST:PORT/COLLECTION)",
)
@click.option("--queries", required=True, help="BEIR folder, .jsonl, .tsv, or an ir_datasets id")
@click.option("--split", help="with a BEIR folder: keep the queries judged in this split (e.g. test)")
@click.option("--output", required=True, help="TREC run file to write")
@click.option("-k", "--k", "k", type=POSITIVE, default=100, help="documents per query")
@click.option(
    "--search-params",
    help="search parameters, e.g. nprobe=16 or efSearch=128 (Faiss); multi-vector also token_k=…,candidates=… "
    "(plaid: ncells=…,ndocs=…,centroid_score_threshold=…,rescore=exact|decompressed); "
    "seismic query_cut=…,heap_factor=…; qdrant hnsw_ef=…,exact=true,rescore=…,oversampling=…",
)
def search(
    engine: str | None,
    variant: str | None,
    device: str,
    batch_size: int,
    index_dir: str,
    queries: str,
    split: str | None,
    output: str,
    k: int,
    search_params: str | None,
) -> int:
    """`lir search`."""
    check_output_file(output)
    check_not_an_input(output, [queries])
    found = open_index(index_dir)
    if search_params:
        found.set_search_parameters(search_params)
    built_by = found.info.get("engine") or {}
    variant = index_variant(built_by, variant)
    texts = read_queries(queries, split)
    if not texts:
        raise LirError(f"{queries} holds no queries" + (f" for split {split}" if split else ""))
    with index_engine(index_dir, built_by, engine, variant, device) as model:
        check_doc_graph(built_by, variant, model)
        retriever = Retriever(model, found)
        start = time.perf_counter()
        run = retriever.search(texts, k=k, batch_size=batch_size)
        seconds = time.perf_counter() - start
    write_run(output, run, system=found.info.get("model", {}).get("model", "lir"))
    print(f"searched {len(texts)} queries in {seconds:.2f} s ({1000 * seconds / len(texts):.2f} ms/query) → {output}")
    return 0


def index_variant(built_by: dict, asked: str | None) -> str:
    """The variant that searches an index: the one that built it unless asked otherwise (then a warning)."""
    built = built_by.get("variant") if built_by.get("variant") in VARIANTS else None
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


class _Evaluate(ClientCommand):
    """`--metrics A B C` as well as `--metrics A --metrics B`: each word after `--metrics` up to the next option
    is one measure."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        spread: list[str] = []
        taking = False  # the words since `--metrics`
        for arg in args:
            taking = taking and not arg.startswith("-")
            if taking and spread[-1] != "--metrics":
                spread.append("--metrics")
            spread.append(arg)
            taking = taking or arg == "--metrics"
        return super().parse_args(ctx, spread)


@click.command(
    "evaluate",
    cls=_Evaluate,
    short_help="score a TREC run against qrels",
    help="Evaluate a TREC run with ir_measures.",
)
@click.option("--run", required=True, help="TREC run file")
@click.option("--qrels", required=True, help="qrels file, BEIR folder (+ --split), or ir_datasets id")
@click.option("--split", help="with a BEIR folder: the qrels split (e.g. test)")
@click.option(
    "--metrics",
    "measures",
    multiple=True,
    default=DEFAULT_MEASURES,
    help="ir_measures strings, one or more: --metrics nDCG@10 AP",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def evaluation(run: str, qrels: str, split: str | None, measures: tuple[str, ...], as_json: bool) -> int:
    """`lir evaluate`."""
    results = evaluate(read_run(run), read_qrels_spec(qrels, split), list(measures))
    if as_json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(format_table(results))
    return 0
