"""`lir rerank`: a first-stage run (or a candidates file) re-ranked by a cross-encoder or a bi-encoder."""

from __future__ import annotations

import time

import click

from lir.clients.commands import POSITIVE, ClientCommand, engine_options
from lir.clients.engines import open_engine
from lir.clients.reranker import Reranker, ranked
from lir.collections import Candidates, read_candidates, read_docs, read_queries
from lir.errors import LirError
from lir.files import check_not_an_input, check_output_file
from lir.trec import read_run, write_run


class _Rerank(ClientCommand):
    """`lir rerank` takes its candidates from exactly one of --run and --candidates (a usage error else)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        given = sum(ctx.params.get(name) is not None for name in ("run", "candidates"))
        if given != 1 and not ctx.resilient_parsing:
            problem = "Missing option '--run' or '--candidates'." if given == 0 else "--run excludes --candidates."
            raise click.UsageError(problem, ctx)
        return rest


@click.command(
    cls=_Rerank,
    short_help="re-rank a run's candidates, write a new TREC run (alias: re-rank)",
    help="Re-score the top candidates of each query with an exported cross-encoder (pairs scored jointly) or "
    "bi-encoder (query and candidates encoded, scored by the model's similarity) and write them as a TREC run. "
    "Candidates come from a TREC run plus query and document texts, or from one TSV.",
)
@engine_options(required=True)
@click.option("--run", help="TREC run of the first stage (with --queries and --docs)")
@click.option(
    "--candidates",
    help="TSV whose header names the query id, query, doc id and passage columns "
    "(e.g. qid query docid rank score passage), candidates best first",
)
@click.option("--queries", help="with --run: BEIR folder, .jsonl, .tsv (id<TAB>text), or an ir_datasets id")
@click.option("--split", help="with a BEIR folder of queries: keep those judged in this split")
@click.option("--docs", help="with --run: BEIR folder, .jsonl, .tsv, or an ir_datasets id")
@click.option("--depth", type=POSITIVE, default=100, help="candidates re-ranked per query")
@click.option("--output", required=True, help="TREC run file to write")
def rerank(
    engine: str,
    variant: str,
    device: str,
    batch_size: int,
    run: str | None,
    candidates: str | None,
    queries: str | None,
    split: str | None,
    docs: str | None,
    depth: int,
    output: str,
) -> int:
    """`lir rerank` (alias `lir re-rank`)."""
    check_output_file(output)
    check_not_an_input(output, [run, candidates, queries, docs])
    if run:
        if not queries or not docs:
            raise LirError("--run needs --queries and --docs (the texts of its queries and documents)")
        texts, found = run_candidates(run, queries, docs, depth, split)
    else:
        if queries or docs:
            raise LirError("--candidates holds the query and passage texts: drop --queries and --docs")
        texts, found = read_candidates(candidates)
    if not found:
        raise LirError(f"{run or candidates} holds no candidates")
    with open_engine(engine, variant, device) as model:
        reranker = Reranker(model, batch_size=batch_size, progress=True)
        start = time.perf_counter()
        reranked = reranker.rerank_run(texts, found, depth)
        seconds = time.perf_counter() - start
        system = model.fingerprint["model"]
    write_run(output, reranked, system=system)
    pairs = sum(len(scores) for scores in reranked.values())
    print(
        f"re-ranked {pairs} candidates of {len(reranked)} queries in {seconds:.2f} s ({pairs / seconds:.1f} pairs/s, "
        f"{1000 * seconds / len(reranked):.1f} ms/query) → {output}"
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
