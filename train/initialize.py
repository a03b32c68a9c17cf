"""New models of each family on a pre-trained backbone, as Lightning IR's `Model.from_pretrained(path, config=...)`.

A settings class per Lightning IR model type names the family's settings (Lightning IR's keys and defaults)
and draws its fresh head. `initialize` writes the backbone, the settings and the head as a Lightning IR
checkpoint into a temporary directory and loads it with lir's own loader, so a new model is exactly what its
saved checkpoint will load back as. The head is drawn from torch's global generator (seed it for a
reproducible start).
"""

from __future__ import annotations

import tempfile

from lir.errors import LirError
from lir.train.checkpoint_io import LoadedBiEncoder
from lir.train.checkpoints import load_model
from lir.train.cross_encoder import CrossEncoderModel, LoadedCrossEncoder
from lir.train.multi_vector import MultiVectorModel
from lir.train.saving import ModelSettings, write_checkpoint
from lir.train.single_vector import BiEncoderModel
from lir.train.sparse import SparseModel

Loaded = LoadedBiEncoder | LoadedCrossEncoder
PLAIN_BACKBONES = (BiEncoderModel, MultiVectorModel, SparseModel, CrossEncoderModel)
"""The models whose `backbone` is a plain encoder (not a T5 or a sequence classifier with its own head)."""


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
