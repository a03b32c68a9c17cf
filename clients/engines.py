"""Engines by URL: `onnx:PATH` (or a bare PATH) runs embedded; `triton://HOST:PORT/MODEL` comes with serving."""

from __future__ import annotations

from lir.clients.engine import Engine
from lir.clients.onnx_engine import OnnxEngine

from lir.errors import LirError


def open_engine(url: str, variant: str = "fp32", device: str = "cpu") -> Engine:
    """An engine for `url`."""
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "onnx":
        return OnnxEngine(rest, variant=variant, device=device)
    if sep and scheme in ("triton", "grpc", "http"):
        raise LirError(f"engine {url!r}: Triton engines are not available yet in this version")
    return OnnxEngine(url, variant=variant, device=device)
