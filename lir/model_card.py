"""`ModelCard`: the few facts every engine answers about its model, from the manifest (the one source).

The embedded engine reads it from the export's manifest, the Triton engine from the manifest the server's
text endpoint exposes (its `manifest` config parameter), the PyTorch engine from the loaded model: so no
engine guesses a family, a dimension or an aggregation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lir.errors import LirError
from lir.manifest import Manifest

MANIFEST_PARAMETER = "manifest"
"""The text endpoint's config parameter that holds the export's manifest (JSON)."""


@dataclass(frozen=True)
class ModelCard:
    """What a consumer of a model needs beside its graphs: name, family, vector size (None for a
    cross-encoder), aggregations over query and document tokens and whether a cross-encoder is listwise.
    (What identifies its document encoder is the manifest's `fingerprint`.)"""

    name: str
    family: str
    embedding_dim: int | None
    aggregation: str | None
    doc_aggregation: str | None
    listwise: bool

    @classmethod
    def of(cls, manifest: Manifest) -> ModelCard:
        """The card of an export's manifest."""
        return cls(
            name=manifest.name,
            family=manifest.family,
            embedding_dim=manifest.embedding_dim,
            aggregation=manifest.aggregation,
            doc_aggregation=manifest.doc_aggregation or ("max" if manifest.family == "multi-vector" else None),
            listwise=manifest.pair is not None and manifest.pair.listwise,
        )


def served_manifest(parameters: dict[str, str], model: str) -> Manifest:
    """The manifest a served text endpoint exposes in its config parameters (validated)."""
    text = parameters.get(MANIFEST_PARAMETER)
    if not text:
        raise LirError(f"model {model!r} does not expose its manifest: serve an export of this lir version")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise LirError(f"model {model!r} exposes a manifest that is not JSON") from None
    return Manifest.from_dict(data)
