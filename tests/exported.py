"""An export's graphs run as a consumer runs them (its manifest's tokenizer rules, onnxruntime on CPU): shared
by the family export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from lir.manifest import Manifest
from lir.tokenization import TextEncoder

TEXTS = [
    "What causes fever in children?",
    "Aspirin reduces the risk of heart attack, stroke and death in patients with cardiovascular disease. " * 6,
    "Short.",
    "Vitamin D; deficiency (and infection): a meta-analysis!",
]


def sessions(directory: Path, manifest: Manifest, variant: str = "fp32") -> dict[str, ort.InferenceSession]:
    """An onnxruntime session of each graph of the export that has `variant`."""
    found = {}
    for name, graph in manifest.graphs.items():
        path = directory / graph.variants[variant].file if variant in graph.variants else None
        if path:
            found[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return found


def run_encoder(directory: Path, manifest: Manifest, role: str, texts: list[str]) -> list[np.ndarray]:
    """The role's encoder graph on texts tokenized as a consumer does (the manifest's rules)."""
    encoder = TextEncoder.from_manifest(directory, manifest, role)
    input_ids, attention_mask = encoder.batch(encoder.encode(texts))
    session = sessions(directory, manifest)[manifest.encoders[role]]
    return session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
