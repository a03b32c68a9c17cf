"""`lir rerank`: a first-stage run (or a candidates file) re-ranked by a cross-encoder or a bi-encoder."""

from __future__ import annotations

import argparse
import time

from lir.clients.commands import engine_options, positive
from lir.clients.engines import open_engine
from lir.clients.reranker import Reranker, ranked
from lir.collections import Candidates, read_candidates, read_docs, read_queries
from lir.errors import LirError
from lir.files import check_not_an_input, check_output_file
from lir.trec import read_run, write_run


def register(sub: argparse._SubParsersAction) -> None:
    """Add `lir rerank` (alias `lir re-rank`) to the `lir` parser."""
    rerank = sub.add_parser(
        "rerank",
        aliases=["re-rank"],
        help="re-rank a run's candidates and write a new TREC run",
        description="Re-score the top candidates of each query with an exported cross-encoder (pairs scored "
        "jointly) or bi-encoder (query and candidates encoded, scored by the model's similarity) and write "
        "them as a TREC run. Candidates come from a TREC run plus query and document texts, or from one TSV.",
    )
    engine_options(rerank, required=True)
    source = rerank.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="TREC run of the first stage (with --queries and --docs)")
    source.add_argument(
        "--candidates",
        help="TSV whose header names the query id, query, doc id and passage columns "
        "(e.g. qid query docid rank score passage), candidates best first",
    )
    rerank.add_argument("--queries", help="with --run: BEIR folder, .jsonl, .tsv (id<TAB>text), or an ir_datasets id")
    rerank.add_argument("--split", help="with a BEIR folder of queries: keep those judged in this split")
    rerank.add_argument("--docs", help="with --run: BEIR folder, .jsonl, .tsv, or an ir_datasets id")
    rerank.add_argument(
        "--depth", type=positive, default=100, help="candidates re-ranked per query (default: %(default)s)"
    )
    rerank.add_argument("--output", required=True, help="TREC run file to write")
    rerank.set_defaults(handler=run_rerank)


def run_rerank(args: argparse.Namespace) -> int:
    check_output_file(args.output)
    check_not_an_input(args.output, [args.run, args.candidates, args.queries, args.docs])
    if args.run:
        if not args.queries or not args.docs:
            raise LirError("--run needs --queries and --docs (the texts of its queries and documents)")
        queries, candidates = run_candidates(args.run, args.queries, args.docs, args.depth, args.split)
    else:
        if args.queries or args.docs:
            raise LirError("--candidates holds the query and passage texts: drop --queries and --docs")
        queries, candidates = read_candidates(args.candidates)
    if not candidates:
        raise LirError(f"{args.run or args.candidates} holds no candidates")
    with open_engine(args.engine, args.variant or "fp32", args.device) as engine:
        reranker = Reranker(engine, batch_size=args.batch_size, progress=True)
        start = time.perf_counter()
        run = reranker.rerank_run(queries, candidates, args.depth)
        seconds = time.perf_counter() - start
        system = engine.fingerprint["model"]
    write_run(args.output, run, system=system)
    pairs = sum(len(scores) for scores in run.values())
    print(
        f"re-ranked {pairs} candidates of {len(run)} queries in {seconds:.2f} s ({pairs / seconds:.1f} pairs/s, "
        f"{1000 * seconds / len(run):.1f} ms/query) → {args.output}"
    )
    return 0


def run_candidates(
    run_path: str, queries_spec: str, docs_spec: str, depth: int, split: str | None = None
) -> tuple[dict[str, str], Candidates]:
    """The queries and the top `depth` candidates (doc_id, text) of each query of a TREC run."""
    top = {qid: ranked(scores)[:depth] for qid, scores in read_run(run_path).items()}
    queries = read_queries(queries_spec, split)
    missing = [qid for qid in top if qid not in queries]
    if missing:
        raise LirError(f"{len(missing)} queries of the run are not in {queries_spec} (e.g. {missing[0]!r})")
    texts = read_docs(docs_spec, {did for ids in top.values() for did in ids})
    missing = sorted({did for ids in top.values() for did in ids if did not in texts})
    if missing:
        raise LirError(f"{len(missing)} documents of the run are not in {docs_spec} (e.g. {missing[0]!r})")
    return queries, {qid: [(did, texts[did]) for did in ids] for qid, ids in top.items()}
