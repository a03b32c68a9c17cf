"""PyTorch side of lir: models, checkpoint loaders and (later) training."""

from lir.train.bi_encoder import BiEncoderModel, SingleVectorConfig
from lir.train.checkpoints import LoadedBiEncoder, load_bi_encoder
from lir.train.module import BiEncoderModule, ScoreOutput

__all__ = [
    "BiEncoderModel",
    "BiEncoderModule",
    "LoadedBiEncoder",
    "ScoreOutput",
    "SingleVectorConfig",
    "load_bi_encoder",
]
