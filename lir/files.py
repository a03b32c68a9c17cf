"""Safe files: atomic writes, checksums, confined paths and all-or-nothing replacement of folders.

Nothing lir writes is ever half there. A file is written to a temporary file beside it and renamed. A
folder (an index, an export and its Triton models) is built in a staging folder and published by
`FolderSwap`: the folders it replaces are moved aside, the new ones renamed into place, and the old ones
deleted only once every new one is in place. Any error, Ctrl-C or SIGTERM before that restores the old
folders; termination signals wait while the renames run, and a journal beside the folders lets the next
publication in that parent finish or undo one that a SIGKILL or a power cut interrupted. Only folders that
lir itself wrote are ever replaced (`owned`), never a corpus, a file, a link or a foreign folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lir.errors import LirError

JOURNAL_PREFIX = ".lir-swap-"
STAGING_MARK = ".lir-staging-"
BACKUP_MARK = ".lir-old-"
TERMINATING = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def json_checksum(data: dict[str, Any]) -> str:
    """SHA-256 of a JSON object in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path`, with one-line errors for a missing, undecodable or non-object file."""
    file = Path(path)
    if not file.is_file():
        raise LirError(f"{file} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise LirError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LirError(f"{file} does not hold a JSON object")
    return data


def plain_name(name: str, what: str = "name") -> str:
    """`name` if it names an entry of a folder: no path separator, not `.`/`..`, no leading dot, not empty."""
    if (
        not isinstance(name, str)
        or not name
        or name.startswith(".")
        or any(char in name for char in "/\\\0")
        or not name.isprintable()
    ):
        raise LirError(f"{what} {name!r} must be a plain name (no path separator, leading '.', '..' or absolute path)")
    return name


def confined(folder: str | os.PathLike, relative: object, what: str) -> Path:
    """`folder/relative`, after checking that it stays inside `folder`: a relative path without `..`, and no
    link on the way leading out. Checked before anything is read, so a crafted file learns nothing."""
    if not isinstance(relative, str) or not relative or "\0" in relative or "\\" in relative:
        raise LirError(f"{what} {relative!r} is not a relative path inside {folder}")
    parts = PurePosixPath(relative)
    if parts.is_absolute() or ".." in parts.parts:
        raise LirError(f"{what} {relative!r} leaves its folder {folder}")
    root = Path(folder).resolve()
    path = (root / parts).resolve()
    if not path.is_relative_to(root):
        raise LirError(f"{what} {relative!r} leads out of its folder {folder} (through a link)")
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` through a temporary file in the same folder and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same folder and a rename."""
    target = _regular_file(path)  # the writability probe of check_output_file is mkstemp's own job here
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_file(path: str | os.PathLike) -> Path:
    """Check before any work that a file can be written at `path`: not a folder, link or device, in a folder
    that is writable or can be made. One-line errors otherwise; nothing is made."""
    target = _regular_file(path)
    check_writable(target.parent)
    return target


def _regular_file(path: str | os.PathLike) -> Path:
    """`path`, refused when something other than a regular file (a folder, a link, a device) stands there."""
    target = Path(path)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise LirError(f"{target} exists and is not a regular file: name a file to write")
    return target


def check_not_an_input(output: str | os.PathLike, inputs: Iterable[str | None]) -> None:
    """Refuse an output file that is one of the command's input files (it would be replaced); a BEIR folder
    stands for its corpus, queries and qrels files."""
    target = Path(output)
    if not target.exists():
        return
    for source in filter(None, inputs):
        path = Path(source)
        files = [path / "corpus.jsonl", path / "queries.jsonl", *path.glob("qrels/*")] if path.is_dir() else [path]
        if any(file.exists() and os.path.samefile(target, file) for file in files):
            raise LirError(f"--output {output} is an input of this command ({source}): name another file")


def check_writable(folder: str | os.PathLike) -> Path:
    """Prove, without making anything, that `folder` can be written: it is a folder in which files can be
    created, or it can be made (its nearest existing ancestor is such a folder)."""
    path = Path(os.path.abspath(folder))
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise LirError(f"{existing} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lir-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LirError(f"cannot write in {existing} ({exc.strerror or exc})") from None
    return Path(folder)


def split_target(path: str | os.PathLike, what: str) -> tuple[Path, str]:
    """(parent folder, plain name) of a folder to write; `.`, `..` and `/` are refused as targets."""
    absolute = Path(os.path.abspath(path))
    if not absolute.name or Path(path).name in ("", ".", ".."):
        raise LirError(f"{path!s} cannot be {what}: name a new folder (e.g. indexes/mine)")
    return absolute.parent, plain_name(absolute.name, f"the name of {what}")


def owned_by(marker: str, formats: tuple[str, ...]) -> Callable[[Path], bool]:
    """A test of whether a folder is one lir wrote: it holds the JSON file `marker` whose `format` is one of
    `formats` (an index's `index.json`, an export's `manifest.json`)."""

    def owned(folder: Path) -> bool:
        try:
            return json.loads((folder / marker).read_text(encoding="utf-8")).get("format") in formats
        except (OSError, ValueError, AttributeError):
            return False

    return owned


@dataclass
class _Entry:
    name: str
    staging: Path | None
    owned: Callable[[Path], bool]
    what: str
    backup: Path | None = None
    installed: bool = False


class FolderSwap:
    """Publish new folders into `parent` and remove old ones, all at once or not at all.

    `stage(name, owned)` makes a staging folder for `parent/name` (refused at once when `name` exists and is
    not `owned` by this kind of writer, or `overwrite` is off); `drop(name)` removes an existing owned
    folder with the rest. Leaving the `with` block normally publishes; an exception discards the staging.
    """

    def __init__(self, parent: str | os.PathLike, overwrite: bool = False) -> None:
        self.parent = Path(parent)
        self.overwrite = overwrite
        self._entries: dict[str, _Entry] = {}
        self._journal: Path | None = None
        self._made: list[Path] = []
        check_writable(self.parent)
        if self.parent.is_dir():
            recover(self.parent)

    def check(self, name: str, owned: Callable[[Path], bool], what: str = "a folder") -> Path:
        """Refuse, before any work, to put a new `name` where something lir may not replace stands."""
        target = self.parent / plain_name(name, f"the name of {what}")
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise LirError(f"{target} exists and is not a folder: lir replaces only folders it wrote")
        if target.exists():
            if not self.overwrite:
                raise LirError(f"{target} already exists (pass --overwrite to replace it)")
            if not owned(target):
                raise LirError(f"{target} is not {what} written by lir: refusing to replace it")
        return target

    def stage(self, name: str, owned: Callable[[Path], bool], what: str = "a folder") -> Path:
        """A new empty staging folder whose content will become `parent/name`."""
        self.check(name, owned, what)
        missing = [p for p in (self.parent, *self.parent.parents) if not p.exists()]
        self.parent.mkdir(parents=True, exist_ok=True)
        self._made.extend(missing)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}{STAGING_MARK}{os.getpid()}-", dir=self.parent))
        os.chmod(staging, 0o777 & ~_umask())
        self._entries[name] = _Entry(name, staging, owned, what)
        return staging

    def drop(self, name: str, owned: Callable[[Path], bool], what: str = "a folder") -> None:
        """Remove the existing `parent/name` (one lir wrote) when the others are published."""
        target = self.check(name, owned, what)
        if target.exists():
            self._entries[name] = _Entry(name, None, owned, what)

    def __enter__(self) -> FolderSwap:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def discard(self) -> None:
        """Remove every staging folder; nothing published."""
        for entry in self._entries.values():
            if entry.staging is not None:
                shutil.rmtree(entry.staging, ignore_errors=True)
        self._entries.clear()
        for folder in self._made:  # the folders staging made, nearest first, when nothing else is in them
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made.clear()

    def commit(self) -> None:
        """Move the old folders aside, the new ones into place, then delete the old ones; any failure or
        termination signal before the last rename puts everything back as it was."""
        with _signals_held() as pending:
            try:
                self._journal = _write_journal(self.parent, self._entries.values())
                for entry in self._entries.values():
                    self._swap(entry, pending)
                _mark_committed(self._journal)
            except BaseException:
                self._undo()
                raise
        for entry in self._entries.values():
            if entry.backup is not None:
                shutil.rmtree(entry.backup, ignore_errors=True)
        self._journal.with_suffix(".done").unlink(missing_ok=True)
        self._journal.unlink(missing_ok=True)
        self._entries.clear()

    def _swap(self, entry: _Entry, pending: Callable[[], bool]) -> None:
        target = self.parent / entry.name
        if pending():
            raise KeyboardInterrupt
        self.check(entry.name, entry.owned, entry.what)  # again: another process may have written it meanwhile
        if target.exists():
            entry.backup = _backup(self.parent, entry.name)
            os.replace(target, entry.backup)
        if pending():
            raise KeyboardInterrupt
        if entry.staging is not None:
            os.replace(entry.staging, target)
            entry.installed = True

    def _undo(self) -> None:
        for entry in reversed(list(self._entries.values())):
            target = self.parent / entry.name
            if entry.installed:
                os.replace(target, entry.staging)
            if entry.backup is not None and entry.backup.exists():
                os.replace(entry.backup, target)
        self.discard()
        if self._journal is not None:
            self._journal.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[Callable[[], bool]]:
    """Hold SIGINT, SIGTERM and SIGHUP while folders are renamed: their handlers only note that one came, and
    the test yielded says whether one did (the caller then undoes and raises KeyboardInterrupt before its
    last rename, or has finished after it). Python runs handlers in the main thread only, so other threads
    hold nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, _: arrived.append(signum)) for signum in TERMINATING}
    try:
        yield lambda: bool(arrived)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _backup(parent: Path, name: str, pid: int | None = None) -> Path:
    """Where the folder `name` waits while its replacement is put in place."""
    return parent / f".{name}{BACKUP_MARK}{pid or os.getpid()}"


