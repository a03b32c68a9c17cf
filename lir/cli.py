"""`lir`: one command, subcommands from the stage that owns them (torch is loaded only by `fit`)."""

from __future__ import annotations

import argparse
import sys

from lir import __version__
from lir.errors import LirError


def build_parser() -> argparse.ArgumentParser:
    from lir.clients import commands, rerank_command

    parser = argparse.ArgumentParser(
        prog="lir", description="Index, search, re-rank and evaluate with exported lir models."
    )
    parser.add_argument("--version", action="version", version=f"lir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    rerank_command.register(sub)
    fit = sub.add_parser("fit", help="fine-tune a model (not yet: see the trainer issue)")
    fit.set_defaults(handler=_not_yet)
    return parser


def _not_yet(args: argparse.Namespace) -> int:
    raise LirError(f"`lir {args.command}` is not available yet in this version")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lir` command: exit 0 on success, 1 on a user error, 130 on Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except LirError as exc:
        print(f"lir {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lir {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
