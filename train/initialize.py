"""New models of each family on a pre-trained backbone, as Lightning IR's `Model.from_pretrained(path, config=...)`.

A settings class per Lightning IR model type names the family's settings (Lightning IR's keys and defaults)
and draws its fresh head. `initialize` writes the backbone, the settings and the head as a Lightning IR
checkpoint into a temporary directory and loads it with lir's own loader, so a new model is exactly what its
saved checkpoint will load back as. The head is drawn from torch's global generator (seed it for a
reproducible start).
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.train.bi_encoder import BiEncoderModel
from lir.train.checkpoints import LoadedBiEncoder, load_model
from lir.train.cross_encoder import SCORINGS, CrossEncoderModel, LoadedCrossEncoder
from lir.train.multi_vector import MultiVectorModel
from lir.train.saving import Settings, Tensors, write_checkpoint
from lir.train.sparse import SparseModel

Loaded = LoadedBiEncoder | LoadedCrossEncoder
PLAIN_BACKBONES = (BiEncoderModel, MultiVectorModel, SparseModel, CrossEncoderModel)
"""The models whose `backbone` is a plain encoder (not a T5 or a sequence classifier with its own head)."""


class ModelSettings:
    """The settings of a new model of one Lightning IR model type."""

    model_type = ""

    def __init__(self, query_length: int = 32, doc_length: int = 512) -> None:
        self.query_length = query_length
        self.doc_length = doc_length

    def settings(self) -> Settings:
        """config.json's Lightning IR keys."""
        return {"model_type": self.model_type, "query_length": self.query_length, "doc_length": self.doc_length}

    def head(self, backbone: PreTrainedModel) -> Tensors:
        """Fresh head tensors for `backbone`."""
        raise NotImplementedError


def _linear(prefix: str, inputs: int, outputs: int, bias: bool) -> Tensors:
    layer = nn.Linear(inputs, outputs, bias=bias)
    tensors = {f"{prefix}.weight": layer.weight.detach()}
    if bias:
        tensors[f"{prefix}.bias"] = layer.bias.detach()
    return tensors


class DprConfig(ModelSettings):
    """Single-vector (`lir-dpr`): pooling, similarity, optional L2 normalization and linear projection."""

    model_type = "lir-dpr"

    def __init__(
        self,
        pooling_strategy: str = "first",
        similarity_function: str = "dot",
        normalization_strategy: str | None = None,
        embedding_dim: int | None = None,
        projection_bias: bool = True,
        query_length: int = 32,
        doc_length: int = 512,
    ) -> None:
        super().__init__(query_length, doc_length)
        self.pooling_strategy = pooling_strategy
        self.similarity_function = similarity_function
        self.normalization_strategy = normalization_strategy
        self.embedding_dim = embedding_dim
        self.projection_bias = projection_bias

    def settings(self) -> Settings:
        projection = None
        if self.embedding_dim is not None:
            projection = "linear" if self.projection_bias else "linear_no_bias"
        return super().settings() | {
            "pooling_strategy": self.pooling_strategy,
            "similarity_function": self.similarity_function,
            "normalization_strategy": self.normalization_strategy,
            "projection": projection,
        }

    def head(self, backbone: PreTrainedModel) -> Tensors:
        if self.embedding_dim is None:
            return {}
        return _linear("projection", backbone.config.hidden_size, self.embedding_dim, self.projection_bias)


