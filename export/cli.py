"""`lir-export`: a checkpoint (directory or hub id, downloaded when not cached) → a validated model directory."""

from __future__ import annotations

import sys
from typing import Any

import click

from lir.cli.common import CONTEXT, PositiveNumber, run_click
from lir.errors import run_command
from lir.export.limits import DEFAULT_TOP_K, FP32_TOLERANCE, ParityError
from lir.export.triton_repository import default_name, prepare_export


@click.command(
    "lir-export",
    context_settings=CONTEXT,
    help="Export a checkpoint (sentence-transformers, Lightning IR, Hugging Face; single-vector, "
    "multi-vector/ColBERT, sparse/SPLADE or cross-encoder: mono, set-encoder, sequence classification, "
    "monoT5/RankT5) to ONNX graphs with a manifest, checked against PyTorch on real text.",
    epilog="Exit codes: 0 exported, 1 bad input, 2 usage, 3 parity check failed.",
)
@click.option(
    "--model",
    required=True,
    help="checkpoint directory or hub id: from the Hugging Face cache, else downloaded (safetensors only; "
    "HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE=1 are honoured)",
)
@click.option("--revision", help="hub ids: the branch, tag or commit to load (default: main)")
@click.option("--output", default="model_repository", help="model repository")
@click.option("--name", help="model name in the repository (default: from --model)")
@click.option("--int8", is_flag=True, help="also write a dynamic int8 (per-channel) variant")
@click.option("--fp16", is_flag=True, help="also write an fp16 variant (for GPUs)")
@click.option("--no-optimize", is_flag=True, help="skip onnxruntime's transformer fusions")
@click.option("--parity-data", help="SciFact folder for parity texts (default: ../shared/data/scifact)")
@click.option("--tolerance", type=PositiveNumber(), default=FP32_TOLERANCE, help="max abs difference allowed at fp32")
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=DEFAULT_TOP_K,
    help="sparse models: vocabulary terms the encoder returns per text, the heaviest first (at most the "
    "vocabulary size); texts with more nonzero terms are truncated",
)
@click.option(
    "--t5-scoring",
    type=click.Choice(("mono", "rank")),
    help="T5 cross-encoders: monoT5 (log-probability of 'true' vs 'false') or RankT5 (one logit) scoring "
    "(default: rank when the model's name says rankt5, else mono)",
)
@click.option("--overwrite", is_flag=True, help="replace an existing export")
def lir_export(**options: Any) -> int:
    """The `lir-export` command: `_export` run with one-line errors, a failed parity check exiting 3."""
    return run_command(
        "lir-export",
        lambda: _export(**options),
        {ParityError: (3, "parity check failed")},
        "interrupted, nothing written",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `lir-export`: its exit code (0 exported, 1 bad input, 2 usage, 3 parity, 130 Ctrl-C)."""
    return run_click(lir_export, argv, "lir-export")


def _export(model: str, output: str, name: str | None, overwrite: bool, no_optimize: bool, **options: Any) -> None:
    prepare_export(output, name or default_name(model), overwrite)
    from lir.export.bundle import export_model  # torch loads here, after argument checks

    export_model(
        model,
        output,
        name,
        optimize=not no_optimize,
        overwrite=overwrite,
        log=lambda message: print(message, file=sys.stderr),
        **options,
    )


if __name__ == "__main__":
    sys.exit(main())
