"""Tiny monoT5 / RankT5 checkpoints written as castorini ships them: `T5ForConditionalGeneration` saved with
safetensors, and a SentencePiece-style Unigram tokenizer in `tokenizer.json` (T5's ids: <pad> 0, </s> 1,
<unk> 2; `<extra_id_0..99>` last, `<extra_id_0>` the very last)."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import T5Config, T5ForConditionalGeneration

from tests.builders import write_json

SPECIALS = ("<pad>", "</s>", "<unk>")
EXTRA_IDS = 100
WORDS = (
    "Query Document Relevant true false the of and to in is a for that with on as by are was were be been it "
    "this these from or an at not can which what how why does do did cause causes fever children child "
    "vitamin deficiency infection infections respiratory risk increased study patients cells cell disease "
    "protein immune response viral virus mice blood levels daily trial adults effect effects treatment "
    "capital Germany Berlin Paris France city river water heart cancer gene genes brain sleep"
)
"""Whole words of the vocabulary (each as `▁word`), so that common English text keeps its words."""
T5_SPLITS = {"Query": "Query", "Relevant": "▁Relevan"}
"""Words T5's own vocabulary has no `▁word` piece for, and the piece it has instead: its tokenizer splits
`Query:` into `▁ Query :` and `Relevant:` into `▁Relevan t :`, the pieces Lightning IR's template hard-codes."""
SUFFIXES = ("s", "es", "ed", "ing", "ly", "er", "tion", "al")
PUNCTUATION = ":.,?!'\"-()/%;"


def _pieces(t5_splits: bool) -> list[tuple[str, float]]:
    """Unigram pieces with log-probabilities: whole words beat suffixes, which beat single characters;
    `t5_splits`: the words of T5_SPLITS as T5's vocabulary has them."""
    pieces = [(token, 0.0) for token in SPECIALS] + [("▁", -3.0)]
    words = [word for word in WORDS.split() if not (t5_splits and word in T5_SPLITS)]
    pieces += [(f"▁{word}", -6.0) for word in words] + [(piece, -6.0) for piece in T5_SPLITS.values() if t5_splits]
    pieces += [(suffix, -7.0) for suffix in SUFFIXES]
    characters = string.ascii_letters + string.digits + PUNCTUATION
    pieces += [(f"▁{c}", -9.0) for c in characters] + [(c, -10.0) for c in characters]
    unique: dict[str, float] = {}
    for piece, score in pieces:
        unique.setdefault(piece, score)  # a letter that is also a word or suffix keeps the better score
    return list(unique.items()) + [(f"<extra_id_{i}>", 0.0) for i in reversed(range(EXTRA_IDS))]


def t5_tokenizer(drop: tuple[str, ...] = (), t5_splits: bool = False) -> Tokenizer:
    """A T5-like tokenizer: Metaspace pre-tokenizer and decoder, `$A </s>` / `$A </s> $B </s>` post-processing;
    pieces in `drop` are left out (to build a checkpoint that lacks a scoring token); `t5_splits`: `Query:`
    and `Relevant:` split as T5's own tokenizer splits them (else into `▁Query :` and `▁Relevant :`)."""
    vocab = [piece for piece in _pieces(t5_splits) if piece[0] not in drop]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    extras = [piece for piece, _ in vocab if piece.startswith("<extra_id_")]
    tokenizer.add_special_tokens([AddedToken(token, normalized=False) for token in (*SPECIALS, *extras)])
    return tokenizer


def tiny_t5(vocab_size: int, seed: int, tied: bool) -> T5ForConditionalGeneration:
    """A tiny random T5: v1.0-like (tied embeddings, ReLU) or v1.1-like (untied LM head, gated GELU)."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        feed_forward_proj="relu" if tied else "gated-gelu",
        tie_word_embeddings=tied,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        architectures=["T5ForConditionalGeneration"],
    )
    return T5ForConditionalGeneration(config).eval()


def t5_cross_encoder_dir(
    target: Path, seed: int = 0, tied: bool = True, drop: tuple[str, ...] = (), t5_splits: bool = False
) -> Path:
    """A tiny monoT5/RankT5 checkpoint (the same files serve both scorings). The embedding matrix is padded to
    a multiple of 128 rows as T5's is (32100 tokens, 32128 rows); `drop` and `t5_splits` shape the tokenizer
    (`t5_tokenizer`)."""
    target.mkdir(parents=True)
    tokenizer = t5_tokenizer(drop, t5_splits)
    size = tokenizer.get_vocab_size()
    model = tiny_t5(-(-size // 128) * 128, seed, tied)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save(str(target / "tokenizer.json"))
    extras = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "additional_special_tokens": extras}
    write_json(target / "special_tokens_map.json", special)
    write_json(
        target / "tokenizer_config.json",
        special | {"tokenizer_class": "T5Tokenizer", "extra_ids": EXTRA_IDS, "model_max_length": 512},
    )
    return target
