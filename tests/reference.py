"""Lightning IR 0.0.6 itself as the reference: it builds a model of a type on a tiny random BERT (monoT5 /
RankT5: a tiny random T5), saves it in its own layout and scores fixed texts; the tests then load that folder
with lir and compare.

Importing lightning_ir takes ~15 s, so it happens once, on first use. Lightning IR's scores come from the
module it saved (a reloaded `bert_pool` mono model would be random: transformers 4.57 skips its weights).
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lir.errors import LirError
from tests import builders, t5_builders

QUERIES = ["what is the capital of france?", "how do plants make food"]
DOCS = [
    ["Paris is the capital and largest city of France.", "The Eiffel tower is in Paris, France, Paris!"],
    ["Photosynthesis: plants use light to make food.", "Cats sleep a lot; dogs, less."],
]
SPLADE_BIAS_SHIFT = 0.6
FULL = bool(os.environ.get("LIR_FULL_REFERENCE"))
"""`make verify-reference`: every case through the export too (`make test`: those the test files name)."""


@functools.cache
def lightning_ir():
    """The lightning_ir package (imported once; its warnings silenced)."""
    import transformers

    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", module="lightning_ir")
    import lightning_ir

    return lightning_ir


def tiny_backbone(target: Path, seed: int = 0) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with all-MiniLM-L6-v2's WordPiece tokenizer files."""
    builders.tiny_bert(seed).save_pretrained(target)
    builders.copy_tokenizer(target)
    return target


def tiny_t5_backbone(target: Path, seed: int = 0) -> Path:
    """A tiny random tied-embedding T5 (`T5ForConditionalGeneration`, d_model 32) with a T5-like SentencePiece
    tokenizer that splits `Query:` and `Relevant:` as T5's does (tests.t5_builders)."""
    return t5_builders.t5_cross_encoder_dir(target, seed, t5_splits=True)


def build(backbone: Path, target: Path, config: str, options: dict, cross: bool = False, seed: int = 1):
    """Let Lightning IR build a model of `config` (a class name of lightning_ir.models, e.g. `ColConfig`)
    with `options` on `backbone`, save it to `target`, and return its module (in eval mode)."""
    li = lightning_ir()
    torch.manual_seed(seed)
    module_class = li.CrossEncoderModule if cross else li.BiEncoderModule
    module = module_class(model_name_or_path=str(backbone), config=getattr(li.models, config)(**options)).eval()
    if cross and len(module.tokenizer) > module.model.config.vocab_size:  # [INT]: Lightning IR forgets to resize
        module.model.resize_token_embeddings(len(module.tokenizer), pad_to_multiple_of=8)
    with torch.no_grad():  # make every head weight visible (some start at zero or at HF's small init)
        for name, parameter in module.model.named_parameters():
            if not name.startswith(("embeddings.", "encoder.")):
                parameter.uniform_(-0.5, 0.5)
            if name.endswith("predictions.bias"):  # SPLADE: sparse like a trained model (~50-100 terms per
                parameter.sub_(SPLADE_BIAS_SHIFT)  # text), well under the export's top-k of 1024; the texts'
                parameter[text_token_ids(module.tokenizer)] += 2 * SPLADE_BIAS_SHIFT  # own terms mostly kept

    module.save_pretrained(str(target))
    return module


def build_t5_mono(
    backbone: Path, target: Path, options: dict, head_tokens: tuple[str, ...] | None = None, seed: int = 1
):
    """Let Lightning IR build a `mono` model (its MonoT5Model) with `options` on the T5 `backbone`, save it to
    `target` and return its module. The head is random (uniform ±0.5; Lightning IR leaves it uninitialised),
    or with `head_tokens` the rows of `shared` for those tokens, as its hub mappings set castorini's monoT5
    (`▁false`, `▁true`) and RankT5 (`<extra_id_10>`)."""
    li = lightning_ir()
    torch.manual_seed(seed)
    module = li.CrossEncoderModule(model_name_or_path=str(backbone), config=li.models.MonoConfig(**options)).eval()
    model = module.model
    with torch.no_grad():
        if head_tokens is None:
            model.linear.weight.uniform_(-0.5, 0.5)
        else:
            model.linear.weight.copy_(model.shared.weight[module.tokenizer.convert_tokens_to_ids(list(head_tokens))])
        for name, parameter in model.named_parameters():
            if name.startswith("bert_pool.") or name == "linear.bias":
                parameter.uniform_(-0.5, 0.5)
    module.save_pretrained(str(target))
    return module


