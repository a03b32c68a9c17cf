"""`lir-export`: a checkpoint (directory or hub id, downloaded when not cached) → a validated model directory."""

from __future__ import annotations

import argparse
import math
import sys

from lir.errors import run_command
from lir.export.limits import DEFAULT_TOP_K, FP32_TOLERANCE, ParityError
from lir.export.triton_repository import default_name, prepare_export


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lir-export",
        description="Export a checkpoint (sentence-transformers, Lightning IR, Hugging Face; single-vector, "
        "multi-vector/ColBERT, sparse/SPLADE or cross-encoder: mono, set-encoder, sequence classification, "
        "monoT5/RankT5) to ONNX graphs with a manifest, checked against PyTorch on real text.",
        epilog="exit codes: 0 exported, 1 bad input, 2 usage, 3 parity check failed",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint directory or hub id: from the Hugging Face cache, else downloaded (safetensors only; "
        "HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE=1 are honoured)",
    )
    parser.add_argument("--revision", help="hub ids: the branch, tag or commit to load (default: main)")
    parser.add_argument("--output", default="model_repository", help="model repository (default: %(default)s)")
    parser.add_argument("--name", help="model name in the repository (default: from --model)")
    parser.add_argument("--int8", action="store_true", help="also write a dynamic int8 (per-channel) variant")
    parser.add_argument("--fp16", action="store_true", help="also write an fp16 variant (for GPUs)")
    parser.add_argument("--no-optimize", action="store_true", help="skip onnxruntime's transformer fusions")
    parser.add_argument("--parity-data", help="SciFact folder for parity texts (default: ../shared/data/scifact)")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=FP32_TOLERANCE,
        help="max abs difference allowed at fp32 (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k",
        type=_positive,
        default=DEFAULT_TOP_K,
        help="sparse models: vocabulary terms the encoder returns per text, the heaviest first (default: "
        "%(default)s, at most the vocabulary size); texts with more nonzero terms are truncated",
    )
    parser.add_argument(
        "--t5-scoring",
        choices=("mono", "rank"),
        help="T5 cross-encoders: monoT5 (log-probability of 'true' vs 'false') or RankT5 (one logit) scoring "
        "(default: rank when the model's name says rankt5, else mono)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    return parser


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(
        "lir-export", lambda: _export(args), {ParityError: (3, "parity check failed")}, "interrupted, nothing written"
    )


def _export(args: argparse.Namespace) -> None:
    prepare_export(args.output, args.name or default_name(args.model), args.overwrite)
    from lir.export.bundle import export_model  # torch loads here, after argument checks

    export_model(
        args.model,
        args.output,
        args.name,
        int8=args.int8,
        fp16=args.fp16,
        optimize=not args.no_optimize,
        parity_data=args.parity_data,
        tolerance=args.tolerance,
        overwrite=args.overwrite,
        top_k=args.top_k,
        t5_scoring=args.t5_scoring,
        revision=args.revision,
        log=lambda message: print(message, file=sys.stderr),
    )


if __name__ == "__main__":
    sys.exit(main())
