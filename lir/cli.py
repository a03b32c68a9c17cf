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
    # listed for --help only: main() hands `lir fit ...` to LightningCLI, which parses its own arguments
    sub.add_parser("fit", add_help=False, help="fine-tune a model: lir fit --config train.yaml (see lir fit --help)")
    return parser


def _fit(argv: list[str]) -> int:
    from lir.train.fit_cli import main as fit_main  # torch and lightning load here only

    return fit_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lir` command: exit 0 on success, 1 on a user error, 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fit"]:
        command, run = "fit", lambda: _fit(argv[1:])
    else:
        args = build_parser().parse_args(argv)
        command, run = args.command, lambda: args.handler(args)
    try:
        return int(run() or 0)
    except LirError as exc:
        print(f"lir {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lir {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
