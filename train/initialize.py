"""New models on a pre-trained backbone, as Lightning IR's `XModel.from_pretrained(path, config=XConfig(...))`.

A new model is described in Lightning IR's own words: a config's keys with its `model_type` (`lir-dpr`, `col`,
`splade`, `mono`), unset keys taking Lightning IR 0.0.6's defaults (each family module's `NEW_*` record, which
also draws the fresh head). `initialize` writes the backbone, the complete config and the head as a Lightning
IR checkpoint into a temporary directory and loads it with lir's own loader, so a new model is exactly what its
saved checkpoint loads back as, and the loader is the one place that reads those keys. The head is drawn from
torch's global generator (seed it for a reproducible start).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedModel

from lir.errors import LirError
from lir.train.checkpoint_io import MARKERS, LoadedBiEncoder, add_markers
from lir.train.checkpoints import load_model
from lir.train.cross_encoder import NEW_MONO, CrossEncoderModel, LoadedCrossEncoder
from lir.train.multi_vector import NEW_COL, MultiVectorModel
from lir.train.saving import NewModel, write_checkpoint
from lir.train.single_vector import NEW_DPR, BiEncoderModel
from lir.train.sparse import NEW_SPLADE, SparseModel

Loaded = LoadedBiEncoder | LoadedCrossEncoder
NEW_MODELS: dict[str, NewModel] = {new.defaults["model_type"]: new for new in (NEW_DPR, NEW_COL, NEW_SPLADE, NEW_MONO)}
"""The Lightning IR model types a new model can be of."""
PLAIN_BACKBONES = (BiEncoderModel, MultiVectorModel, SparseModel, CrossEncoderModel)
"""The models whose `backbone` is a plain encoder (not a T5 or a sequence classifier with its own head)."""


def initialize(spec: str, config: Mapping[str, Any]) -> Loaded:
    """A new model of `config` (Lightning IR's keys and `model_type`) on the backbone and tokenizer of the
    checkpoint `spec` (any bi-encoder or Lightning IR cross-encoder lir loads, e.g. a sentence-transformers
    model or a Hugging Face encoder)."""
    model_type = config.get("model_type")
    new = NEW_MODELS.get(str(model_type))
    if new is None:
        raise LirError(f"a new model needs a model_type: one of {', '.join(NEW_MODELS)} (not {model_type!r})")
    settings = new.settings(config)
    source = load_model(spec)
    if not isinstance(source.model, PLAIN_BACKBONES):
        raise LirError(f"{spec}: its model has no plain encoder backbone to start a new {model_type} from")
    backbone, tokenizer = source.model.backbone, source.tokenizer
    if settings.get("add_marker_tokens"):
        tokenizer = with_markers(tokenizer, backbone)
    head = new.head(backbone, settings)
    with tempfile.TemporaryDirectory(prefix="lir-init-") as directory:
        write_checkpoint(directory, backbone, tokenizer, settings, head)
        try:
            loaded = load_model(directory)
        except LirError as exc:  # name the new model, not the temporary directory
            name = f"a new {model_type} model"
            message = str(exc).replace(directory, name)
            raise LirError(message if message.startswith(name) else f"{name}: {message}") from None
    loaded.source = spec
    return loaded


def with_markers(tokenizer: Tokenizer, backbone: PreTrainedModel) -> Tokenizer:
    """A copy of `tokenizer` with Lightning IR's [QUE]/[DOC] markers; the backbone's word embeddings grow to take
    them (as Lightning IR's BiEncoderModule resizes: to a multiple of 8, new rows drawn by transformers)."""
    tokenizer = Tokenizer.from_str(tokenizer.to_str())
    add_markers(tokenizer, MARKERS)
    if tokenizer.get_vocab_size() > backbone.config.vocab_size:
        backbone.resize_token_embeddings(tokenizer.get_vocab_size(), pad_to_multiple_of=8)
    return tokenizer
