"""PyTorch-path inference in Lightning IR's shape: `IndexCallback`, `SearchCallback` and `ReRankCallback` in
`trainer.callbacks`, run by `LirTrainer.index`, `.search` and `.re_rank` (`lir index|search|re-rank --config`).

Each encodes or scores with a `TorchEngine` over the model and writes what the clients write (`lir index
--engine`, `lir search`, `lir rerank`): the same index folders and TREC runs, so a model can be evaluated
before export and compared with its export.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Callback, Trainer

from lir.clients.indexes import open_index
from lir.clients.reranker import Reranker
from lir.clients.retriever import Retriever, write_index
from lir.errors import LirError
from lir.metrics import evaluate, format_table
from lir.train.data import DocDataset, QueryDataset, RunDataset
from lir.train.datamodule import LirDataModule
from lir.train.fit_module import FitModule
from lir.train.torch_engine import TorchEngine
from lir.trec import Qrels, Run, write_run


class InferenceCallback(Callback):
    """What the inference callbacks share: the command that runs them and the dataset kind they read.

    They are Lightning callbacks so that configs list them in `trainer.callbacks`, as Lightning IR's do, but
    no Lightning hook drives them: `LirTrainer.index/search/re_rank` call `run` with the datamodule's
    `inference_datasets`."""

    command: str
    dataset: type

    def run(self, engine: TorchEngine, datasets: Sequence, module: FitModule) -> None:
        """Encode or score `datasets` (all of this callback's kind) with `engine` and write the result."""
        raise NotImplementedError


class IndexCallback(InferenceCallback):
    """Encodes the documents of one DocDataset and writes the index of the model's family to `index_dir`;
    `index_config` is the clients' `--factory` spec (default: the family's exact index)."""

    command, dataset = "index", DocDataset

    def __init__(
        self, index_dir: str, index_config: str | None = None, overwrite: bool = False, batch_size: int = 32
    ) -> None:
        self.index_dir, self.index_config = index_dir, index_config
        self.overwrite, self.batch_size = overwrite, batch_size

    def run(self, engine: TorchEngine, datasets: Sequence, module: FitModule) -> None:
        if len(datasets) != 1:
            raise LirError(f"an IndexCallback writes one index: give one DocDataset, not {len(datasets)}")
        if Path(self.index_dir).exists() and not self.overwrite:
            raise LirError(f"{self.index_dir} already exists (set overwrite: true to replace it)")
        docs = [(sample.doc_id, sample.doc) for sample in datasets[0]]
        if not docs:
            raise LirError(f"{datasets[0].docs} holds no documents")
        built_by = {"url": engine.spec, "directory": None, "variant": "torch"}
        print(write_index(engine, docs, self.index_dir, built_by, self.index_config, self.overwrite, self.batch_size))


class SearchCallback(InferenceCallback):
    """Searches the index at `index_dir` with each QueryDataset's queries (top `k`, Faiss/late-interaction
    `search_params` as the clients take them) and writes `save_dir/<run_name or the dataset's name>.trec`;
    prints the module's evaluation metrics when the dataset has qrels."""

    command, dataset = "search", QueryDataset

    def __init__(
        self,
        index_dir: str,
        save_dir: str = "runs",
        k: int = 100,
        search_params: str | None = None,
        run_name: str | None = None,
    ) -> None:
        self.index_dir, self.save_dir, self.k = index_dir, save_dir, k
        self.search_params, self.run_name = search_params, run_name

    def run(self, engine: TorchEngine, datasets: Sequence, module: FitModule) -> None:
        index = open_index(self.index_dir)
        if self.search_params:
            index.set_search_parameters(self.search_params)
        retriever = Retriever(engine, index)
        names = run_names(self.run_name, len(datasets)) if self.run_name else [d.name for d in datasets]
        for dataset, name in zip(datasets, names, strict=True):
            queries = {sample.query_id: sample.query for sample in dataset.samples}
            if not queries:
                raise LirError(f"the QueryDataset {dataset.name} holds no queries")
            start = time.perf_counter()
            run = retriever.search(queries, k=self.k)
            seconds = time.perf_counter() - start
            path = save_run(self.save_dir, name, run, engine)
            print(
                f"searched {len(queries)} queries in {seconds:.2f} s ({1000 * seconds / len(queries):.2f} ms/query) "
                f"→ {path}"
            )
            report(run, dataset.qrels, module)


class ReRankCallback(InferenceCallback):
    """Re-scores every candidate (to the dataset's `depth`, never sampled) of each RunDataset and writes
    `save_dir/<run_name>.trec` (default `re-rank`; several runs get `-0`, `-1`, ... appended); prints the
    module's evaluation metrics when the dataset has qrels."""

    command, dataset = "re-rank", RunDataset

    def __init__(self, save_dir: str = "runs", run_name: str | None = None, batch_size: int = 32) -> None:
        self.save_dir, self.run_name, self.batch_size = save_dir, run_name, batch_size

    def run(self, engine: TorchEngine, datasets: Sequence, module: FitModule) -> None:
        reranker = Reranker(engine, batch_size=self.batch_size, progress=True)
        for dataset, name in zip(datasets, run_names(self.run_name or "re-rank", len(datasets)), strict=True):
            candidates = {qid: [(c.doc_id, dataset.docs[c.doc_id]) for c in found] for qid, found in dataset.ranked}
            start = time.perf_counter()
            run = reranker.rerank_run(dataset.queries, candidates)
            seconds = time.perf_counter() - start
            path = save_run(self.save_dir, name, run, engine)
            pairs = sum(len(found) for found in candidates.values())
            print(f"re-ranked {pairs} candidates of {len(run)} queries in {seconds:.2f} s → {path}")
            report(run, dataset.qrels, module)


def run_names(name: str, count: int) -> list[str]:
    """`name` for one run, `name-0`, `name-1`, ... for several."""
    return [name] if count == 1 else [f"{name}-{i}" for i in range(count)]


def save_run(save_dir: str, name: str, run: Run, engine: TorchEngine) -> Path:
    """Write `run` to `save_dir/name.trec` (atomically, as the clients do)."""
    path = Path(save_dir) / f"{name}.trec"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_run(path, run, system=engine.spec)
    return path


def report(run: Run, qrels: Qrels, module: FitModule) -> None:
    """Print the module's evaluation metrics of `run` when there are qrels."""
    if qrels:
        print(format_table(evaluate(run, qrels, module.evaluation_metrics)))


class LirTrainer(Trainer):
    """A Lightning Trainer that also indexes, searches and re-ranks with the callbacks in `callbacks`, on the
    trainer's device (CUDA when it runs on a GPU) in the model's precision."""

    def index(self, model: FitModule, datamodule: LirDataModule) -> None:
        """Encode a DocDataset and write an index (IndexCallback)."""
        self._infer(IndexCallback, model, datamodule)

    def search(self, model: FitModule, datamodule: LirDataModule) -> None:
        """Search an index with QueryDatasets and write TREC runs (SearchCallback)."""
        self._infer(SearchCallback, model, datamodule)

    def re_rank(self, model: FitModule, datamodule: LirDataModule) -> None:
        """Re-rank RunDatasets and write TREC runs (ReRankCallback)."""
        self._infer(ReRankCallback, model, datamodule)

    def _infer(self, kind: type[InferenceCallback], model: FitModule, datamodule: LirDataModule) -> None:
        callbacks = [callback for callback in self.callbacks if isinstance(callback, kind)]
        if not callbacks:
            article = "an" if kind.__name__[0] in "AEIOU" else "a"
            raise LirError(f"lir {kind.command} needs {article} {kind.__name__} in trainer.callbacks")
        datasets = datamodule.inference_datasets
        wrong = [dataset for dataset in datasets if not isinstance(dataset, kind.dataset)]
        if wrong or not datasets:
            found = f", not a {type(wrong[0]).__name__}" if wrong else ""
            raise LirError(f"lir {kind.command} reads a {kind.dataset.__name__} in data inference_datasets{found}")
        device = self.strategy.root_device
        engine = TorchEngine(model, device if device.type == "cuda" else "cpu")
        for callback in callbacks:
            callback.run(engine, datasets, model)
