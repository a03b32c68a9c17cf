"""Training and inference data: document, query, tuple and run datasets, and collators that tokenize through
the core's `TextEncoder`/`PairEncoder` (the rules export and clients share).

Every source is a local path or an ir_datasets id, read with `lir.collections` and `lir.trec`. Samples are
small frozen dataclasses; a `RankSample`'s `targets` follow the losses' convention: larger is better.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from lir.collections import (
    CANDIDATE_COLUMNS,
    irds_dataset,
    irds_iter,
    iter_docs,
    read_candidates,
    read_docs,
    read_qrels_spec,
    read_queries,
)
from lir.errors import LirError
from lir.tokenization import PairEncoder, TextEncoder
from lir.trec import Qrels, read_lines, read_run

TUPLE_TARGETS = ("order", "score")
RUN_TARGETS = ("relevance", "rank", "score")
SAMPLING = ("top", "random", "top_and_random")


@dataclass(frozen=True)
class DocSample:
    doc_id: str
    doc: str


@dataclass(frozen=True)
class QuerySample:
    query_id: str
    query: str


@dataclass(frozen=True)
class RankSample:
    """A query and its candidates; `doc_ids` is empty when the source gives texts only."""

    query_id: str
    query: str
    doc_ids: tuple[str, ...]
    docs: tuple[str, ...]
    targets: tuple[float, ...] | None = None


T = TypeVar("T")


def held_out(query_id: str, fraction: float) -> bool:
    """Whether a query is in the held-out `fraction` of queries: by its id's SHA-1, so every dataset and run
    that holds out the same fraction holds out the same queries."""
    digest = hashlib.sha1(query_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _check_hold_out(fraction: float, held: bool) -> None:
    if not 0 <= fraction < 1 or (held and fraction == 0):
        raise LirError(f"hold_out {fraction} must be in [0, 1) (above 0 to keep the held-out queries)")


def _shard(items: Iterable[T]) -> Iterator[T]:
    """Each DataLoader worker keeps every num_workers-th item, so workers never repeat one another."""
    worker = get_worker_info()
    return iter(items) if worker is None else islice(items, worker.id, None, worker.num_workers)


class DocDataset(IterableDataset):
    """The documents of a corpus spec (BEIR folder, JSONL, TSV, ir_datasets id), streamed."""

    def __init__(self, docs: str) -> None:
        self.docs = docs

    def __iter__(self) -> Iterator[DocSample]:
        return (DocSample(doc_id, text) for doc_id, text in _shard(iter_docs(self.docs)))


class QueryDataset(Dataset):
    """The queries of a query spec; a BEIR folder keeps those judged in `split`. `qrels` (a qrels file, a BEIR
    folder with `split`, or an ir_datasets id) lets a search over them be evaluated; `name` names its run."""

    def __init__(self, queries: str, split: str | None = None, qrels: str | None = None) -> None:
        self.samples = [QuerySample(qid, text) for qid, text in read_queries(queries, split).items()]
        self.qrels: Qrels = read_qrels_spec(qrels, split) if qrels is not None else {}
        stem = Path(queries).stem if Path(queries).exists() else queries.strip("/").replace("/", "-")
        self.name = f"{stem}-{split}" if split else stem

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> QuerySample:
        return self.samples[index]


@dataclass
class _Tuple:
    query_id: str
    query: str | None
    doc_ids: tuple[str, ...]
    docs: tuple[str, ...] | None
    scores: tuple[float, ...] | None = None


class TupleDataset(Dataset):
    """Training tuples: a query, its positive first, then negatives.

    `tuples` is a JSONL file of {"query_id"?, "query"?, "doc_ids"?, "docs"?, "scores"?} (the query's text or
    its id plus `queries`, the id defaulting to the line number; the docs' texts or their ids plus `docs`)
    or an ir_datasets id with docpairs (texts from the same dataset unless `queries`/`docs` say otherwise).
    `targets`: "order" gives 1 to the first candidate and 0 to the others, "score" the record's `scores`
    (e.g. a teacher's, for `MarginMSE` or `KLDivergence`: every tuple needs finite scores and, with
    `num_docs`, that many docs). `limit` keeps the first tuples only; `num_docs` the first docs of each tuple
    (the positive and `num_docs - 1` negatives). `hold_out` sets that fraction of the queries aside (see
    `held_out`), `held` keeps those only. Only the documents kept are read.
    """

    def __init__(
        self,
        tuples: str,
        queries: str | None = None,
        docs: str | None = None,
        targets: str = "order",
        limit: int | None = None,
        num_docs: int | None = None,
        hold_out: float = 0.0,
        held: bool = False,
    ) -> None:
        _check_hold_out(hold_out, held)
        if targets not in TUPLE_TARGETS:
            raise LirError(f"unknown tuple targets {targets!r} (known: {', '.join(TUPLE_TARGETS)})")
        if num_docs is not None and num_docs < 1:
            raise LirError(f"num_docs must be at least 1, not {num_docs}")
        if Path(tuples).is_file():
            scored = (num_docs or 1) if targets == "score" else None
            rows = list(islice(_jsonl_tuples(Path(tuples), scored), limit))
        else:
            rows = list(islice(_docpairs(tuples), limit))
            queries, docs = queries or tuples, docs or tuples
        if hold_out:
            rows = [row for row in rows if held_out(row.query_id, hold_out) == held]
        if num_docs is not None:
            rows = [_first_docs(row, num_docs) for row in rows]
        if targets == "score" and any(row.scores is None for row in rows):
            raise LirError(f"{tuples}: docpairs carry no scores: targets 'score' need a JSONL file of scored tuples")
        query_texts = _lookup_queries(rows, queries, tuples)
        doc_texts = _lookup_docs(rows, docs, tuples)
        self.samples = [
            RankSample(
                row.query_id,
                row.query if row.query is not None else query_texts[row.query_id],
                row.doc_ids,
                row.docs if row.docs is not None else tuple(doc_texts[d] for d in row.doc_ids),
                row.scores if targets == "score" else (1.0,) + (0.0,) * (len(row.doc_ids or row.docs) - 1),
            )
            for row in rows
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RankSample:
        return self.samples[index]


def _first_docs(row: _Tuple, count: int) -> _Tuple:
    return _Tuple(
        row.query_id,
        row.query,
        row.doc_ids[:count],
        None if row.docs is None else row.docs[:count],
        None if row.scores is None else row.scores[:count],
    )


def _jsonl_tuples(path: Path, scored: int | None = None) -> Iterator[_Tuple]:
    """The tuples of a JSONL file; with `scored`, each must carry scores and at least `scored` docs."""
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise LirError(f"{where}: not a JSON object") from None
            if not isinstance(record, dict) or ("query" not in record and "query_id" not in record):
                raise LirError(f"{where}: a tuple needs a query or a query_id")
            doc_ids = tuple(str(d) for d in record.get("doc_ids", ()))
            docs = tuple(record["docs"]) if "docs" in record else None
            count = len(docs) if docs is not None else len(doc_ids)
            if count == 0 or (docs is not None and doc_ids and len(doc_ids) != count):
                raise LirError(f"{where}: a tuple needs docs or doc_ids (the same number when both)")
            scores = _scores(record["scores"], where) if "scores" in record else None
            if scores is not None and len(scores) != count:
                raise LirError(f"{where}: {len(scores)} scores for {count} docs")
            if scored is not None and scores is None:
                raise LirError(f"{where}: no scores: targets 'score' need scores for every tuple")
            if scored is not None and count < scored:
                raise LirError(f"{where}: {count} docs, fewer than the {scored} num_docs asks for")
            yield _Tuple(str(record.get("query_id", lineno)), record.get("query"), doc_ids, docs, scores)


def _scores(values: object, where: str) -> tuple[float, ...]:
    """A record's `scores`: a list of finite numbers."""
    numbers = values if isinstance(values, list) else [values]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise LirError(f"{where}: scores must be a list of finite numbers, got {json.dumps(values)[:60]}")
    return tuple(float(v) for v in numbers)


def _docpairs(spec: str) -> Iterator[_Tuple]:
    for pair in irds_iter(spec, "docpairs"):
        yield _Tuple(pair.query_id, None, (pair.doc_id_a, pair.doc_id_b), None)


def _lookup_queries(rows: Sequence[_Tuple], queries: str | None, source: str) -> dict[str, str]:
    wanted = {row.query_id for row in rows if row.query is None}
    if not wanted:
        return {}
    if queries is None:
        raise LirError(f"{source}: tuples name queries by id only: give the queries")
    texts = read_queries(queries)
    return {qid: texts[qid] for qid in _require_all(wanted, texts, "queries", queries)}


def _lookup_docs(rows: Sequence[_Tuple], docs: str | None, source: str) -> dict[str, str]:
    wanted = {doc_id for row in rows if row.docs is None for doc_id in row.doc_ids}
    if not wanted:
        return {}
    if docs is None:
        raise LirError(f"{source}: tuples name documents by id only: give the docs")
    texts = read_docs(docs, wanted)
    _require_all(wanted, texts, "documents", docs)
    return texts


def _require_all(wanted: set[str], found: Mapping[str, str], what: str, spec: str) -> set[str]:
    missing = sorted(wanted - found.keys())
    if missing:
        raise LirError(f"{len(missing)} {what} are not in {spec} (e.g. {missing[0]!r})")
    return wanted


@dataclass(frozen=True)
class _Candidate:
    doc_id: str
    rank: int
    score: float | None


class RunDataset(Dataset):
    """Per query, the ranked candidates of a run, for re-ranking or for sampling training tuples.

    `run` is a TREC run file (texts from `queries` and `docs`), a header TSV of candidates with texts
    (`qid query docid ... passage`, best first, as `lir.collections.read_candidates` reads), or an
    ir_datasets id with scoreddocs (queries, docs and qrels default to the same dataset). With `qrels` only
    judged queries are kept. Each query keeps its top `depth` candidates; `sample_size` picks that many per
    item ("top", "random", or "top_and_random": the top ⌈k/2⌉ and ⌊k/2⌋ random others, random draws seeded
    by `seed`, the item and `set_epoch`), in rank order, and drops queries with fewer candidates. `targets`:
    "relevance" (qrels grade, 0 when unjudged), "rank" (1/rank), "score" (run score), or None.

    `hold_out` sets that fraction of the queries aside (`held_out`: the same queries as a `TupleDataset`
    or another run with the same fraction), `held` keeps those only: e.g. train on SciFact train less 10 %
    and validate on that 10 %.

    With "score" the run is a teacher's (e.g. what `lir rerank` or `lir search` writes) and its scores the
    targets `MarginMSE` and `KLDivergence` distill; then a query with fewer than `sample_size` candidates is
    an error naming its line, not dropped.
    """

    def __init__(
        self,
        run: str,
        queries: str | None = None,
        docs: str | None = None,
        qrels: str | None = None,
        split: str | None = None,
        depth: int = 100,
        sample_size: int | None = None,
        sampling_strategy: str = "top",
        targets: str | None = None,
        seed: int = 0,
        hold_out: float = 0.0,
        held: bool = False,
    ) -> None:
        _check_hold_out(hold_out, held)
        if sampling_strategy not in SAMPLING:
            raise LirError(f"unknown sampling strategy {sampling_strategy!r} (known: {', '.join(SAMPLING)})")
        if targets is not None and targets not in RUN_TARGETS:
            raise LirError(f"unknown run targets {targets!r} (known: {', '.join(RUN_TARGETS)})")
        if depth < 1 or (sample_size is not None and not 1 <= sample_size <= depth):
            raise LirError(f"depth {depth} and sample_size {sample_size} must satisfy 1 <= sample_size <= depth")
        self.sample_size, self.sampling_strategy, self.targets = sample_size, sampling_strategy, targets
        self.seed, self.epoch = seed, 0
        texts, ranked, doc_texts = _read_ranking(run, queries, docs, split)
        if hold_out:
            ranked = {qid: cands for qid, cands in ranked.items() if held_out(qid, hold_out) == held}
        if qrels is None and not Path(run).exists() and irds_dataset(run, "scoreddocs").has_qrels():
            qrels = run
        self.qrels: Qrels = read_qrels_spec(qrels, split) if qrels is not None else {}
        if hold_out:  # validation averages over the qrels' queries: only the part kept
            self.qrels = {qid: judged for qid, judged in self.qrels.items() if held_out(qid, hold_out) == held}
        if targets == "relevance" and qrels is None:
            raise LirError("targets 'relevance' need qrels")
        if targets == "score" and any(c.score is None for cands in ranked.values() for c in cands):
            raise LirError(f"{run} carries no scores: targets 'score' need a TREC run or scoreddocs")
        ranked = {qid: cands[:depth] for qid, cands in ranked.items() if qrels is None or qid in self.qrels}
        if targets == "score":
            _require_candidates(run, ranked, sample_size or 1)
        ranked = {qid: cands for qid, cands in ranked.items() if len(cands) >= (sample_size or 1)}
        self.queries = {qid: texts[qid] for qid in _require_all(set(ranked), texts, "queries", queries or run)}
        if doc_texts is None:
            wanted = {c.doc_id for cands in ranked.values() for c in cands}
            doc_texts = read_docs(docs or run, wanted)
            _require_all(wanted, doc_texts, "documents", docs or run)
        self.docs = doc_texts
        self.ranked = list(ranked.items())

    def set_epoch(self, epoch: int) -> None:
        """Draw other random samples in each epoch (still reproducible)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ranked)

    def __getitem__(self, index: int) -> RankSample:
        query_id, candidates = self.ranked[index]
        chosen = [candidates[i] for i in self._positions(len(candidates), index)]
        return RankSample(
            query_id,
            self.queries[query_id],
            tuple(c.doc_id for c in chosen),
            tuple(self.docs[c.doc_id] for c in chosen),
            None if self.targets is None else tuple(self._target(query_id, c) for c in chosen),
        )

    def _positions(self, count: int, index: int) -> list[int]:
        size = self.sample_size
        if size is None or size >= count:
            return list(range(count))
        top = {"top": size, "random": 0, "top_and_random": (size + 1) // 2}[self.sampling_strategy]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        drawn = rng.choice(count - top, size - top, replace=False) + top
        return list(range(top)) + sorted(int(i) for i in drawn)

    def _target(self, query_id: str, candidate: _Candidate) -> float:
        if self.targets == "relevance":
            return float(self.qrels[query_id].get(candidate.doc_id, 0))
        if self.targets == "rank":
            return 1.0 / candidate.rank
        return float(candidate.score)


Ranking = dict[str, list[_Candidate]]


def _require_candidates(run: str, ranked: Ranking, count: int) -> None:
    """A LirError at the run's last line of the first query with fewer than `count` candidates."""
    short = next((qid for qid, cands in ranked.items() if len(cands) < count), None)
    if short is None:
        return
    where = run
    if Path(run).is_file():
        line = max(n for n, text in read_lines(run) if text.split(maxsplit=1)[:1] == [short])
        where = f"{run}:{line}"
    raise LirError(
        f"{where}: query {short!r} has {len(ranked[short])} candidates, fewer than the {count} sample_size asks for"
    )


def _read_ranking(
    run: str, queries: str | None, docs: str | None, split: str | None
) -> tuple[dict[str, str], Ranking, dict[str, str] | None]:
    """(query texts, each query's candidates best first, doc texts when the source carries them)."""
    path = Path(run)
    if path.is_file() and _is_candidates_tsv(path):
        texts, candidates = read_candidates(path)
        ranked = {qid: [_Candidate(d, r, None) for r, (d, _) in enumerate(c, 1)] for qid, c in candidates.items()}
        return texts, ranked, {d: text for c in candidates.values() for d, text in c}
    if path.is_file():
        scores = read_run(path)
    else:
        scores = {}
        for scored in irds_iter(run, "scoreddocs"):
            score = float(scored.score)
            if not math.isfinite(score):
                raise LirError(f"{run}: query {scored.query_id!r}, doc {scored.doc_id!r}: score {score} is not finite")
            scores.setdefault(scored.query_id, {})[scored.doc_id] = score
        queries = queries or run
    if queries is None or (docs is None and path.is_file()):
        raise LirError(f"{run} is a TREC run: give the queries and docs its ids refer to")
    ranked = {
        qid: [_Candidate(d, r, s) for r, (d, s) in enumerate(sorted(by_doc.items(), key=lambda i: (-i[1], i[0])), 1)]
        for qid, by_doc in scores.items()
    }
    return read_queries(queries, split), ranked, None


def _is_candidates_tsv(path: Path) -> bool:
    """Whether the file starts with a candidates header (its first field names the query id column)."""
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().split("\t", 1)[0].strip().lower()
    return first in CANDIDATE_COLUMNS[0]


@dataclass
class Batch:
    """A collated batch: model inputs (int64 tensors), [Q, N] float targets if every sample has them, and the
    ids of the queries and of the documents in input row order."""

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor | None
    query_ids: list[str]
    doc_ids: list[str]


def _one_kind(samples: Sequence[object]) -> type:
    kinds = {type(s) for s in samples}
    if len(kinds) != 1:
        raise LirError(f"a batch needs samples of one kind, got {sorted(k.__name__ for k in kinds) or 'none'}")
    return kinds.pop()


def _rank_samples(samples: Sequence[RankSample]) -> tuple[list[str], torch.Tensor | None]:
    """(the candidates' texts flattened query-major, [Q, N] targets)."""
    counts = {len(s.docs) for s in samples}
    if len(counts) != 1:
        raise LirError(f"samples of one batch need the same number of docs, got {sorted(counts)}: set sample_size")
    targets = None
    if all(s.targets is not None for s in samples):
        targets = torch.tensor([s.targets for s in samples], dtype=torch.float32)
    return [d for s in samples for d in s.docs], targets


class BiEncoderCollator:
    """Collates query, doc or rank samples for a bi-encoder with one `TextEncoder` per role (e.g.
    `BiEncoderModule.encoders`). Inputs: `query_input_ids`/`query_attention_mask` [Q, L] and
    `doc_input_ids`/`doc_attention_mask` [Q*N, L] (rank samples: query-major, as `InBatchCrossEntropy` and a
    reshape to [Q, N] expect)."""

    def __init__(self, encoders: Mapping[str, TextEncoder]) -> None:
        self.encoders = encoders

    def _encode(self, role: str, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoder = self.encoders[role]
        input_ids, attention_mask = encoder.batch(encoder.encode(texts))
        return {
            f"{role}_input_ids": torch.from_numpy(input_ids),
            f"{role}_attention_mask": torch.from_numpy(attention_mask),
        }

    def __call__(self, samples: Sequence[DocSample | QuerySample | RankSample]) -> Batch:
        kind = _one_kind(samples)
        if kind is DocSample:
            return Batch(self._encode("doc", [s.doc for s in samples]), None, [], [s.doc_id for s in samples])
        if kind is QuerySample:
            return Batch(self._encode("query", [s.query for s in samples]), None, [s.query_id for s in samples], [])
        docs, targets = _rank_samples(samples)
        inputs = self._encode("query", [s.query for s in samples]) | self._encode("doc", docs)
        return Batch(inputs, targets, [s.query_id for s in samples], [d for s in samples for d in s.doc_ids])


class CrossEncoderCollator:
    """Collates rank samples into the (query, doc) pairs of a cross-encoder's `PairEncoder` (e.g.
    `CrossEncoderModule.pairs`): `input_ids`, `attention_mask`[, `token_type_ids`] [Q*N, L] query-major, and
    for listwise models `groups` [Q*N] (the sample's index)."""

    def __init__(self, pairs: PairEncoder) -> None:
        self.pairs = pairs

    def __call__(self, samples: Sequence[RankSample]) -> Batch:
        if _one_kind(samples) is not RankSample:
            raise LirError("a cross-encoder batch takes rank samples (a query and its candidates)")
        docs, targets = _rank_samples(samples)
        queries = [s.query for s in samples for _ in s.docs]
        feeds = self.pairs.batch(self.pairs.encode(queries, docs))
        if self.pairs.pair.listwise:
            feeds["groups"] = np.repeat(np.arange(len(samples), dtype=np.int64), len(samples[0].docs))
        inputs = {name: torch.from_numpy(value) for name, value in feeds.items()}
        return Batch(inputs, targets, [s.query_id for s in samples], [d for s in samples for d in s.doc_ids])
