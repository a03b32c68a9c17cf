"""An independent pass against Lightning IR 0.0.6: random option combinations of each of its model types.

Lightning IR builds each model on a tiny random backbone (BERT, ELECTRA or ModernBERT), saves it and scores the
fixed texts of tests.reference; lir loads the folder and must score alike (rel ≤ 1e-4, same order) or refuse it
in one line. Combinations Lightning IR itself cannot build are counted apart. `--export` also exports each
equal one and scores it with the embedded engine. The option spaces are 0.0.6's config arguments (every Literal
value; lengths incl. unset); a set-encoder's `sample_missing_docs: true` below `depth` draws random stand-ins in
Lightning IR, so those cases are reported as `random` (see the README).

    python -m tests.reference_combos --per-type 15 --backbone bert [--seed 11] [--export]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from lir.errors import LirError
from tests.reference import (
    DOCS,
    QUERIES,
    build,
    check_module,
    reference_scores,
    relative_difference,
    same_ranking,
    tiny_backbone,
)

BI_LENGTHS = [None, 8, 16, 32]  # Lightning IR pads bi-encoder texts to a multiple of 8
CROSS_LENGTHS = [None, 4, 6, 12]
FLAGS = [False, True]
SIMILARITIES = ["cosine", "dot"]
POOLINGS = ["first", "mean", "max", "sum"]
SPACES: dict[str, dict[str, list]] = {
    "DprConfig": {
        "similarity_function": SIMILARITIES,
        "normalize": FLAGS,
        "add_marker_tokens": FLAGS,
        "pooling_strategy": POOLINGS,
        "query_pooling_strategy": ["first", "max"],
        "normalization_strategy": [None, "l2"],
        "projection": [None, "linear", "linear_no_bias"],
    },
    "ColConfig": {
        "similarity_function": SIMILARITIES,
        "normalization_strategy": [None, "l2"],
        "add_marker_tokens": FLAGS,
        "query_mask_scoring_tokens": [None, "punctuation", ["?", "what"]],
        "doc_mask_scoring_tokens": [None, "punctuation", [",", "the"]],
        "query_aggregation_function": ["sum", "mean", "max"],
        "doc_aggregation_function": ["sum", "mean", "max"],
        "projection": ["linear", "linear_no_bias"],
        "query_expansion": FLAGS,
        "attend_to_query_expanded_tokens": FLAGS,
        "doc_expansion": FLAGS,
        "attend_to_doc_expanded_tokens": FLAGS,
    },
    "SpladeConfig": {
        "similarity_function": SIMILARITIES,
        "sparsification_strategy": [None, "relu", "relu_log", "relu_2xlog"],
        "pooling_strategy": POOLINGS,
        "query_weighting": [None, "contextualized", "static"],
        "query_expansion": FLAGS,
        "doc_weighting": [None, "contextualized", "static"],
        "doc_expansion": FLAGS,
        "add_marker_tokens": FLAGS,
    },
    "MvrConfig": {
        "similarity_function": SIMILARITIES,
        "normalization_strategy": [None, "l2"],
        "add_marker_tokens": FLAGS,
        "projection": [None, "linear", "linear_no_bias"],
        "num_viewer_tokens": [1, 3, 8],
    },
    "CoilConfig": {
        "similarity_function": SIMILARITIES,
        "add_marker_tokens": FLAGS,
        "token_embedding_dim": [8, 32],
        "cls_embedding_dim": [16, 768],
        "projection": ["linear", "linear_no_bias"],
    },
    "UniCoilConfig": {
        "similarity_function": SIMILARITIES,
        "projection": ["linear", "linear_no_bias"],
        "add_marker_tokens": FLAGS,
    },
    "MonoConfig": {
        "pooling_strategy": [*POOLINGS, "bert_pool"],
        "linear_bias": FLAGS,
        "scoring_strategy": ["mono", "rank"],
    },
    "SetEncoderConfig": {
        "pooling_strategy": ["first", "mean"],
        "linear_bias": FLAGS,
        "scoring_strategy": ["mono", "rank"],
        "depth": [1, 2, 100],
        "add_extra_token": FLAGS,
        "sample_missing_docs": FLAGS,
    },
}
CROSS = ("MonoConfig", "SetEncoderConfig")


def backbone_dir(kind: str, target: Path) -> Path:
    """A tiny random backbone of `kind` with all-MiniLM-L6-v2's WordPiece tokenizer files."""
    if kind == "bert":
        return tiny_backbone(target)
    import torch
    import transformers

    from tests import builders

    torch.manual_seed(0)
    sizes = {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    sizes |= {"intermediate_size": 64, "max_position_embeddings": 512}
    if kind == "electra":
        model = transformers.ElectraModel(transformers.ElectraConfig(embedding_size=32, **sizes))
    else:
        specials = {"pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102, "bos_token_id": 101}
        config = transformers.ModernBertConfig(
            eos_token_id=102, global_attn_every_n_layers=1, local_attention=128, **specials, **sizes
        )
        model = transformers.ModernBertModel(config)
    model.save_pretrained(target)
    builders.copy_tokenizer(target)
    if kind == "modernbert":  # no token type ids: ModernBERT takes none
        settings = target / "tokenizer_config.json"
        names = {"model_input_names": ["input_ids", "attention_mask"]}
        settings.write_text(json.dumps(json.loads(settings.read_text()) | names))
    return target


def draw(config: str, rng: random.Random) -> dict:
    """Each option of `config` set with probability 0.6 to one of its values, lengths included."""
    space = SPACES[config] | dict.fromkeys(
        ("query_length", "doc_length"), CROSS_LENGTHS if config in CROSS else BI_LENGTHS
    )
    return {option: rng.choice(values) for option, values in space.items() if rng.random() < 0.6}


def outcome(config: str, options: dict, backbone: Path, target: Path, export: bool) -> tuple[str, str]:
    """How lir does on one combination: equal, refused (one line), random, MISMATCH, CRASH; or li-fails."""
    from lir.train.cross_module import CrossEncoderModule
    from lir.train.module import BiEncoderModule
    from tests.conftest import SCIFACT

    cross = config in CROSS
    try:
        expected = reference_scores(build(backbone, target, config, options, cross=cross))
    except Exception as exc:  # Lightning IR cannot build or score it
        return "li-fails", repr(exc)[:120]
    try:
        ours = (CrossEncoderModule if cross else BiEncoderModule)(str(target))
        found = np.concatenate([ours.score(q, d).scores.float().numpy() for q, d in zip(QUERIES, DOCS, strict=True)])
        if relative_difference(found, expected) > 1e-4 or not same_ranking(found, expected):
            sampled = config == "SetEncoderConfig" and options.get("sample_missing_docs", True)
            return ("random" if sampled and options.get("depth", 100) > 2 else "MISMATCH"), f"{found} vs {expected}"
        if export:
            check_module(ours, expected, True, target / "export", SCIFACT)
        return "equal", ""
    except LirError as exc:
        return ("refused" if "\n" not in str(exc) else "MULTI-LINE"), str(exc).split(": ", 1)[-1][:120]
    except Exception as exc:  # an assertion of check_module (the export) or a crash
        return "CRASH", repr(exc)[:200]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-type", type=int, default=15, help="combinations per model type (default 15)")
    parser.add_argument("--backbone", choices=["bert", "electra", "modernbert"], default="bert")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--export", action="store_true", help="also export each equal one and score it embedded")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lir-combos-"))
    backbone = backbone_dir(args.backbone, work / "backbone")
    tally: Counter = Counter()
    for config in SPACES:
        for number in range(args.per_type):
            options = draw(config, rng)
            result, detail = outcome(config, options, backbone, work / f"{config}-{number}", args.export)
            tally[config, result] += 1
            if result not in ("equal", "li-fails"):
                print(f"{result:10} {config} {options} {detail}", flush=True)
    for (config, result), count in sorted(tally.items()):
        print(f"{config:18} {result:10} {count}")
    return int(any(result in ("MISMATCH", "CRASH", "MULTI-LINE") for _, result in tally))


if __name__ == "__main__":
    raise SystemExit(main())
