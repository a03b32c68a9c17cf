"""The commands tried as a careless or hostile user would: nothing lost, nothing leaked, one-line errors.

Each test re-creates one defect of the trust issue (on the code before it, each failed): --overwrite that
replaced any path, overwrites that lost the old export, names that escaped the repository, manifests and
indexes that pointed outside their folder or at a server, read-only and full disks, and silent surprises
(the variant of an index, empty documents, leftover Triton models).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lir.files import json_checksum
from lir.trec import read_run


def run(module: str, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=os.environ | env
    )


def lir(*args: str, **options) -> subprocess.CompletedProcess:
    return run("lir.cli", *args, **options)


def one_line_error(done: subprocess.CompletedProcess, prog: str, message: str) -> None:
    """Exit 1 with one error line on stderr that holds `message` (progress bars may stand before it)."""
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{prog}: error:") and message in last, last


def tree(path: Path) -> dict[str, bytes | str]:
    """Every file and link under `path` with its content (links: their target), hidden entries included."""
    found: dict[str, bytes | str] = {}
    for item in sorted(path.rglob("*")):
        key = str(item.relative_to(path))
        if item.is_symlink():
            found[key] = "-> " + os.readlink(item)
        elif item.is_file():
            found[key] = item.read_bytes()
        else:
            found[key] = "dir"
    return found


@pytest.fixture
def repository(tiny_export, tmp_path) -> Path:
    """A copy of the tiny export's model repository (the export and its Triton graph models)."""
    copy = tmp_path / "repo"
    shutil.copytree(tiny_export.parent, copy, symlinks=True)
    return copy


@pytest.fixture
def corpus(scifact, tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("\n".join((scifact / "corpus.jsonl").read_text().splitlines()[:40]) + "\n")
    return folder


@pytest.fixture
def queries(tmp_path) -> Path:
    path = tmp_path / "queries.tsv"
    path.write_text("q1\tcancer and smoking\nq2\tprotein folding\n")
    return path


@pytest.fixture
def index(tiny_export, corpus, tmp_path) -> Path:
    output = tmp_path / "index"
    done = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus / "corpus.jsonl"), "--output", str(output))
    assert done.returncode == 0, done.stderr
    return output


# 1. --overwrite replaces only what lir wrote; 3. --name is a plain name


@pytest.mark.parametrize("name", [".", "..", "../evil", "a/b", "/tmp/lir-evil-export"])
def test_export_name_stays_inside_the_repository(repository, st_dir, name):
    before = tree(repository)
    done = run("lir.export.cli", "--model", str(st_dir), "--output", str(repository), "--name", name, "--overwrite")
    one_line_error(done, "lir-export", "plain name")
    assert done.stderr.count("\n") == 1
    assert tree(repository) == before
    assert not (repository.parent / "evil").exists() and not Path("/tmp/lir-evil-export").exists()


def test_index_overwrite_never_replaces_a_corpus_a_file_or_a_foreign_folder(tiny_export, corpus, tmp_path):
    (tmp_path / "some").mkdir()
    (tmp_path / "some" / "file.jsonl").write_text("{}\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = tree(tmp_path)
    for output, message in (
        (corpus, "not an index written by lir"),
        (tmp_path / "some" / "file.jsonl", "not a folder"),
        (tmp_path / "mine", "not an index written by lir"),
        (tmp_path, "not an index written by lir"),
    ):
        args = ("--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(output), "--overwrite")
        done = lir("index", *args, cwd=tmp_path)
        one_line_error(done, "lir index", message)
        assert done.stderr.count("\n") == 1  # refused before reading or encoding anything
    done = lir(
        "index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", ".", "--overwrite", cwd=corpus
    )
    one_line_error(done, "lir index", "cannot be an index")
    assert tree(tmp_path) == before


def test_index_overwrite_replaces_a_lir_index(index, tiny_export, corpus):
    first = json.loads((index / "index.json").read_text())
    done = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(index), "--overwrite")
    assert done.returncode == 0, done.stderr
    assert json.loads((index / "index.json").read_text())["count"] == first["count"]
    assert not [p for p in index.parent.iterdir() if p.name.startswith(".")]


# 2. a failed or interrupted overwrite keeps the old export


@pytest.mark.parametrize("fault", ["error", "sigint"])
def test_a_failed_export_overwrite_keeps_the_old_export(repository, st_dir, scifact, monkeypatch, fault):
    from lir.clients.onnx_engine import OnnxEngine
    from lir.export import bundle

    before = tree(repository)
    expected = OnnxEngine(repository / "tiny").encode_queries(["cancer and smoking"])
    real = bundle.write_graph_model

    def failing(*args, **kwargs):  # the step that writes the Triton graph models
        real(*args, **kwargs)
        if fault == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle, "write_graph_model", failing)
    with pytest.raises((OSError, KeyboardInterrupt)):
        bundle.export_model(
            str(st_dir), repository, "tiny", parity_data=str(scifact), overwrite=True, log=lambda _: None
        )
    assert tree(repository) == before  # nothing half-written, no dangling link, no hidden leftover
    found = OnnxEngine(repository / "tiny").encode_queries(["cancer and smoking"])
    np.testing.assert_array_equal(found, expected)


