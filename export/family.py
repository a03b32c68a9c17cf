"""What exporting differs in between model families, as one explicit class per family.

`ModelExport` is what the shared machinery of `lir.export.bundle` asks of every family: the graphs to
export (`plans`), PyTorch's outputs on the probes to measure them against (`reference`), the text rules
and the family's own manifest fields. `BiEncoderExport` is the half the bi-encoder families share: what
PyTorch computes for each probe text (`expected_rows`), what a graph computed for each text of a batch
(`graph_rows`), how far the two are apart (`compare`: max abs difference and min cosine), and how rows
are packed and scored for the effectiveness check (`pack`, `scores`). Cross-encoders are
`lir.export.cross_encoder`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lir.export.graphs import GraphPlan
from lir.export.limits import MIN_COSINE
from lir.export.parity import Parity, ProbeSet, Reference, Runner, graph_runner
from lir.manifest import ROLES, TextRules
from lir.train.module import BiEncoderModule
from lir.vectors import Encoded


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two [N, D] arrays: 1 where both rows are zero, 0 where only one is."""
    norm_a, norm_b = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    norms = norm_a * norm_b
    dots = (a * b).sum(-1) / np.where(norms == 0, 1.0, norms)
    return np.where((norm_a == 0) & (norm_b == 0), 1.0, np.where(norms == 0, 0.0, dots))


class ModelExport(ABC):
    """The family-specific half of an export; `module` is the PyTorch side it is checked against.

    `module` is a `BiEncoderModule` or a `CrossEncoderModule`: both hold the loaded checkpoint (`loaded`)
    and its model, whose config gives the text rules of each role.
    """

    family: str
    bounds: dict[str, float] = MIN_COSINE
    """The lowest agreement with PyTorch each numeric variant may reach (what `Parity.measure` returns)."""
    agreement: str = "min cosine"
    """What the agreement is, in messages (the manifest's `Variant.measure`)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.loaded = module.loaded
        self.model = module.model

    @abstractmethod
    def plans(self) -> list[GraphPlan]:
        """The graphs to export, those running the backbone first."""

    @abstractmethod
    def reference(self, probes: ProbeSet) -> Parity:
        """PyTorch's outputs on the probes, that every graph and variant is measured against."""

    @abstractmethod
    def manifest_fields(self) -> dict[str, Any]:
        """family, similarity, embedding_dim, normalized and encoders; families add their own fields."""

    def rules(self) -> dict[str, TextRules]:
        """The text rules of each role, as the manifest records them."""
        return {role: TextRules(**vars(self.model.config.rules(role))) for role in ROLES}

    def provenance(self, expected: Any) -> dict[str, Any]:
        """Family-specific provenance, from PyTorch's outputs on the probes (`Parity.expected`)."""
        return {}

    def warnings(self, expected: Any) -> list[str]:
        """What the user should know about this export, from PyTorch's outputs on the probes."""
        return []

    def write_files(self, staging: Path, reference: Parity) -> dict[str, Any]:
        """Write what the export holds besides graphs and tokenizer into `staging`, checked against
        `reference`; returns the manifest fields that name those files (none for most families)."""
        return {}


class BiEncoderExport(ModelExport):
    """A bi-encoder family: encoder graphs per role, compared text by text with PyTorch."""

    module: BiEncoderModule
    encoders: dict[str, str]
    """The graph that encodes each role."""

    @property
    def normalize_in_graph(self) -> bool:
        """Whether the graphs L2-normalize what the model leaves unnormalized (cosine similarity)."""
        config = self.model.config
        return config.similarity == "cosine" and not getattr(config, "normalize", False)

    def reference(self, probes: ProbeSet) -> Reference:
        return Reference.compute(self, probes)

    @abstractmethod
    def expected_rows(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, role: str, lengths: list[int]
    ) -> list[Any]:
        """PyTorch's output for each text of a padded batch (`lengths`: each text's token count)."""

    @abstractmethod
    def graph_rows(self, outputs: list[np.ndarray], lengths: list[int]) -> list[Any]:
        """A graph's outputs for a batch, split per text (`lengths`: each text's token count)."""

    @abstractmethod
    def compare(self, got: Any, expected: Any) -> tuple[float, float]:
        """Max abs difference and min cosine of one text's graph row against PyTorch's."""

    @abstractmethod
    def pack(self, rows: list[Any]) -> Encoded:
        """Graph rows of many texts in the family's packed form (lir.vectors)."""

    @abstractmethod
    def scores(self, queries: Encoded, docs: Encoded) -> np.ndarray:
        """[Q, N] scores of packed queries against packed documents (the numpy reference)."""

    def manifest_fields(self) -> dict[str, Any]:
        config = self.model.config
        return {
            "family": self.family,
            "similarity": config.similarity,
            "embedding_dim": self.model.embedding_dim,
            "normalized": getattr(config, "normalize", False) or config.similarity == "cosine",
            "encoders": dict(self.encoders),
        }

    def runner(self, role: str, sessions: dict[str, ort.InferenceSession]) -> Runner:
        """What encodes `role` in an export whose graphs run in `sessions` (by graph name)."""
        return graph_runner(sessions[self.encoders[role]])

    def compare_scorer(self, session: ort.InferenceSession, expected: dict[str, list[Any]]) -> tuple[float, float]:
        """Max difference and min cosine of a scoring graph against PyTorch on pairs of probe rows."""
        raise NotImplementedError(f"{self.family} models export no scoring graph")
