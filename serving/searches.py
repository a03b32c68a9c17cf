"""The search models `lir-serve --index` adds: an index folder served as the Triton model `<name>.search`.

`--index PATH[=NAME][,option=value...]`: the index folder, the model's name (default: the folder's name) and
options: `export=MODEL`, the export of the served repository that encodes the queries (default: the one
whose model built the index); `rerank=MODEL` with `docs=CORPUS` and `depth=N`: the top N (default 100)
re-ranked by that export of the repository over the document texts of CORPUS (BEIR folder, .jsonl, .tsv
or an ir_datasets id); `max_k=N`, the largest K a request may ask for (default 1000; with re-ranking, the
depth); any other `name=value` is a search parameter of the index (`nprobe=16`, `token_k=1024`, ...).

The models are written into the server's own work folder and served beside the repository (a second
`--model-repository`): the repository is never changed (it may be read-only, shared, or served again
without the index) and nothing outlives the server. Here only what is cheap is checked (index.json and
its checksum, the exports, the options); the model checks every file of the index when Triton loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lir.clients.indexes import parse_parameters, read_info
from lir.clients.retriever import check_model
from lir.errors import LirError
from lir.export.triton_repository import check_model_name, default_name, is_export, write_search_model
from lir.manifest import load_manifest

DEFAULT_DEPTH = 100
DEFAULT_MAX_K = 1000
SUFFIX = ".search"
OPTIONS = ("export", "rerank", "docs", "depth", "max_k")


def stages(parameters: dict[str, str]) -> list[str]:
    """The timed stages of a search model, in the order of its TIMINGS_MS output."""
    return ["encode", "search"] + (["rerank"] if parameters.get("rerank") else [])


@dataclass(frozen=True)
class SearchSpec:
    """One `--index` of lir-serve, parsed."""

    index: Path
    name: str
    options: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, text: str) -> SearchSpec:
        """`PATH[=NAME][,option=value...]`, or a LirError that says what is wrong with it."""
        head, _, rest = text.partition(",")
        path, sep, name = head.rpartition("=") if "=" in head else (head, "", "")
        if not path.strip():
            raise LirError(f"--index {text!r}: expected PATH[=NAME][,option=value...]")
        index = Path(path.strip())
        name = check_model_name(name.strip()) if sep else default_name(str(index.resolve()))
        return cls(index, name, tuple(parse_parameters(rest).items()))

    @property
    def model(self) -> str:
        """The name Triton serves it under."""
        return f"{self.name}{SUFFIX}"

    def parameters(self, repository: Path) -> dict[str, str]:
        """The config parameters of this search model over the exports of `repository` (absolute paths)."""
        options = dict(self.options)
        info = read_info(self.index)
        found = {
            "index": str(self.index.resolve()),
            "export": str(_encoder(repository, info, self.index, options.get("export"))),
        }
        search = ",".join(f"{key}={value}" for key, value in self.options if key not in OPTIONS)
        if search:
            found["search_parameters"] = search
        rerank, docs = options.get("rerank"), options.get("docs")
        if rerank is None:
            if docs or "depth" in options:
                raise LirError(f"--index {self.index}: docs= and depth= are options of rerank=MODEL")
            return found | {"max_k": str(self._number(options, "max_k", DEFAULT_MAX_K))}
        if not docs:
            raise LirError(f"--index {self.index}: rerank={rerank} needs docs=CORPUS (the texts it re-ranks)")
        depth = self._number(options, "depth", DEFAULT_DEPTH)
        max_k = self._number(options, "max_k", depth)
        if max_k > depth:
            raise LirError(f"--index {self.index}: max_k={max_k} is over the re-ranking depth {depth}")
        return found | {
            "rerank": str(_export(repository, rerank)),
            "rerank_depth": str(depth),
            "docs": str(Path(docs).resolve()) if Path(docs).exists() else docs,
            "max_k": str(max_k),
        }

    def _number(self, options: dict[str, str], name: str, default: int) -> int:
        raw = options.get(name, str(default))
        if not raw.isdigit() or int(raw) < 1:
            raise LirError(f"--index {self.index}: {name} must be a positive integer, not {raw!r}")
        return int(raw)


def _export(repository: Path, name: str) -> Path:
    folder = repository / name
    if not is_export(folder):
        raise LirError(f"{repository} holds no export {name!r}")
    return folder.resolve()


def _encoder(repository: Path, info: dict, index: Path, asked: str | None) -> Path:
    """The export of `repository` that encodes the queries of `index`: the one asked for (it must hold the
    model that built the index), else the one whose model built it (the one the index records, if several)."""
    built_with = info.get("model")
    if not isinstance(built_with, dict):
        raise LirError(f"{index} records no model that built it: it cannot be searched safely (rebuild it)")
    if asked is not None:
        folder = _export(repository, asked)
        check_model(built_with, _fingerprint(folder))
        return folder
    exports = [folder for folder in sorted(repository.iterdir()) if is_export(folder)]
    matching = [folder.resolve() for folder in exports if _fingerprint(folder) == built_with]
    recorded = (info.get("engine") or {}).get("directory")
    chosen = [folder for folder in matching if isinstance(recorded, str) and folder == Path(recorded).resolve()]
    if chosen or len(matching) == 1:
        return (chosen or matching)[0]
    if not matching:
        model = built_with.get("model")
        raise LirError(f"no export in {repository} holds {model!r}, the model that built {index}: lir-export it there")
    names = ", ".join(folder.name for folder in matching)
    raise LirError(f"exports {names} of {repository} all hold the model that built {index}: name one (export=NAME)")


def _fingerprint(folder: Path) -> dict[str, str]:
    try:
        return load_manifest(folder).fingerprint
    except LirError as exc:
        raise LirError(f"{folder}: {exc}") from None


def plan_search_models(specs: list[SearchSpec], repository: Path) -> dict[str, dict[str, str]]:
    """Triton model name → config parameters of each spec, refused when two specs or a model of the
    repository share a name."""
    planned: dict[str, dict[str, str]] = {}
    for spec in specs:
        if spec.model in planned or (repository / spec.model).exists():
            raise LirError(f"two models would be named {spec.model!r}: name the index (--index PATH=NAME)")
        planned[spec.model] = spec.parameters(repository)
    return planned


def write_search_models(planned: dict[str, dict[str, str]], folder: Path) -> None:
    """The planned search models as a Triton model repository in the new folder `folder`."""
    for name, parameters in planned.items():
        write_search_model(folder / name, parameters, stages(parameters))
