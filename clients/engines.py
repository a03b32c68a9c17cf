"""Engines by URL.

- `onnx:MODEL_DIR` or a bare `MODEL_DIR`: embedded onnxruntime (the default).
- `triton://HOST:PORT/MODEL`: Triton over gRPC, text mode (the server tokenizes).
- `triton+http://HOST:PORT/MODEL`: Triton over HTTP.
  Query options: `?mode=ids&model_dir=model_repository/minilm` (tokenize here, call the graph model),
  `&timeout=60&concurrency=4`.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from lir.clients.engine import Engine
from lir.clients.onnx_engine import OnnxEngine
from lir.errors import LirError

TRITON_SCHEMES = {"triton": "grpc", "triton+grpc": "grpc", "triton+http": "http"}


def open_engine(url: str, variant: str = "fp32", device: str = "cpu") -> Engine:
    """An engine for `url`."""
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "onnx":
        return OnnxEngine(rest, variant=variant, device=device)
    if sep and scheme in TRITON_SCHEMES:
        return _triton(url, TRITON_SCHEMES[scheme])
    return OnnxEngine(url, variant=variant, device=device)


def _triton(url: str, protocol: str) -> Engine:
    from lir.clients.triton_engine import TritonEngine

    parts = urlsplit(url)
    model = parts.path.strip("/")
    if not parts.hostname or not parts.port or not model:
        raise LirError(f"engine {url!r}: expected triton://HOST:PORT/MODEL")
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(options) - {"mode", "model_dir", "timeout", "concurrency"}
    if unknown:
        raise LirError(f"engine {url!r}: unknown options {sorted(unknown)}")
    try:
        return TritonEngine(
            f"{parts.hostname}:{parts.port}",
            model,
            protocol=protocol,
            mode=options.get("mode", "text"),
            model_dir=options.get("model_dir"),
            timeout=float(options.get("timeout", 60)),
            concurrency=int(options.get("concurrency", 4)),
        )
    except ValueError:
        raise LirError(f"engine {url!r}: timeout and concurrency must be numbers") from None