class ColConfig(ModelSettings):
    """Multi-vector (`col`, ColBERT): a linear projection per token, late interaction; Lightning IR's defaults
    are webis/colbert's (128 dimensions, [MASK] query expansion, punctuation not scored in documents)."""

    model_type = "col"

    def __init__(
        self,
        embedding_dim: int = 128,
        similarity_function: str = "dot",
        normalization_strategy: str | None = None,
        query_aggregation_function: str = "sum",
        query_expansion: bool = True,
        attend_to_query_expanded_tokens: bool = True,
        doc_mask_scoring_tokens: str | list[str] | None = "punctuation",
        query_length: int = 32,
        doc_length: int = 512,
    ) -> None:
        super().__init__(query_length, doc_length)
        self.embedding_dim = embedding_dim
        self.similarity_function = similarity_function
        self.normalization_strategy = normalization_strategy
        self.query_aggregation_function = query_aggregation_function
        self.query_expansion = query_expansion
        self.attend_to_query_expanded_tokens = attend_to_query_expanded_tokens
        self.doc_mask_scoring_tokens = doc_mask_scoring_tokens

    def settings(self) -> Settings:
        return super().settings() | {
            "similarity_function": self.similarity_function,
            "normalization_strategy": self.normalization_strategy,
            "query_aggregation_function": self.query_aggregation_function,
            "query_expansion": self.query_expansion,
            "attend_to_query_expanded_tokens": self.attend_to_query_expanded_tokens,
            "doc_expansion": False,
            "doc_mask_scoring_tokens": self.doc_mask_scoring_tokens,
            "projection": "linear_no_bias",
            "embedding_dim": self.embedding_dim,
        }

    def head(self, backbone: PreTrainedModel) -> Tensors:
        return _linear("projection", backbone.config.hidden_size, self.embedding_dim, bias=False)


class SpladeConfig(ModelSettings):
    """Sparse (`splade`): an MLM head (dense → activation → LayerNorm → tied decoder), log(1 + ReLU), max pooling.
    A fresh head starts with LayerNorm at identity and a zero decoder bias."""

    model_type = "splade"

    def settings(self) -> Settings:
        return super().settings() | {
            "pooling_strategy": "max",
            "sparsification_strategy": "relu_log",
            "similarity_function": "dot",
        }

    def head(self, backbone: PreTrainedModel) -> Tensors:
        hidden = backbone.config.hidden_size
        return _linear("projection.dense", hidden, hidden, bias=True) | {
            "projection.norm.weight": torch.ones(hidden),
            "projection.norm.bias": torch.zeros(hidden),
            "projection.decoder.bias": torch.zeros(backbone.config.vocab_size),
        }


class MonoConfig(ModelSettings):
    """Pointwise cross-encoder (`mono`): pooling → linear head; `rank` scores one logit, `mono` two."""

    model_type = "mono"

    def __init__(
        self,
        pooling_strategy: str = "first",
        scoring_strategy: str = "rank",
        linear_bias: bool = False,
        query_length: int = 32,
        doc_length: int = 512,
    ) -> None:
        super().__init__(query_length, doc_length)
        if scoring_strategy not in SCORINGS:
            raise LirError(f"unknown scoring_strategy {scoring_strategy!r} (known: {', '.join(SCORINGS)})")
        self.pooling_strategy = pooling_strategy
        self.scoring_strategy = scoring_strategy
        self.linear_bias = linear_bias

    def settings(self) -> Settings:
        return super().settings() | {
            "pooling_strategy": self.pooling_strategy,
            "scoring_strategy": self.scoring_strategy,
            "linear_bias": self.linear_bias,
        }

    def head(self, backbone: PreTrainedModel) -> Tensors:
        outputs = SCORINGS[self.scoring_strategy]
        return _linear("linear", backbone.config.hidden_size, outputs, self.linear_bias)


def initialize(spec: str, settings: ModelSettings) -> Loaded:
    """A new model of `settings`' family on the backbone and tokenizer of the checkpoint `spec` (any bi-encoder
    or Lightning IR cross-encoder lir loads, e.g. a sentence-transformers model or a Hugging Face encoder)."""
    source = load_model(spec)
    if not isinstance(source.model, PLAIN_BACKBONES):
        raise LirError(f"{spec}: its model has no plain encoder backbone to start a new {settings.model_type} from")
    backbone = source.model.backbone
    with tempfile.TemporaryDirectory(prefix="lir-init-") as directory:
        write_checkpoint(directory, backbone, source.tokenizer, settings.settings(), settings.head(backbone))
        loaded = load_model(directory)
    loaded.source = spec
    return loaded