def text_token_ids(tokenizer) -> list[int]:
    """The ids of every token of the fixed texts (so that sparse models without expansion score them)."""
    texts = QUERIES + [doc for docs in DOCS for doc in docs]
    encoded = tokenizer(texts, add_special_tokens=False, warn=False)
    return sorted({i for ids in encoded["input_ids"] for i in ids})


def reference_scores(module, queries=QUERIES, docs=DOCS) -> np.ndarray:
    """Lightning IR's scores of each query against its documents, flattened query-major."""
    with torch.inference_mode():
        return module.score(list(queries), [list(d) for d in docs]).scores.float().numpy()


def relative_difference(found: np.ndarray, expected: np.ndarray) -> float:
    """max |found - expected| relative to the largest |expected| (at least 1)."""
    return float(np.abs(found - expected).max() / max(1.0, float(np.abs(expected).max())))


def same_ranking(found: np.ndarray, expected: np.ndarray, per_query: int = 2) -> bool:
    """Whether each query's documents come out in the same order."""
    rows = range(0, len(expected), per_query)
    return all(
        list(np.argsort(-found[i : i + per_query])) == list(np.argsort(-expected[i : i + per_query])) for i in rows
    )


def check_against(expected: np.ndarray, torch_scores: np.ndarray, export_scores=None) -> None:
    """lir's PyTorch scores (and, when given, its export's) equal Lightning IR's: relative ≤ 1e-4, same order."""
    for name, found in (("PyTorch", torch_scores), ("export", export_scores)):
        if found is None:
            continue
        assert relative_difference(found, expected) <= 1e-4, (name, found, expected)
        assert same_ranking(found, expected), (name, found, expected)


def check_module(module, expected: np.ndarray, export: bool, tmp_path: Path, parity_data: Path) -> None:
    """lir's module (BiEncoderModule or CrossEncoderModule) scores the texts like Lightning IR did
    (`expected`); with `export`, so does its export, run by the embedded engine and scored by the Reranker."""
    from lir.clients.onnx_engine import OnnxEngine
    from lir.clients.reranker import Reranker
    from lir.export.bundle import export_model

    torch_scores = np.concatenate(
        [module.score(q, d).scores.float().numpy() for q, d in zip(QUERIES, DOCS, strict=True)]
    )
    exported = None
    if export:
        directory = export_model(
            module.loaded, tmp_path / "repo", "model", parity_data=str(parity_data), log=lambda _: None
        )
        exported = np.concatenate(Reranker(OnnxEngine(directory)).score_lists(QUERIES, DOCS))
    check_against(expected, torch_scores, exported)


def check_case(
    config: str,
    options: dict,
    refused: str | None,
    cross: bool,
    export: bool,
    backbone: Path,
    tmp_path: Path,
    parity_data: Path,
) -> None:
    """One reference case: Lightning IR builds and scores a `config` model with `options`; lir must refuse its
    folder in one line matching `refused`, or (refused None) score it alike (`check_module`)."""
    from lir.train.cross_module import CrossEncoderModule
    from lir.train.module import BiEncoderModule

    module_class = CrossEncoderModule if cross else BiEncoderModule
    checkpoint = tmp_path / "checkpoint"
    expected = reference_scores(build(backbone, checkpoint, config, options, cross=cross))
    check_saved(module_class, checkpoint, expected, refused, export, tmp_path, parity_data)


def check_t5_case(
    options: dict, refused: str | None, export: bool, backbone: Path, tmp_path: Path, parity_data: Path
) -> None:
    """One monoT5/RankT5 reference case: Lightning IR builds and scores a `mono` model with `options` on the
    tiny T5 `backbone` (random head); lir must refuse its folder (`refused`) or score it alike."""
    from lir.train.cross_module import CrossEncoderModule

    checkpoint = tmp_path / "checkpoint"
    expected = reference_scores(build_t5_mono(backbone, checkpoint, options))
    check_saved(CrossEncoderModule, checkpoint, expected, refused, export, tmp_path, parity_data)


def check_saved(
    module_class: type,
    checkpoint: Path,
    expected: np.ndarray,
    refused: str | None,
    export: bool,
    tmp_path: Path,
    parity_data: Path,
) -> None:
    """lir must refuse the saved `checkpoint` in one line matching `refused`, or (refused None) score it like
    Lightning IR did (`check_module`)."""
    if refused is not None:
        assert_refused(lambda: module_class(str(checkpoint)), refused)
        return
    assert np.abs(expected).max() > 1e-3, f"a reference case must score its texts, not {expected}"
    check_module(module_class(str(checkpoint)), expected, export or FULL, tmp_path, parity_data)


def assert_refused(load, refused: str) -> None:
    """`load()` raises a one-line LirError matching `refused`."""
    with pytest.raises(LirError, match=refused) as error:
        load()
    assert "\n" not in str(error.value)
