"""GPU check, one run: onnxruntime CUDA/TensorRT and fp16 against CPU fp32, Faiss GPU against CPU, `lir fit` bf16.

1. the all-MiniLM-L6-v2 export's fp32 graph under CUDAExecutionProvider (and TensorrtExecutionProvider where
   onnxruntime lists it) against CPU fp32: max |difference| of the embeddings and of the query-document
   scores on SciFact texts, whether each query's top 10 over the documents is identical, docs/s;
2. the export's fp16 variant under CUDA, the same way (exported into a temporary folder when missing);
3. Faiss GPU against Faiss CPU: Flat inner-product top 10 on random unit vectors (when Faiss has GPUs);
4. `lir fit --config train/configs/single-vector.yaml` for a few bf16-mixed steps on the GPU.

Prints a Markdown table and writes bench-results/gpu-check.json (and the fit's log, gpu-check-fit.log). Without
a CUDA GPU it prints one line and exits 0. Exit 1 when a parity check fails beyond its tolerance, else 0 (a part
that cannot run is a row saying why).

    python benchmarks/gpu_check.py --model model_repository/minilm --data ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lir.clients.engine import Engine
from lir.clients.onnx_engine import OnnxEngine
from lir.collections import iter_docs, read_queries
from lir.errors import LirError
from lir.manifest import load_manifest, verified_file

ROOT = Path(__file__).resolve().parents[1]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
FIT_CONFIG = "train/configs/single-vector.yaml"
FIT_BATCH = 16  # queries per step (the config's train_batch_size)
FIT_DATA = "data.init_args.train_dataset.init_args"
# max |difference| to CPU fp32 of any embedding entry or query-document score (embeddings are unit vectors).
# onnxruntime's CUDA EP (and TensorRT) run fp32 MatMul in TF32 by default; a real fault (mask, pooling, the
# wrong graph) moves entries by more than 5e-2.
TOLERANCE = {"fp32": 5e-3, "fp16": 1e-2}
FAISS_TOLERANCE = 1e-4
CUDA, TENSORRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass
class Row:
    """One line of the table; `values` are the numbers behind it (for the JSON)."""

    check: str
    system: str
    difference: str = ""
    top10: str = ""
    speed: str = ""
    result: str = "ok"
    failed: bool = False
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Encoding:
    """Documents and queries encoded by one system, and its document throughput."""

    docs: np.ndarray
    queries: np.ndarray
    docs_per_s: float


class ProviderEngine(Engine):
    """The export's encoder graphs under explicit onnxruntime providers (OnnxEngine knows cpu and cuda only)."""

    def __init__(self, directory: Path, variant: str, providers: Sequence[Any]) -> None:
        super().__init__(directory, load_manifest(directory))
        self.variant = variant
        self._graph_of = dict(self.manifest.encoders)
        self._sessions = {
            name: ort.InferenceSession(
                str(verified_file(directory, self.manifest.graphs[name].variants[variant])), providers=providers
            )
            for name in set(self._graph_of.values())
        }

    def run_batch(self, role: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        session = self._sessions[self._graph_of[role]]
        found = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
        return dict(zip([o.name for o in session.get_outputs()], found, strict=True))

    def run_scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise LirError("a bi-encoder has no scorer graph")


def log(message: str) -> None:
    """Progress, on stderr (stdout holds the table)."""
    print(f"gpu-check: {message}", file=sys.stderr, flush=True)


def reason(exc: BaseException) -> str:
    """One line saying why something failed."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip().rstrip(":")


def last_line(text: str) -> str:
    """The last non-empty line of a command's output."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def gpu_name() -> str | None:
    """The first GPU nvidia-smi lists (name, driver, memory), or None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        found = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return found.splitlines()[0] if found else None


def missing_gpu() -> str | None:
    """Why this machine cannot run the check; None when it can."""
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on PATH"
    if gpu_name() is None:
        return "nvidia-smi lists no GPU"
    try:
        version("onnxruntime-gpu")
    except PackageNotFoundError:
        return f"onnxruntime {ort.__version__} is the CPU build; `make gpu-install` swaps in onnxruntime-gpu"
    if CUDA not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} lists no {CUDA}"
    return None


def first_provider(engine: Engine) -> str:
    """The provider that runs the engine's graphs first: onnxruntime falls back to CPU, with a logged error only,
    when CUDA or TensorRT libraries fail to load (the engines expose no public view of their sessions)."""
    return next(iter(engine._sessions.values())).get_providers()[0]


def sample_texts(data: Path, n_docs: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """`n_docs` SciFact documents drawn at random and the first `n_queries` test queries."""
    docs = [text for _, text in iter_docs(str(data))]
    rng = np.random.default_rng(seed)
    picked = [docs[i] for i in sorted(rng.choice(len(docs), min(n_docs, len(docs)), replace=False))]
    return picked, list(read_queries(str(data), "test").values())[:n_queries]


def fp16_export(model: Path, data: Path, tmp: Path) -> Path:
    """`model` when it has an fp16 variant, else a fresh export of its source with one (in `tmp`)."""
    try:
        manifest = load_manifest(model)
    except LirError as exc:  # missing, or written by an older lir
        log(str(exc))
        manifest = None
    if manifest is not None and "fp16" in manifest.graphs[manifest.encoders["doc"]].variants:
        return model
    source = manifest.provenance["source"] if manifest is not None else MINILM
    log(f"{model} has no fp16 variant: exporting {source} with --fp16 (a few minutes)")
    command = [sys.executable, "-m", "lir.export.cli", "--model", source, "--name", "minilm-gpu", "--fp16"]
    command += ["--output", str(tmp / "repository"), "--parity-data", str(data)]
    try:
        code = subprocess.run(command, timeout=600).returncode
    except subprocess.TimeoutExpired:
        raise LirError("lir-export ran over 10 minutes") from None
    if code != 0:
        raise LirError(f"lir-export exited {code} (its error is above)")
    return tmp / "repository" / "minilm-gpu"


def encode(engine: Engine, docs: list[str], queries: list[str], warm: list[str], **options: Any) -> Encoding:
    """Encode `warm` (CUDA start-up, TensorRT's engine build), then time the documents; then the queries."""
    if engine.family != "single-vector":
        raise LirError(f"a {engine.family} model: the check compares single-vector embeddings")
    engine.encode_docs(warm, **options)
    start = time.perf_counter()
    doc_vectors = np.asarray(engine.encode_docs(docs, **options), dtype=np.float32)
    docs_per_s = len(docs) / (time.perf_counter() - start)
    return Encoding(doc_vectors, np.asarray(engine.encode_queries(queries, **options), dtype=np.float32), docs_per_s)


def top10(scores: np.ndarray) -> np.ndarray:
    """Each query's 10 best documents, best first."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :10]


def compare(system: str, kind: str, reference: Encoding, found: Encoding, batch_size: int) -> Row:
    """A GPU system's row: its differences to CPU fp32, its top 10s, its docs/s; failed beyond TOLERANCE."""
    embeddings = max(np.abs(found.docs - reference.docs).max(), np.abs(found.queries - reference.queries).max())
    expected, scores = reference.queries @ reference.docs.T, found.queries @ found.docs.T
    score = float(np.abs(scores - expected).max())
    same = int((top10(scores) == top10(expected)).all(axis=1).sum())
    failed = max(embeddings, score) > TOLERANCE[kind]
    return Row(
        f"encoder {kind}",
        system,
        f"emb {embeddings:.1e}, score {score:.1e}",
        f"{same}/{len(scores)} queries",
        f"{found.docs_per_s:.0f} docs/s (batch {batch_size})",
        f"FAIL (> {TOLERANCE[kind]:.0e})" if failed else f"ok (≤ {TOLERANCE[kind]:.0e})",
        failed,
        {
            "max_abs_diff_embeddings": float(embeddings),
            "max_abs_diff_scores": score,
            "top10_identical": same,
            "queries": len(scores),
            "docs_per_s": found.docs_per_s,
        },
    )


def tensorrt_providers(cache: Path, inputs: list[str], batch_size: int, length: int) -> list[Any]:
    """TensorRT (fp32) with one shape profile that holds every batch sent, so its engine is built once."""

    def shapes(size: str) -> str:
        return ",".join(f"{name}:{size}" for name in inputs)

    largest = shapes(f"{batch_size}x{length}")
    options = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_profile_min_shapes": shapes("1x1"),
    }
    options |= {"trt_profile_opt_shapes": largest, "trt_profile_max_shapes": largest}
    return [(TENSORRT, options), CUDA, "CPUExecutionProvider"]


def encoder_rows(args: argparse.Namespace, tmp: Path) -> list[Row]:
    """Sections 1 and 2: CPU fp32, CUDA fp32, TensorRT fp32 and CUDA fp16 of the same export."""
    try:
        model = fp16_export(Path(args.model), Path(args.data), tmp)
        docs, queries = sample_texts(Path(args.data), args.docs, args.queries, args.seed)
        log(f"CPU fp32: encoding {len(docs)} documents and {len(queries)} queries (the reference)")
        cpu = OnnxEngine(model, "fp32", "cpu")
        reference = encode(cpu, docs, queries, docs[:32], batch_size=32, max_tokens=None)
    except Exception as exc:  # each section reports its own failure
        return [Row("encoder fp32", "onnxruntime CPU (reference)", result=f"error: {reason(exc)}")]
    manifest = load_manifest(model)
    length = max(manifest.doc.max_length, manifest.query.max_length)
    inputs = [t.name for t in manifest.graphs[manifest.encoders["doc"]].inputs]
    speed = f"{reference.docs_per_s:.0f} docs/s (batch 32, {os.cpu_count()} threads)"
    rows = [
        Row("encoder fp32", "onnxruntime CPU (reference)", speed=speed, values={"docs_per_s": reference.docs_per_s})
    ]
    providers = tensorrt_providers(tmp / "tensorrt", inputs, args.batch_size, length)
    systems: list[tuple[str, str, str, Callable[[], Engine]]] = [
        ("onnxruntime CUDA", "fp32", CUDA, lambda: OnnxEngine(model, "fp32", "cuda")),
        ("onnxruntime TensorRT", "fp32", TENSORRT, lambda: ProviderEngine(model, "fp32", providers)),
        ("onnxruntime CUDA", "fp16", CUDA, lambda: OnnxEngine(model, "fp16", "cuda")),
    ]
    for system, kind, provider, make in systems:
        if provider not in ort.get_available_providers():
            rows.append(Row(f"encoder {kind}", system, result=f"skipped: onnxruntime lists no {provider}"))
            continue
        log(f"{system} {kind}: encoding twice (warm-up, then timed; batch {args.batch_size}, max length {length})")
        try:
            engine = make()
            if first_provider(engine) != provider:
                raise LirError(
                    f"{provider} did not load: onnxruntime fell back to {first_provider(engine)} (see its log)"
                )
            found = encode(engine, docs, queries, docs, batch_size=args.batch_size, max_tokens=None)
            engine.close()
            rows.append(compare(system, kind, reference, found, args.batch_size))
        except Exception as exc:
            rows.append(Row(f"encoder {kind}", system, result=f"error: {reason(exc)}"))
    return rows


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1."""
    return np.ascontiguousarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)


def faiss_row(args: argparse.Namespace) -> Row:
    """Section 3: Faiss GPU against CPU, Flat inner product, top 10 (ties within tolerance may swap ids)."""
    check, system = "faiss Flat IP top-10", f"GPU vs CPU, {args.faiss_docs:,} × 384 random"
    try:
        import faiss

        if faiss.get_num_gpus() < 1:
            return Row(check, system, result=f"skipped: faiss {faiss.__version__} sees no GPU (faiss-cpu?)")
        rng = np.random.default_rng(args.seed)
        base, queries = (unit(rng.standard_normal((n, 384), dtype=np.float32)) for n in (args.faiss_docs, args.queries))
        log(f"faiss: Flat IP over {len(base):,} vectors, CPU then GPU")
        cpu = faiss.IndexFlatIP(384)
        cpu.add(base)
        start = time.perf_counter()
        cpu_scores, cpu_ids = cpu.search(queries, 10)
        cpu_ms = 1000 * (time.perf_counter() - start)
        gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
        gpu.search(queries, 10)  # warm-up
        start = time.perf_counter()
        gpu_scores, gpu_ids = gpu.search(queries, 10)
        gpu_ms = 1000 * (time.perf_counter() - start)
    except Exception as exc:
        return Row(check, system, result=f"error: {reason(exc)}")
    differ = gpu_ids != cpu_ids
    exact = np.einsum("qd,qkd->qk", queries, base[gpu_ids])  # the GPU's documents scored exactly
    ties = int((differ & (np.abs(exact - cpu_scores) <= FAISS_TOLERANCE)).sum())
    wrong = int(differ.sum()) - ties
    score = float(np.abs(gpu_scores - cpu_scores).max())
    failed = wrong > 0 or score > FAISS_TOLERANCE
    return Row(
        check,
        system,
        f"score {score:.1e}",
        f"{cpu_ids.size - wrong - ties}/{cpu_ids.size} ids equal, {ties} tie swaps",
        f"GPU {gpu_ms:.1f} ms, CPU {cpu_ms:.1f} ms ({len(queries)} queries)",
        f"FAIL (> {FAISS_TOLERANCE:.0e} or ids differ)" if failed else f"ok (≤ {FAISS_TOLERANCE:.0e})",
        failed,
        {"max_abs_diff_scores": score, "ids_wrong": wrong, "tie_swaps": ties, "gpu_ms": gpu_ms, "cpu_ms": cpu_ms},
    )


def fit_row(args: argparse.Namespace, tmp: Path, output: Path) -> Row:
    """Section 4: `lir fit` of the single-vector config for a few bf16-mixed steps on the GPU."""
    check, system = "lir fit bf16", f"{FIT_CONFIG}, {args.fit_steps} steps × {FIT_BATCH} queries"
    probe = "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
    try:
        found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
        if found.returncode != 0:
            return Row(check, system, result=f"error: torch does not load: {last_line(found.stderr)}")
        torch_version, bf16 = last_line(found.stdout).split()
        if bf16 != "True":
            return Row(
                check, system, result=f"skipped: torch {torch_version} has no CUDA GPU with bf16 (make gpu-install)"
            )
        data, runs = str(Path(args.data).resolve()), tmp / "fit"
        overrides = {
            "trainer.max_steps": args.fit_steps,
            "trainer.precision": "bf16-mixed",
            "trainer.accelerator": "gpu",
            "trainer.devices": 1,
            "trainer.default_root_dir": runs,
            "huggingface_checkpoint.dirpath": runs / "checkpoint",
            "data.init_args.train_batch_size": FIT_BATCH,
            f"{FIT_DATA}.limit": FIT_BATCH * args.fit_steps,
            f"{FIT_DATA}.queries": data,
            f"{FIT_DATA}.docs": data,
        }
        command = [sys.executable, "-m", "lir.cli", "fit", "--config", FIT_CONFIG]
        command += [f"--{key}={value}" for key, value in overrides.items()]
        log(f"lir fit: {args.fit_steps} bf16-mixed steps with torch {torch_version} (about a minute)")
        start = time.perf_counter()
        ran = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
    except Exception as exc:
        return Row(check, system, result=f"error: {reason(exc)}")
    output.mkdir(parents=True, exist_ok=True)
    (output / "gpu-check-fit.log").write_text(ran.stdout + ran.stderr, encoding="utf-8")
    if ran.returncode != 0:
        return Row(check, system, result=f"error: exit {ran.returncode}: {last_line(ran.stderr or ran.stdout)}")
    if not (runs / "checkpoint" / "config.json").is_file():
        return Row(check, system, result="error: it wrote no checkpoint")
    losses = re.findall(r"loss=([0-9.]+)", ran.stderr + ran.stdout)
    loss = f", loss {losses[-1]}" if losses else ""
    return Row(check, system, speed=f"{seconds:.1f} s with start-up{loss}", values={"seconds": seconds})


def markdown(rows: list[Row], header: str) -> str:
    """The rows as a Markdown table under one line saying where they come from."""
    lines = [
        header,
        "",
        "| check | system | max abs difference | top-10 | speed | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.check} | {r.system} | {r.difference} | {r.top10} | {r.speed} | {r.result} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every section; exit 1 only when a parity check fails beyond its tolerance."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model_repository/minilm", help="exported model directory (fp32)")
    parser.add_argument("--data", default="../shared/data/scifact", help="SciFact folder")
    parser.add_argument("--docs", type=int, default=1000, help="documents to encode (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=50, help="queries to rank them for (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="GPU batch size (default: %(default)s)")
    parser.add_argument("--faiss-docs", type=int, default=100_000, help="vectors for Faiss (default: %(default)s)")
    parser.add_argument("--fit-steps", type=int, default=5, help="lir fit steps (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench-results", help="folder for gpu-check.json")
    args = parser.parse_args(argv)

    why = missing_gpu()
    if why is not None:
        print(f"gpu-check: no CUDA GPU here ({why}); nothing to check")
        return 0
    try:  # CUDA and cuDNN from the nvidia-* wheels, before any CUDA session (onnxruntime-gpu >= 1.21)
        ort.preload_dlls()
    except Exception as exc:  # the CUDA rows then say what did not load
        log(f"onnxruntime.preload_dlls failed: {reason(exc)}")
    output = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="lir-gpu-check-") as folder:
        tmp = Path(folder)
        rows = encoder_rows(args, tmp) + [faiss_row(args), fit_row(args, tmp, output)]
    gpu = gpu_name()
    print(markdown(rows, f"GPU: {gpu}; onnxruntime-gpu {ort.__version__}; SciFact, {args.queries} queries"))
    failed = any(row.failed for row in rows)
    output.mkdir(parents=True, exist_ok=True)
    result = {"gpu": gpu, "onnxruntime": ort.__version__, "passed": not failed, "rows": [asdict(r) for r in rows]}
    (output / "gpu-check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    log(f"wrote {output / 'gpu-check.json'}" + ("; a parity check FAILED" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
