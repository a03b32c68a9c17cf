"""What the family loader tests share: fixed texts, the WordPiece tokenizer of a checkpoint folder, variants of a
checkpoint (config fields or tensors replaced) and the check that a loader refuses in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from transformers import BertTokenizerFast

from lir.errors import LirError
from lir.train import load_bi_encoder

QUERY = "What is the capital of Germany?"
DOCS = ["Berlin is the capital of Germany; it has 3.7 million inhabitants!", "Paris.", "Berlin (Germany). " * 30]


def bert_tokenizer(path: Path, markers: bool = False) -> BertTokenizerFast:
    """transformers' WordPiece tokenizer of the folder's vocab.txt (with [QUE]/[DOC] when `markers`)."""
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)
    if markers:
        tokenizer.add_tokens(["[QUE]", "[DOC]"], special_tokens=True)
    return tokenizer


def variant(source: Path, target: Path, config: dict | None = None, weights: dict | None = None) -> Path:
    """A copy of `source` with config fields replaced and tensors replaced (None: removed)."""
    shutil.copytree(source, target)
    if config:
        data = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps(data | config))
    if weights:
        tensors = load_file(str(target / "model.safetensors"))
        for name, value in weights.items():
            if value is None:
                del tensors[name]
            else:
                tensors[name] = value
        save_file(tensors, str(target / "model.safetensors"))
    return target


def one_line_error(path: Path, match: str) -> None:
    """Loading `path` raises a one-line LirError matching `match`."""
    with pytest.raises(LirError, match=match) as caught:
        load_bi_encoder(str(path))
    assert "\n" not in str(caught.value)
