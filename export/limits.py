"""How far an exported graph may drift from PyTorch before the export is refused (torch-free)."""

from lir.errors import LirError

FP32_TOLERANCE = 1e-4  # max abs difference of any embedding entry
MIN_COSINE = {"int8": 0.95, "fp16": 0.999}  # lowest cosine of any embedding to PyTorch's


class ParityError(LirError):
    """An exported graph does not compute what the PyTorch model computes."""