def _write_synced(path: Path, data: bytes) -> None:
    """Write a small file and flush it and its folder to disk (the journal must outlive a power cut)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _write_journal(parent: Path, entries: Any) -> Path:
    """The journal of a publication: which folders it replaces (before the first rename)."""
    journal = parent / f"{JOURNAL_PREFIX}{os.getpid()}.json"
    record = {"host": socket.gethostname(), "names": [entry.name for entry in entries]}
    _write_synced(journal, json.dumps(record).encode("utf-8"))
    return journal


def _mark_committed(journal: Path) -> None:
    """Note that every new folder is in place: from here on, recovery deletes the old ones."""
    _write_synced(journal.with_suffix(".done"), b"")


def recover(parent: Path) -> None:
    """Finish or undo the publications in `parent` whose process died (SIGKILL, power cut): undo those that
    had not installed every folder, delete the old folders of those that had; and remove staging folders
    of dead processes."""
    for journal in parent.glob(f"{JOURNAL_PREFIX}*.json"):
        pid = journal.stem[len(JOURNAL_PREFIX) :]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            record = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None  # killed while writing it: nothing was renamed yet
        if record is not None and record.get("host") != socket.gethostname():
            continue
        if record is None or journal.with_suffix(".done").exists():
            for backup in parent.glob(f".*{BACKUP_MARK}{pid}"):
                shutil.rmtree(backup, ignore_errors=True)
        else:
            for name in reversed(record.get("names", [])):
                target, backup = parent / name, _backup(parent, name, int(pid))
                if not backup.exists():
                    continue
                if target.exists():
                    os.replace(target, parent / f".{name}{STAGING_MARK}{pid}-undone")
                os.replace(backup, target)
        journal.with_suffix(".done").unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
    for staging in parent.glob(f".*{STAGING_MARK}*"):
        pid = staging.name.split(STAGING_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
