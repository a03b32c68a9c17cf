"""Training data on real collections: SciFact (BEIR folder, train qrels, a small run written here), the TREC DL
2019 candidates TSV, ir_datasets datasets built from local files, and collation through the core tokenizers."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import ir_datasets
import pytest
import torch
from ir_datasets.datasets.base import Dataset
from ir_datasets.formats import TrecQrels, TrecScoredDocs, TsvDocPairs, TsvDocs, TsvQueries
from ir_datasets.util import LocalDownload
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from lir.collections import iter_docs
from lir.errors import LirError
from lir.manifest import PairRules, TextRules
from lir.tokenization import PairEncoder, TextEncoder
from lir.train.data import (
    BiEncoderCollator,
    CrossEncoderCollator,
    DocDataset,
    DocSample,
    QueryDataset,
    QuerySample,
    RankSample,
    RunDataset,
    TupleDataset,
)
from tests.builders import minilm_dir
from tests.conftest import DATA

DL19 = DATA / "trec-dl-2019"
CANDIDATES = DL19 / "bm25_top100_dl19.candidates.tsv"
BERT = ["[CLS]", "{query}", "[SEP]", "{doc}", "[SEP]"]
# SciFact queries 0 and 2 are judged in train, 1 and 3 in test; the relevant doc of each
RELEVANT = {"0": "31715818", "2": "13734012", "1": "31715818", "3": "14717500"}


@pytest.fixture(scope="module")
def corpus(scifact) -> dict[str, str]:
    """The first 11 SciFact documents (id → text)."""
    return dict(islice(iter_docs(str(scifact)), 11))


@pytest.fixture(scope="module")
def rankings(corpus) -> dict[str, list[str]]:
    """Queries 0, 2 and 1: 12 candidates, the relevant one at rank 3; query 3: 2 candidates."""
    ids = list(corpus)
    ranked = {qid: [*ids[:2], RELEVANT[qid], *ids[2:]] for qid in ("0", "2", "1")}
    ranked["3"] = [RELEVANT["3"], ids[0]]
    return ranked


@pytest.fixture(scope="module")
def run_file(tmp_path_factory, rankings) -> str:
    """The rankings as a TREC run with score 20 - rank, each query's lines worst first (the reader must sort)."""
    lines = [
        f"{qid} Q0 {doc} {r} {20 - r} test"
        for qid, docs in rankings.items()
        for r, doc in reversed(list(enumerate(docs, 1)))
    ]
    path = tmp_path_factory.mktemp("run") / "run.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def dl19() -> RunDataset:
    return RunDataset(str(CANDIDATES), qrels=str(DL19 / "qrels.dl19-passage.txt"), depth=3, targets="relevance")


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))


def scifact_run(run_file: str, scifact: Path, **options) -> RunDataset:
    return RunDataset(run_file, queries=str(scifact), docs=str(scifact), **options)


def test_doc_and_query_datasets(scifact):
    docs = list(DocDataset(str(scifact)))
    assert len(docs) == 5183 and docs[0].doc_id == "4983" and docs[0].doc.startswith("Microstructural development")
    queries = QueryDataset(str(scifact), split="train")
    assert len(queries) == 809
    assert queries[0] == QuerySample("0", "0-dimensional biomaterials lack inductive properties.")


def test_doc_dataset_workers_share_the_corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(5)))
    loader = DataLoader(DocDataset(str(path)), batch_size=None, num_workers=2)
    assert sorted(sample.doc_id for sample in loader) == ["d0", "d1", "d2", "d3", "d4"]


def test_run_dataset_joins_qrels_and_keeps_judged_queries(run_file, scifact, corpus, rankings):
    dataset = scifact_run(run_file, scifact, qrels=str(scifact), split="train", depth=5, targets="relevance")
    assert len(dataset) == 2  # queries 0 and 2; 1 and 3 are not judged in train
    sample = dataset[0]
    assert sample.query_id == "0" and sample.query == "0-dimensional biomaterials lack inductive properties."
    assert sample.doc_ids == tuple(rankings["0"][:5])
    assert sample.docs[0] == corpus[rankings["0"][0]]
    assert sample.targets == (0.0, 0.0, 1.0, 0.0, 0.0)
    assert dataset.docs.keys() == {doc for qid in ("0", "2") for doc in rankings[qid][:5]}  # only the needed docs


def test_run_dataset_targets_and_depth(run_file, scifact, rankings):
    everything = scifact_run(run_file, scifact, depth=100)
    assert [everything[i].query_id for i in range(len(everything))] == ["0", "2", "1", "3"]
    assert everything[0].doc_ids == tuple(rankings["0"]) and everything[0].targets is None
    by_rank = scifact_run(run_file, scifact, depth=4, targets="rank")
    assert by_rank[0].targets == (1.0, 1 / 2, 1 / 3, 1 / 4)
    assert by_rank[3].doc_ids == tuple(rankings["3"])  # fewer than depth: all of them
    by_score = scifact_run(run_file, scifact, depth=3, targets="score")
    assert by_score[0].targets == (19.0, 18.0, 17.0)


