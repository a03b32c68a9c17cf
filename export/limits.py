"""How far an exported graph may drift from PyTorch before the export is refused (torch-free)."""

import numpy as np

from lir.errors import LirError

FP32_TOLERANCE = 1e-4  # max difference of any output entry, relative to the largest |entry| (at least 1)
MIN_COSINE = {"int8": 0.95, "fp16": 0.999}  # lowest cosine of any embedding to PyTorch's
# lowest cosine of any scored token vector (multi-vector): dynamic int8 (activations quantized per batch)
# moves single tokens more than pooled embeddings. SciFact probes, batches of 1/7/32: MiniLM ColBERT int8
# min 0.918 (1st percentile 0.954, mean 0.98), a tiny random ColBERT 0.848; fp16 > 0.99999 on both
MIN_TOKEN_COSINE = {"int8": 0.8, "fp16": 0.999}
# lowest cosine of any text's term weights (sparse): dynamic int8 moves the many terms that sit near the ReLU
# threshold in and out. MiniLM SPLADE (random head), SciFact probes: int8 min 0.833 (mean 0.92, nDCG@10 on
# the probe subset not lower than fp32's), fp16 0.99998
MIN_TERM_COSINE = {"int8": 0.8, "fp16": 0.999}
# lowest Pearson correlation of a cross-encoder's scores with PyTorch's over the probe pairs (stored as the
# variant's agreement, measure Pearson r); measured below, see lir.export.cross_encoder
MIN_SCORE_CORRELATION = {"int8": 0.9, "fp16": 0.999}
DEFAULT_TOP_K = 1024  # terms per text a sparse encoder graph returns (never more than the vocabulary)


def scaled_difference(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| relative to the largest |expected| (at least 1): the absolute difference for
    outputs of the usual size, relative for large ones (sum pooling, sums of MaxSims, raw logits)."""
    if not np.size(expected):
        return 0.0
    return float(np.abs(got - expected).max() / max(1.0, float(np.abs(expected).max())))


class ParityError(LirError):
    """An exported graph does not compute what the PyTorch model computes."""
