"""`lir`: one command, subcommands from the stage that owns them.

torch is loaded only by `fit` and by the PyTorch path of `index`, `search` and `re-rank`, which any of
them given `--config` takes (as `lir re_rank` always does).
"""

from __future__ import annotations

import argparse
import sys

from lir import __version__
from lir.errors import run_command

TORCH_COMMANDS = {
    "fit": "fit",
    "re_rank": "re_rank",
    "index": "index",
    "search": "search",
    "re-rank": "re_rank",
    "rerank": "re_rank",
}
"""The commands LightningCLI runs, by its subcommand: `fit` and `re_rank` always, the others with `--config`."""
ALWAYS_TORCH = ("fit", "re_rank")


def build_parser() -> argparse.ArgumentParser:
    from lir.clients import commands, rerank_command

    parser = argparse.ArgumentParser(
        prog="lir",
        description="Index, search, re-rank and evaluate with exported lir models. With --config X.yaml, index, "
        "search and re-rank run a PyTorch model instead (LightningCLI, e.g. lir index --config index.yaml; see "
        "train/configs).",
    )
    parser.add_argument("--version", action="version", version=f"lir {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register(sub)
    rerank_command.register(sub)
    for name, shown in (("index", "index"), ("search", "search"), ("rerank", "re-rank")):
        sub.choices[name].epilog = (
            f"With --config X.yaml, lir {shown} runs a PyTorch model instead (LightningCLI; options: "
            f"lir {shown} --config X.yaml --help; examples in train/configs)."
        )
    # listed for --help only: main() hands `lir fit ...` to LightningCLI, which parses its own arguments
    sub.add_parser("fit", add_help=False, help="fine-tune a model: lir fit --config train.yaml (see lir fit --help)")
    return parser


def _lightning(subcommand: str, argv: list[str]) -> int:
    from lir.train.fit_cli import main as fit_main  # torch and lightning load here only

    return fit_main(argv, subcommand)


def _lightning_subcommand(argv: list[str]) -> str | None:
    """The LightningCLI subcommand `argv` asks for, or None for the clients' commands."""
    if not argv or argv[0] not in TORCH_COMMANDS:
        return None
    config = any(arg == "--config" or arg.startswith("--config=") for arg in argv[1:])
    return TORCH_COMMANDS[argv[0]] if config or argv[0] in ALWAYS_TORCH else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lir` command: exit 0 on success, 1 on any error (one line on stderr), 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    subcommand = _lightning_subcommand(argv)
    if subcommand is not None:
        command, run = argv[0], lambda: _lightning(subcommand, argv[1:])
    else:
        args = build_parser().parse_args(argv)
        command, run = args.command, lambda: args.handler(args)
    return run_command(f"lir {command}", run)


if __name__ == "__main__":
    sys.exit(main())