def test_sampling_top_drops_short_rankings(run_file, scifact, rankings):
    top = scifact_run(run_file, scifact, sample_size=4, sampling_strategy="top")
    assert len(top) == 3  # query 3 has 2 candidates only
    assert top[1].doc_ids == tuple(rankings["2"][:4])


def test_sampling_random_is_seeded_and_in_rank_order(run_file, scifact, rankings):
    def draws(seed: int, epoch: int = 0) -> list[tuple[str, ...]]:
        dataset = scifact_run(run_file, scifact, sample_size=3, sampling_strategy="random", seed=seed)
        dataset.set_epoch(epoch)
        return [dataset[i].doc_ids for i in range(len(dataset))]

    first = draws(seed=1)
    assert first == draws(seed=1)
    assert first != draws(seed=2) and first != draws(seed=1, epoch=1)
    for qid, doc_ids in zip(("0", "2", "1"), first, strict=True):
        positions = [rankings[qid].index(doc) for doc in doc_ids]
        assert positions == sorted(positions) and len(set(positions)) == 3


def test_sampling_top_and_random(run_file, scifact, rankings):
    dataset = scifact_run(run_file, scifact, sample_size=5, sampling_strategy="top_and_random", targets="rank")
    for index, qid in enumerate(("0", "2", "1")):
        sample = dataset[index]
        assert sample.doc_ids[:3] == tuple(rankings[qid][:3])  # ⌈5/2⌉ from the top
        rest = [rankings[qid].index(doc) for doc in sample.doc_ids[3:]]
        assert rest == sorted(rest) and min(rest) >= 3
        assert sample.targets == tuple(1 / (rankings[qid].index(doc) + 1) for doc in sample.doc_ids)


def test_run_dataset_errors(run_file, scifact, tmp_path):
    with pytest.raises(LirError, match="targets 'relevance' need qrels"):
        scifact_run(run_file, scifact, targets="relevance")
    with pytest.raises(LirError, match="unknown sampling strategy 'best'"):
        scifact_run(run_file, scifact, sampling_strategy="best")
    with pytest.raises(LirError, match="unknown run targets 'grade'"):
        scifact_run(run_file, scifact, targets="grade")
    with pytest.raises(LirError, match="1 <= sample_size <= depth"):
        scifact_run(run_file, scifact, depth=3, sample_size=4)
    with pytest.raises(LirError, match="is a TREC run: give the queries and docs"):
        RunDataset(run_file, queries=str(scifact))
    with pytest.raises(LirError, match=r"2 queries are not in .*scifact \(e.g. '1'\)"):
        scifact_run(run_file, scifact, split="train")  # the train queries lack 1 and 3
    bad = tmp_path / "bad.txt"
    bad.write_text("0 Q0 no-such-doc 1 1.0 x\n")
    with pytest.raises(LirError, match="1 documents are not in .* \\(e.g. 'no-such-doc'\\)"):
        scifact_run(str(bad), scifact)


def test_dl19_candidates_with_qrels(dl19):
    assert len(dl19) == 43
    first = dl19[0]
    assert first.query_id == "264014" and first.query == "how long is life cycle of flea"
    assert first.doc_ids == ("5611210", "6641238", "4834547")
    assert first.docs[0].startswith("5. Cancel. A flea can live up to a year")
    assert all(len(dl19[i].doc_ids) == 3 for i in range(len(dl19)))
    judged = sum(t > 0 for i in range(len(dl19)) for t in dl19[i].targets)
    assert judged > 43  # BM25's top 3 holds relevant passages for most queries
    sample = dl19[5]
    assert sample.targets == tuple(dl19.qrels[sample.query_id].get(d, 0) for d in sample.doc_ids)
    with pytest.raises(LirError, match="carries no scores"):
        RunDataset(str(CANDIDATES), targets="score")


def write_jsonl(path: Path, records: list[object]) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return str(path)