def test_a_leftover_graph_model_is_refused_before_any_work(repository, st_dir, tmp_path):
    (repository / "fresh.encoder").mkdir()
    (repository / "fresh.encoder" / "config.pbtxt").write_text('backend: "python"\n')
    for extra in ([], ["--overwrite"]):
        start = time.monotonic()
        done = run("lir.export.cli", "--model", str(st_dir), "--output", str(repository), "--name", "fresh", *extra)
        one_line_error(done, "lir-export", "fresh.encoder")
        assert "loading" not in done.stderr and time.monotonic() - start < 20  # before torch loads the model
    assert not (repository / "fresh").exists()


# 4. paths in manifest.json and index.json are confined to their folder


def nested(data: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        data = data[key]
    return data


def edit_manifest(directory: Path, edit) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("graph_file", ["/etc/passwd", "../../x", "../tiny.encoder/1/model.onnx", "sub/x.onnx"])
def test_crafted_manifest_graph_paths_are_refused_before_any_read(repository, graph_file):
    from lir.clients.onnx_engine import OnnxEngine
    from lir.errors import LirError

    edit_manifest(
        repository / "tiny", lambda data: data["graphs"]["encoder"]["variants"]["fp32"].update(file=graph_file)
    )
    with pytest.raises(LirError, match="plain name") as refused:
        OnnxEngine(repository / "tiny")
    assert "missing" not in str(refused.value) and "checksum" not in str(refused.value)


def test_a_graph_linked_out_of_the_export_is_refused(repository, tmp_path):
    from lir.clients.onnx_engine import OnnxEngine
    from lir.errors import LirError

    other = tmp_path / "other.onnx"
    shutil.copy(repository / "tiny" / "encoder.onnx", other)
    (repository / "tiny" / "encoder.onnx").unlink()
    (repository / "tiny" / "encoder.onnx").symlink_to(other)
    with pytest.raises(LirError, match="through a link"):
        OnnxEngine(repository / "tiny")


@pytest.mark.parametrize("tokenizer", ["/etc/hostname", "../tiny.encoder/config.pbtxt"])
def test_crafted_manifest_tokenizer_paths_are_refused(repository, tokenizer, corpus):
    edit_manifest(repository / "tiny", lambda data: data["tokenizer"].update(file=tokenizer))
    done = lir("index", "--engine", str(repository / "tiny"), "--corpus", str(corpus), "--output", "x")
    one_line_error(done, "lir index", "plain name")


@pytest.mark.parametrize(
    "edit",
    [
        lambda data: data.update(graphs=[]),
        lambda data: data.update(tokenizer="tokenizer.json"),
        lambda data: data["query"].update(max_length="many"),
        lambda data: data.update(name="../evil"),
    ],
)
def test_malformed_manifests_are_one_line(repository, corpus, edit, tmp_path):
    edit_manifest(repository / "tiny", edit)
    done = lir("index", "--engine", str(repository / "tiny"), "--corpus", str(corpus), "--output", str(tmp_path / "x"))
    one_line_error(done, "lir index", "invalid manifest")


# 5. an index never sends queries anywhere, nor switches the model check off


def edit_index(index: Path, edit, rechecksum: bool) -> None:
    path = index / "index.json"
    data = json.loads(path.read_text())
    checksum = data.pop("checksum")
    edit(data)
    data["checksum"] = json_checksum(data) if rechecksum else checksum
    path.write_text(json.dumps(data))


@contextlib.contextmanager
def listener():
    """A socket on a free loopback port that counts the connections it receives."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    yield server
    server.close()


def connections(server: socket.socket) -> int:
    count = 0
    with contextlib.suppress(TimeoutError):
        while True:
            server.accept()[0].close()
            count += 1
    return count


@pytest.mark.parametrize("rechecksum", [False, True])
def test_an_index_never_dials_a_server_it_names(index, queries, tmp_path, rechecksum):
    with listener() as server:
        url = f"triton://127.0.0.1:{server.getsockname()[1]}/m"
        edit_index(index, lambda data: data["engine"].update(directory=url, url=url), rechecksum)
        done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(tmp_path / "r.trec"))
        one_line_error(done, "lir search", "--engine" if rechecksum else "does not match its checksum")
        assert connections(server) == 0
    assert not (tmp_path / "r.trec").exists()


@pytest.mark.parametrize("rechecksum", [False, True])
def test_the_model_check_cannot_be_switched_off(index, queries, tmp_path, rechecksum):
    edit_index(index, lambda data: data.update(model={}), rechecksum)
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(tmp_path / "r.trec"))
    one_line_error(done, "lir search", "records no model" if rechecksum else "does not match its checksum")


def test_another_model_of_the_same_size_is_refused(index, queries, repository, tmp_path, st_dir):
    edit_manifest(repository / "tiny", lambda data: data.update(name="other"))
    args = ("--index", str(index), "--queries", str(queries), "--output", str(tmp_path / "r.trec"))
    done = lir("search", *args, "--engine", str(repository / "tiny"))
    one_line_error(done, "lir search", "the index was built with model 'tiny'")


# 8. read-only and full disks, outputs that cannot be files, bad numbers


@contextlib.contextmanager
def mounted(path: Path, options: str):
    """A small tmpfs at `path` (skips the test where mounting is not allowed)."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_output_is_refused_before_encoding(tiny_export, corpus, queries, index, tmp_path):
    with mounted(tmp_path / "ro", "ro,size=1m") as folder:
        done = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(folder / "idx"))
        one_line_error(done, "lir index", "cannot write in")
        assert done.stderr.count("\n") == 1  # no progress bar: nothing was encoded
        done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(folder / "run.trec"))
        one_line_error(done, "lir search", "cannot write in")
        assert done.stderr.count("\n") == 1


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder` up to `leave` free bytes."""
    ballast = folder / "ballast"
    with open(ballast, "ab", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    os.truncate(ballast, max(0, ballast.stat().st_size - leave))


def test_a_full_disk_is_one_line_and_leaves_nothing(tiny_export, st_dir, scifact, corpus, queries, index, tmp_path):
    with mounted(tmp_path / "full", "size=256k") as folder:
        fill(folder, 4096)
        done = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(folder / "idx"))
        one_line_error(done, "lir index", "No space left on device")
        fill(folder, 0)
        done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(folder / "run.trec"))
        one_line_error(done, "lir search", "No space left on device")
        args = ("--model", str(st_dir), "--output", str(folder / "repo"), "--parity-data", str(scifact))
        done = run("lir.export.cli", *args)
        one_line_error(done, "lir-export", "No space left on device")
        assert [p.name for p in folder.iterdir()] == ["ballast"]  # not even the repository folder it made


def test_search_output_naming_a_folder_is_refused_at_once(index, queries, tmp_path):
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(tmp_path))
    one_line_error(done, "lir search", "not a regular file")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("k", ["0", "-5", "many"])
def test_k_must_be_positive(index, queries, tmp_path, k):
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(tmp_path / "r"), "-k", k)
    assert done.returncode == 2 and "Invalid value for '-k'" in done.stderr and "Traceback" not in done.stderr


def test_lir_debug_shows_the_traceback(tmp_path):
    done = lir("search", "--index", str(tmp_path), "--queries", "x", "--output", "r", LIR_DEBUG="1")
    assert done.returncode == 1 and "Traceback" in done.stderr


# 9. silent surprises


def test_the_variant_follows_the_index(tiny_export, corpus, queries, tmp_path):
    from lir.clients.indexes import open_index
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.retriever import Retriever
    from lir.manifest import load_manifest

    index, output = tmp_path / "int8", tmp_path / "run.trec"
    done = lir(
        "index", "--engine", str(tiny_export), "--variant", "int8", "--corpus", str(corpus), "--output", str(index)
    )
    assert done.returncode == 0, done.stderr
    built_by = json.loads((index / "index.json").read_text())["engine"]
    int8 = load_manifest(tiny_export).graphs["encoder"].variants["int8"]
    assert built_by["variant"] == "int8" and built_by["doc_graph_sha256"] == int8.sha256
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(output), "-k", "10")
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    both = {"q1": "cancer and smoking", "q2": "protein folding"}  # int8 ranges are per batch: the same batch
    expected = Retriever(OnnxEngine(tiny_export, variant="int8"), open_index(index)).search(both, k=10)
    assert read_run(output)["q1"] == pytest.approx(expected["q1"], abs=1e-6)
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(output), "--variant", "fp32")
    assert done.returncode == 0 and "built with int8 graphs, queries use fp32" in done.stderr


def test_empty_documents_are_not_indexed(tiny_export, scifact, queries, tmp_path):
    lines = (scifact / "corpus.jsonl").read_text().splitlines()[:30]
    empty = [json.dumps({"_id": f"empty{i}", "title": "", "text": text}) for i, text in enumerate(["", " ", "\t\n "])]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(empty + lines) + "\n")
    index, output = tmp_path / "index", tmp_path / "run.trec"
    done = lir("index", "--engine", str(tiny_export), "--corpus", str(corpus), "--output", str(index))
    assert done.returncode == 0 and "indexed 30 documents" in done.stdout and "skipped 3 empty" in done.stdout
    assert json.loads((index / "index.json").read_text())["empty_docs_skipped"] == 3
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert not any(doc.startswith("empty") for docs in read_run(output).values() for doc in docs)


@pytest.mark.parametrize("doc_id", ["a b", "tab\there", "", "new\nline"])
def test_ids_a_run_cannot_hold_are_refused_at_indexing(tiny_export, doc_id):
    from lir.clients.indexes import check_doc_ids
    from lir.errors import LirError

    with pytest.raises(LirError, match="which a TREC run cannot hold"):
        check_doc_ids(["fine", doc_id], 2, "documents")
    with pytest.raises(LirError, match="repeats doc id 'fine'"):
        check_doc_ids(["fine", "x", "fine"], 3, "documents")


def test_an_output_that_is_an_input_is_refused(index, queries, tiny_export, tmp_path, scifact):
    before = queries.read_bytes()
    done = lir("search", "--index", str(index), "--queries", str(queries), "--output", str(queries))
    one_line_error(done, "lir search", "is an input of this command")
    assert queries.read_bytes() == before
    beir = tmp_path / "beir"
    shutil.copytree(scifact, beir, ignore=shutil.ignore_patterns("corpus.jsonl"))
    done = lir("search", "--index", str(index), "--queries", str(beir), "--output", str(beir / "queries.jsonl"))
    one_line_error(done, "lir search", "is an input of this command")
    run_file = tmp_path / "first.trec"
    run_file.write_text("q1 Q0 d1 1 1.0 x\n")
    args = ("--engine", str(tiny_export), "--run", str(run_file), "--queries", str(queries), "--docs", str(queries))
    done = lir("rerank", *args, "--output", str(run_file))
    one_line_error(done, "lir rerank", "is an input of this command")
    assert run_file.read_text() == "q1 Q0 d1 1 1.0 x\n"


@pytest.mark.parametrize("name", ["naïve", "a b", "x" * 101, "-lead"])
def test_export_names_are_names_a_url_can_hold(repository, st_dir, name):
    done = run("lir.export.cli", "--model", str(st_dir), "--output", str(repository), f"--name={name}")
    one_line_error(done, "lir-export", "model name")
