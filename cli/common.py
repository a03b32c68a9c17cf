"""What the three commands (`lir`, `lir-export`, `lir-serve`) share on click: their help settings, a positive
number type, and running a command as a function that returns its exit code.

Each command's callback runs its work through `lir.errors.run_command` (one-line errors, exit 1 or the code
its type maps to, 130 on Ctrl-C, SIGTERM or SIGHUP); `run_click` adds what click reports before that: `--help`
and `--version` exit 0, a usage error shows click's usage line and message and exits 2.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from lir.errors import INTERRUPTED

CONTEXT: dict[str, Any] = {"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 110}
"""click context settings of every command: defaults shown in `--help`, `-h` as well as `--help`."""


class PositiveNumber(click.ParamType):
    """A positive, finite float (nan and inf are refused: a nan tolerance would pass every parity check)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not 0 < number < math.inf:
            self.fail(f"must be a positive number, not {value!r}.", param, ctx)
        return number


def run_click(command: click.Command, argv: list[str] | None, prog: str) -> int:
    """Parse `argv` (None: `sys.argv[1:]`) with `command` and run it: its exit code, never `SystemExit`."""
    try:
        return int(command.main(argv, prog_name=prog, standalone_mode=False) or 0)
    except click.ClickException as exc:  # usage errors (exit 2) and the like, found before the callback ran
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C while click parsed; once the callback runs, run_command answers it
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except SystemExit as exc:  # shell completion (_LIR_COMPLETE=bash_source lir) ends with sys.exit
        return exit_code(exc)


def exit_code(exc: SystemExit) -> int:
    """The exit status `exc` stands for, as the interpreter would exit with it."""
    if exc.code is None or isinstance(exc.code, int):
        return exc.code or 0
    print(exc.code, file=sys.stderr)
    return 1
