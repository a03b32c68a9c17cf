"""PyTorch side of lir: models, checkpoint loaders and (later) training."""

from lir.train.checkpoint_io import LoadedBiEncoder
from lir.train.checkpoints import is_cross_encoder_checkpoint, load_bi_encoder, load_model
from lir.train.cross_encoder import (
    CrossEncoderConfig,
    CrossEncoderModel,
    LoadedCrossEncoder,
    SequenceClassificationCrossEncoder,
    SetEncoderModel,
    load_cross_encoder,
)
from lir.train.cross_module import CrossEncoderModule
from lir.train.module import BiEncoderModule, ScoreOutput
from lir.train.single_vector import BiEncoderModel, SingleVectorConfig

__all__ = [
    "BiEncoderModel",
    "BiEncoderModule",
    "CrossEncoderConfig",
    "CrossEncoderModel",
    "CrossEncoderModule",
    "LoadedBiEncoder",
    "LoadedCrossEncoder",
    "ScoreOutput",
    "SequenceClassificationCrossEncoder",
    "SetEncoderModel",
    "SingleVectorConfig",
    "is_cross_encoder_checkpoint",
    "load_bi_encoder",
    "load_cross_encoder",
    "load_model",
]
