"""`lir`: one command, subcommands from the stage that owns them (`lir.clients`, `lir.train`).

It lives outside the torch-free core folder (`lir/`), which imports neither. torch is loaded only by `fit` and
by the PyTorch path of `index`, `search` and `re-rank`, which any of them given `--config` takes (as
`lir re_rank` always does): those arguments go to LightningCLI before click sees them.
"""

from __future__ import annotations

import sys

from lir.cli.common import exit_code, run_click
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


def _lightning(subcommand: str, argv: list[str]) -> int:
    from lir.train.fit_cli import main as fit_main  # torch and lightning load here only

    try:
        return fit_main(argv, subcommand)
    except SystemExit as exc:  # LightningCLI's --help and usage errors: an exit code, as from the other commands
        return exit_code(exc)


def _lightning_subcommand(argv: list[str]) -> str | None:
    """The LightningCLI subcommand `argv` asks for, or None for the clients' commands."""
    if not argv or argv[0] not in TORCH_COMMANDS:
        return None
    config = any(arg == "--config" or arg.startswith("--config=") for arg in argv[1:])
    return TORCH_COMMANDS[argv[0]] if config or argv[0] in ALWAYS_TORCH else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lir` command: exit 0 on success, 1 on any error (one line on stderr), 2 on a usage
    error, 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    subcommand = _lightning_subcommand(argv)
    if subcommand is not None:
        return run_command(f"lir {argv[0]}", lambda: _lightning(subcommand, argv[1:]))
    from lir.cli.group import lir_command  # the clients' commands (onnxruntime, Faiss): not for `lir fit`

    return run_click(lir_command, argv, "lir")
