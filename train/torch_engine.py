"""`TorchEngine`: the clients' engine interface run by a PyTorch model, before (or instead of) an export.

`run_batch` returns what the exported encoder graphs return, by the same names (`lir.manifest.OUTPUTS`):
single- and multi-vector vectors L2-normalized when the similarity is cosine (as the graphs normalize),
a sparse model's nonzero terms of each text (all of them: no top-k cut); `run_scores` a cross-encoder's
float32 scores. Tokenization follows the model's own rules (the `TextEncoder`/`PairEncoder` the fit modules
build), so `build_index`, `Retriever` and `Reranker` run on it unchanged and write the clients' formats.
"""

from __future__ import annotations

import hashlib
from functools import cached_property

import numpy as np
import torch
from torch import nn

from lir.clients.engine import Engine
from lir.errors import LirError
from lir.manifest import OUTPUTS
from lir.model_card import ModelCard
from lir.tokenization import PairEncoder, TextEncoder
from lir.train.checkpoint_io import LoadedBiEncoder
from lir.train.checkpoints import load_model
from lir.train.cross_encoder import LoadedCrossEncoder
from lir.train.fit_module import FitModule

ModelSource = FitModule | LoadedBiEncoder | LoadedCrossEncoder | str
"""A fit module, a loaded checkpoint, or a checkpoint spec (directory or cached hub id) for `load_model`."""


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over the model's state dict: each tensor's name, dtype, shape and bytes, by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def torch_device(device: str | torch.device | None) -> torch.device:
    """`device` (default CPU); a one-line error for CUDA where torch sees no GPU."""
    found = torch.device(device or "cpu")
    if found.type == "cuda" and not torch.cuda.is_available():
        raise LirError("device cuda needs a GPU and a CUDA build of torch")
    return found


class TorchEngine(Engine):
    """Encodes or scores with a PyTorch model in eval mode under `torch.inference_mode` on `device`.

    The fingerprint is the model's spec (`model_name_or_path` or the checkpoint it was loaded from) and the
    SHA-256 of its weights: an index built here is searched only with the same weights.
    """

    def __init__(self, model: ModelSource, device: str | torch.device | None = None) -> None:
        if isinstance(model, FitModule):
            loaded, self.spec = model.loaded, str(model.hparams["model_name_or_path"])
        elif isinstance(model, str):
            loaded, self.spec = load_model(model), model
        else:
            loaded, self.spec = model, model.source
        self.device = torch_device(device)
        self.model = loaded.model.to(self.device).eval()
        config, family = self.model.config, self.model.family
        cross = family == "cross-encoder"
        card = ModelCard(
            name=self.spec,
            family=family,
            embedding_dim=None if cross else self.model.embedding_dim,
            aggregation=config.aggregation if family in ("multi-vector", "coil") else None,
            doc_aggregation=config.doc_aggregation if family in ("multi-vector", "coil") else None,
            listwise=cross and config.listwise,
        )
        if cross:
            rules = (config.rules("query"), config.rules("doc"), config.pair_rules())
            super().__init__(None, None, pairs=PairEncoder(loaded.tokenizer, *rules, loaded.pad_token_id), card=card)
        else:
            encoders = {
                role: TextEncoder(loaded.tokenizer, config.rules(role), loaded.pad_token_id, role)
                for role in ("query", "doc")
            }
            super().__init__(None, None, encoders=encoders, card=card)
        self._normalize = getattr(config, "similarity", None) == "cosine" and not getattr(config, "normalize", False)

    @cached_property
    def fingerprint(self) -> dict[str, str]:
        return {"model": self.spec, "doc_encoder_sha256": weights_sha256(self.model)}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.inference_mode()
    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        self.require(cross_encoder=False)
        ids, mask = self._tensor(input_ids), self._tensor(attention_mask)
        if self.family == "coil":
            outputs = self.model.encode(ids, mask, role)
            return {name: x.float().cpu().numpy() if x.is_floating_point() else x.cpu().numpy()
                    for name, x in zip(OUTPUTS["coil"], outputs, strict=True)}  # fmt: skip
        if self.family == "multi-vector":
            vectors, scoring = self.model.encode(ids, mask, role)
            return {"embeddings": self._vectors(vectors), "scoring_mask": scoring.cpu().numpy()}
        encoded = self.model.encode(ids, mask, role)
        if self.family == "sparse":  # every nonzero term (static weights may be negative)
            count = max(int((encoded != 0).sum(dim=-1).max()), 1)
            term_ids = torch.topk(encoded.abs().float(), count, dim=-1).indices
            weights = encoded.float().gather(1, term_ids)
            return {"term_ids": term_ids.cpu().numpy(), "weights": weights.cpu().numpy()}
        return {"embeddings": self._vectors(encoded)}

    def _vectors(self, vectors: torch.Tensor) -> np.ndarray:
        if self._normalize:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors.float().cpu().numpy()

    @torch.inference_mode()
    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.require(cross_encoder=True)
        scores = self.model(**{name: self._tensor(value) for name, value in feeds.items()})
        return scores.float().cpu().numpy()