def test_tuple_dataset_from_jsonl(tmp_path, scifact, corpus):
    ids = list(corpus)
    path = write_jsonl(
        tmp_path / "tuples.jsonl",
        [
            {"query": "what is a flea", "docs": ["a flea is an insect", "paris is in france"], "scores": [9.5, 1]},
            {"query_id": "0", "doc_ids": [RELEVANT["0"], ids[0], ids[1]], "scores": [3, 2, 1]},
        ],
    )
    ordered = TupleDataset(path, queries=str(scifact), docs=str(scifact))
    assert len(ordered) == 2
    texts = ("a flea is an insect", "paris is in france")
    assert ordered[0] == RankSample("1", "what is a flea", (), texts, (1.0, 0.0))
    second = ordered[1]
    assert second.query == "0-dimensional biomaterials lack inductive properties."
    assert second.docs[1:] == (corpus[ids[0]], corpus[ids[1]]) and second.targets == (1.0, 0.0, 0.0)
    scored = TupleDataset(path, queries=str(scifact), docs=str(scifact), targets="score")
    assert scored[0].targets == (9.5, 1.0) and scored[1].targets == (3.0, 2.0, 1.0)
    assert len(TupleDataset(path, limit=1)) == 1  # the first tuple needs no lookups
    first_two = TupleDataset(path, queries=str(scifact), docs=str(scifact), targets="score", num_docs=2)
    assert first_two[1].doc_ids == (RELEVANT["0"], ids[0]) and first_two[1].targets == (3.0, 2.0)
    assert first_two[1].docs == second.docs[:2] and first_two[0] == scored[0]


def test_tuple_dataset_errors(tmp_path, scifact):
    cases = [
        ([{"query": "q", "docs": ["a", "b"]}], {"targets": "score"}, "targets 'score' need scores"),
        (["{not json"], {}, r"tuples.jsonl:1: not a JSON object"),
        ([{"docs": ["a"]}], {}, "needs a query or a query_id"),
        ([{"query": "q", "docs": ["a"], "doc_ids": ["1", "2"]}], {}, "needs docs or doc_ids"),
        ([{"query": "q", "docs": ["a", "b"], "scores": [1]}], {}, "1 scores for 2 docs"),
        ([{"query_id": "0", "docs": ["a"]}], {}, "tuples name queries by id only: give the queries"),
        ([{"query": "q", "doc_ids": ["nope"]}], {"docs": str(scifact)}, r"1 documents are not in .* \(e.g. 'nope'\)"),
    ]
    for records, options, message in cases:
        with pytest.raises(LirError, match=message):
            TupleDataset(write_jsonl(tmp_path / "tuples.jsonl", records), **options)
    with pytest.raises(LirError, match="num_docs must be at least 1, not 0"):
        TupleDataset("anything", num_docs=0)
    with pytest.raises(LirError, match="unknown tuple targets 'rank'"):
        TupleDataset("anything", targets="rank")
    with pytest.raises(LirError, match="neither an existing file or folder nor an ir_datasets id"):
        TupleDataset("no/such/dataset")


