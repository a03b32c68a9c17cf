"""All-or-nothing replacement of folders (`lir.files.FolderSwap`): a failure, a SIGINT or a SIGKILL at any
step of publishing leaves either every old folder or every new one, and nothing half-written or hidden."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lir import files
from lir.errors import LirError
from lir.files import FolderSwap, confined, plain_name, recover

OWNED = files.owned_by("mark.json", ("test-folder",))
NAMES = ("model", "model.encoder", "model.scorer")


def make_folder(path: Path, content: str) -> None:
    path.mkdir(parents=True)
    (path / "mark.json").write_text(json.dumps({"format": "test-folder"}))
    (path / "content.txt").write_text(content)


def state(parent: Path) -> dict[str, str]:
    """Every entry of `parent`: folder name → its content.txt (hidden leftovers show up too)."""
    return {p.name: (p / "content.txt").read_text() if (p / "content.txt").exists() else "?" for p in parent.iterdir()}


def publish(parent: Path, names: tuple[str, ...] = NAMES, content: str = "new") -> None:
    with FolderSwap(parent, overwrite=True) as swap:
        for name in names:
            staging = swap.stage(name, OWNED)
            make_folder(staging / "inner", content)
            for file in (staging / "inner").iterdir():
                file.rename(staging / file.name)
            (staging / "inner").rmdir()


@pytest.fixture
def old(tmp_path) -> Path:
    for name in NAMES:
        make_folder(tmp_path / name, "old")
    return tmp_path


def replace_calls(parent: Path) -> int:
    """How many renames a successful publication of NAMES over NAMES makes (measured on a copy)."""
    copy = parent.parent / (parent.name + "-count")
    for name in NAMES:
        make_folder(copy / name, "old")
    calls = 0
    real = os.replace

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(files.os, "replace", counting)
        publish(copy)
    assert state(copy) == dict.fromkeys(NAMES, "new")
    return calls


def at_rename(number: int, action) -> object:
    """os.replace that runs `action()` just before the rename of that `number` (from 0), then renames."""
    real, calls = os.replace, [0]

    def replace(*args, **kwargs):
        calls[0] += 1
        if calls[0] == number + 1:
            action()
        return real(*args, **kwargs)

    return replace


def disk_full() -> None:
    raise OSError(28, "No space left on device")


def test_publish_replaces_every_folder(old):
    publish(old)
    assert state(old) == dict.fromkeys(NAMES, "new")


def test_a_failure_at_any_rename_restores_every_old_folder(old):
    total = replace_calls(old)
    assert total >= 2 * len(NAMES)
    for fail_at in range(total):
        with pytest.MonkeyPatch.context() as patch, pytest.raises(OSError):
            patch.setattr(files.os, "replace", at_rename(fail_at, disk_full))
            publish(old)
        assert state(old) == dict.fromkeys(NAMES, "old"), f"failure at rename {fail_at}"


def test_sigint_at_any_rename_leaves_all_old_or_all_new(old):
    total = replace_calls(old)
    outcomes = []
    for signal_at in range(total):
        for name in NAMES:
            (old / name / "content.txt").write_text("old")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(files.os, "replace", at_rename(signal_at, lambda: os.kill(os.getpid(), signal.SIGINT)))
            try:
                publish(old)
                outcomes.append("new")
            except KeyboardInterrupt:  # the signal is held until the renames are over: then all old or all new
                outcomes.append("old")
        assert state(old) == dict.fromkeys(NAMES, outcomes[-1]), f"SIGINT at rename {signal_at}"
    assert "old" in outcomes and outcomes[-1] == "new"  # before the last rename: undone; after it: done


def test_an_error_while_staging_keeps_the_old_folders(old):
    with pytest.raises(RuntimeError), FolderSwap(old, overwrite=True) as swap:
        make_folder(swap.stage("model", OWNED) / "x", "new")
        raise RuntimeError("export failed")
    assert state(old) == dict.fromkeys(NAMES, "old")


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from lir import files
    from test_publish import publish
    real, calls = os.replace, 0
    def killing(*args, **kwargs):
        global calls
        calls += 1
        if calls == {kill_at} + 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    files.os.replace = killing
    publish(files.Path({parent!r}))
    """
)


def test_a_sigkill_at_any_rename_is_finished_or_undone_by_the_next_publication(old):
    total = replace_calls(old)
    for kill_at in range(total):
        script = KILLER.format(tests=str(Path(__file__).parent), kill_at=kill_at, parent=str(old))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr
        recover(old)
        found = state(old)
        assert set(found) == set(NAMES), f"leftovers after SIGKILL at rename {kill_at}: {sorted(found)}"
        assert len(set(found.values())) == 1, f"a mix of old and new after SIGKILL at rename {kill_at}: {found}"
        publish(old, content="old")  # back to the start for the next round


def test_only_owned_folders_are_replaced(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "corpus.jsonl").write_text("{}")
    (tmp_path / "file.jsonl").write_text("{}")
    (tmp_path / "link").symlink_to(tmp_path / "corpus")
    swap = FolderSwap(tmp_path, overwrite=True)
    for name, message in (("corpus", "not a folder written by lir"), ("file.jsonl", "not a folder"), ("link", "not a")):
        with pytest.raises(LirError, match=message):
            swap.stage(name, OWNED)
    with pytest.raises(LirError, match="already exists"):
        FolderSwap(tmp_path).stage("corpus", OWNED)
    assert (tmp_path / "corpus" / "corpus.jsonl").read_text() == "{}" and (tmp_path / "file.jsonl").is_file()


@pytest.mark.parametrize("name", [".", "..", "../evil", "a/b", "/abs", "", ".hidden", "a\\b", "x\0y"])
def test_plain_names(name):
    with pytest.raises(LirError, match="plain name"):
        plain_name(name)


@pytest.mark.parametrize("relative", ["/etc/passwd", "../../x", "a/../../x", "", "a\\..\\x"])
def test_confined_paths(tmp_path, relative):
    with pytest.raises(LirError):
        confined(tmp_path, relative, "graph file")


def test_confined_refuses_links_out(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "encoder.onnx").symlink_to("/etc/passwd")
    with pytest.raises(LirError, match="through a link"):
        confined(tmp_path / "model", "encoder.onnx", "graph file")
    (tmp_path / "model" / "inner.onnx").write_text("x")
    assert confined(tmp_path / "model", "inner.onnx", "graph file").read_text() == "x"


def test_a_folder_that_appears_while_staging_is_not_replaced(tmp_path):
    with pytest.raises(LirError, match="already exists"), FolderSwap(tmp_path) as swap:
        make_folder(swap.stage("model", OWNED) / "x", "new")
        make_folder(tmp_path / "model", "another process's")  # written meanwhile, by someone else
    assert state(tmp_path) == {"model": "another process's"}
