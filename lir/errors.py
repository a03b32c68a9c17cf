"""The one error type users see, and how every command turns any failure into one line on stderr.

`run_command` is the body of every entry point (`lir`, `lir-export`, `lir-serve`): a `LirError` prints its
message; an I/O error (no space left, permission denied, a folder where a file was expected) names the path;
text that is not UTF-8 says so; anything else is reported in one line as an unexpected error. Each is exit
code 1 (or the code its type maps to); Ctrl-C, SIGTERM and SIGHUP are 130. `LIR_DEBUG=1` shows the
traceback as well.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Mapping

INTERRUPTED = 130


class LirError(Exception):
    """A user-facing error whose message is one clear line."""


def one_line(text: str) -> str:
    """`text` with its line breaks folded, so that an error stays one line on any terminal."""
    return " ".join(str(text).split())


def describe(exc: BaseException) -> str:
    """One line that says what went wrong, naming the file where the exception knows it."""
    if isinstance(exc, LirError):
        return one_line(str(exc))
    if isinstance(exc, OSError):
        names = " → ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
        reason = exc.strerror or type(exc).__name__
        return one_line(f"{names}: {reason}" if names else f"{reason} ({exc})")
    if isinstance(exc, UnicodeError):
        return one_line(f"text that is not valid UTF-8 ({exc})")
    if isinstance(exc, MemoryError):
        return "out of memory"
    first = one_line(str(exc)) or "no message"
    return f"unexpected {type(exc).__name__}: {first} (LIR_DEBUG=1 shows the traceback)"


def run_command(
    prog: str,
    body: Callable[[], int | None],
    codes: Mapping[type[Exception], tuple[int, str]] | None = None,
    interrupted: str = "interrupted",
) -> int:
    """Run a command's body: its exit code, or one line on stderr and the error's code: 1, unless `codes`
    maps its type to a code and a label (a failed parity check: `(3, "parity check failed")`);
    `LIR_DEBUG=1` adds the traceback. SIGTERM and SIGHUP interrupt like Ctrl-C, so that half-done work is
    cleaned up and whatever a command was replacing is restored."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return INTERRUPTED
    except SystemExit:
        raise
    except Exception as exc:  # every failure becomes one line: that is this function's job
        if os.environ.get("LIR_DEBUG"):
            traceback.print_exc()
        code, label = next((found for kind, found in (codes or {}).items() if isinstance(exc, kind)), (1, "error"))
        print(f"{prog}: {label}: {describe(exc)}", file=sys.stderr)
        return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