@pytest.fixture
def local_irds(tmp_path) -> str:
    """An ir_datasets dataset over local files: docs, queries, docpairs, scoreddocs and qrels."""
    files = {
        "docs.tsv": "d1\tdoc one\nd2\tdoc two\nd3\tdoc three\n",
        "queries.tsv": "q1\tfirst query\nq2\tsecond query\n",
        "pairs.tsv": "q1\td1\td2\nq2\td3\td1\n",
        "run.txt": "q1 Q0 d2 2 2.0 x\nq1 Q0 d1 1 3.0 x\nq2 Q0 d3 1 1.0 x\n",
        "qrels.txt": "q1 0 d1 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    local = {name: LocalDownload(tmp_path / name) for name in files}
    name = f"lir-test/{tmp_path.name}"
    ir_datasets.registry.register(
        name,
        Dataset(
            TsvDocs(local["docs.tsv"]),
            TsvQueries(local["queries.tsv"]),
            TsvDocPairs(local["pairs.tsv"]),
            TrecScoredDocs(local["run.txt"]),
            TrecQrels(local["qrels.txt"], {0: "not relevant", 1: "relevant"}),
        ),
    )
    return name


def test_ir_datasets_docpairs_and_scoreddocs(local_irds):
    pairs = TupleDataset(local_irds)
    assert [(s.query, s.doc_ids, s.docs, s.targets) for s in pairs.samples] == [
        ("first query", ("d1", "d2"), ("doc one", "doc two"), (1.0, 0.0)),
        ("second query", ("d3", "d1"), ("doc three", "doc one"), (1.0, 0.0)),
    ]
    run = RunDataset(local_irds, targets="score")
    assert len(run) == 1  # the dataset's qrels judge q1 only
    assert run[0] == RankSample("q1", "first query", ("d1", "d2"), ("doc one", "doc two"), (3.0, 2.0))


def bi_collator(tokenizer: Tokenizer) -> BiEncoderCollator:
    query, doc = TextEncoder(tokenizer, TextRules(16), 0, "query"), TextEncoder(tokenizer, TextRules(32), 0, "doc")
    return BiEncoderCollator({"query": query, "doc": doc})


def test_bi_encoder_collation_uses_the_core_rules(dl19, tokenizer):
    collate = bi_collator(tokenizer)
    samples = [dl19[0], dl19[1]]
    batch = collate(samples)
    docs = [d for s in samples for d in s.docs]
    expected_ids, expected_mask = collate.encoders["doc"].batch(collate.encoders["doc"].encode(docs))
    assert batch.inputs["query_input_ids"].shape[0] == 2 and batch.inputs["query_input_ids"].shape[1] <= 16
    assert batch.inputs["doc_input_ids"].shape == (6, 32)  # passages fill the 32 tokens
    assert torch.equal(batch.inputs["doc_input_ids"], torch.from_numpy(expected_ids))
    assert torch.equal(batch.inputs["doc_attention_mask"], torch.from_numpy(expected_mask))
    assert batch.targets.shape == (2, 3) and batch.targets.dtype == torch.float32
    assert batch.query_ids == ["264014", dl19[1].query_id] and len(batch.doc_ids) == 6
    loaded = next(iter(DataLoader(dl19, batch_size=4, collate_fn=collate)))
    assert loaded.inputs["doc_input_ids"].shape[0] == 12 and loaded.targets.shape == (4, 3)
    docs_batch = collate([DocSample("a", "doc one"), DocSample("b", "doc two is longer")])
    assert sorted(docs_batch.inputs) == ["doc_attention_mask", "doc_input_ids"] and docs_batch.doc_ids == ["a", "b"]
    assert docs_batch.targets is None
    queries_batch = collate([QuerySample("q", "what is a flea")])
    assert queries_batch.inputs["query_input_ids"].shape == (1, 6)  # [CLS] what is a flea [SEP]


def test_collation_errors(tokenizer):
    collate = bi_collator(tokenizer)
    with pytest.raises(LirError, match=r"the same number of docs, got \[1, 2\]: set sample_size"):
        collate([RankSample("q", "a", ("1",), ("x",)), RankSample("r", "b", ("1", "2"), ("x", "y"))])
    with pytest.raises(LirError, match="samples of one kind"):
        collate([DocSample("a", "x"), QuerySample("q", "y")])
    with pytest.raises(LirError, match="query #0 is empty"):
        collate([QuerySample("q", " ")])
    pairs = CrossEncoderCollator(PairEncoder(tokenizer, TextRules(8), TextRules(16), PairRules(BERT), 0))
    with pytest.raises(LirError, match="takes rank samples"):
        pairs([QuerySample("q", "y")])


def test_cross_encoder_collation(dl19, tokenizer):
    encoder = PairEncoder(tokenizer, TextRules(8), TextRules(16), PairRules(BERT, [0, 0, 0, 1, 1]), 0)
    samples = [dl19[0], dl19[1]]
    batch = CrossEncoderCollator(encoder)(samples)
    queries = [s.query for s in samples for _ in s.docs]
    expected = encoder.batch(encoder.encode(queries, [d for s in samples for d in s.docs]))
    assert sorted(batch.inputs) == ["attention_mask", "input_ids", "token_type_ids"]
    assert all(torch.equal(batch.inputs[name], torch.from_numpy(value)) for name, value in expected.items())
    assert batch.inputs["input_ids"].shape[0] == 6 and batch.targets.shape == (2, 3)
    listwise = PairEncoder(tokenizer, TextRules(8), TextRules(16), PairRules(BERT, listwise=True), 0)
    grouped = CrossEncoderCollator(listwise)(samples)
    assert grouped.inputs["groups"].tolist() == [0, 0, 0, 1, 1, 1] and "token_type_ids" not in grouped.inputs


def test_a_loaded_module_trains_on_collated_batches(st_dir, dl19):
    from lir.train.losses import InBatchCrossEntropy, RankNet
    from lir.train.module import BiEncoderModule

    module = BiEncoderModule(str(st_dir))
    samples = [dl19[0], dl19[1]]
    batch = BiEncoderCollator(module.encoders)(samples)
    model = module.model
    queries = model.encode(batch.inputs["query_input_ids"], batch.inputs["query_attention_mask"], "query")
    docs = model.encode(batch.inputs["doc_input_ids"], batch.inputs["doc_attention_mask"], "doc")
    in_batch = model.similarity(queries, docs)  # [Q, Q*N]
    own = torch.stack([in_batch[q, q * 3 : q * 3 + 3] for q in range(2)])  # [Q, N]: each query's candidates
    for q, sample in enumerate(samples):
        assert torch.allclose(own[q], module.score(sample.query, list(sample.docs)).scores, atol=1e-5)
    loss = InBatchCrossEntropy()(in_batch) + RankNet()(own, batch.targets)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
