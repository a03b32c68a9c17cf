"""lir: Lightning IR's models as a production stack (torch-free core).

This package holds the contract between the stages (the model manifest), the tokenization rules,
TREC/qrels IO and metrics. It never imports torch, transformers or lightning.
"""

from lir.errors import LirError

__version__ = "0.1.0"
__all__ = ["LirError", "__version__"]
