"""The `lir` click group: the clients' commands, and `fit`, which `lir.cli.main` hands to LightningCLI."""

from __future__ import annotations

import click

from lir import __version__
from lir.cli.common import CONTEXT
from lir.clients.commands import evaluation, index, search
from lir.clients.rerank_command import rerank

ALIASES = {"re-rank": "rerank"}
TORCH_PATH = (
    "With --config X.yaml, lir {shown} runs a PyTorch model instead (LightningCLI; options: "
    "lir {shown} --config X.yaml --help; examples in train/configs)."
)
FIT_HELP = "fine-tune a model: lir fit --config train.yaml (see lir fit --help)"


class _Group(click.Group):
    """A group that knows its commands' aliases (`lir re-rank` is `lir rerank`)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))


@click.group(
    cls=_Group,
    context_settings=CONTEXT,
    help="Index, search, re-rank and evaluate with exported lir models. With --config X.yaml, index, search and "
    "re-rank run a PyTorch model instead (LightningCLI, e.g. lir index --config index.yaml; see train/configs).",
)
@click.version_option(__version__, "--version", prog_name="lir", message="%(prog)s %(version)s")
def lir_command() -> None:
    """The `lir` command; its subcommands do the work."""


for command, shown in ((index, "index"), (search, "search"), (rerank, "re-rank")):
    command.epilog = TORCH_PATH.format(shown=shown)
    lir_command.add_command(command)
lir_command.add_command(evaluation)
# listed for --help only: main() hands `lir fit ...` to LightningCLI, which parses its own arguments
lir_command.add_command(click.Command("fit", add_help_option=False, short_help=FIT_HELP, help=FIT_HELP))
