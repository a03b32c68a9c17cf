"""The torch-free rule: `lir` and `lir.clients` never import torch, transformers or lightning, nor does the
`lir` command until it hands a command to LightningCLI; the core (`lir/`) imports no stage (clients, train,
export, serving, the commands), the clients none but the core."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("torch", "transformers", "lightning", "pytorch_lightning", "sentence_transformers")
REPO = Path(__file__).resolve().parents[1]


def test_importing_the_core_and_clients_loads_no_torch():
    modules = [
        "lir",
        "lir.cli",
        "lir.manifest",
        "lir.tokenization",
        "lir.trec",
        "lir.metrics",
        "lir.collections",
        "lir.clients",
        "lir.clients.commands",
        "lir.clients.engines",
        "lir.clients.retriever",
        "lir.clients.reranker",
        "lir.clients.rerank_command",
        "lir.cli.group",
    ]
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "import lir.cli\nassert lir.cli.main(['index', '--help']) == 0\n"  # the help of every option, built
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--config" in done.stdout and done.stdout.splitlines()[-1] == "[]"


def test_no_source_file_of_the_core_or_clients_imports_torch_or_a_later_stage():
    stages = ("lir.clients", "lir.train", "lir.export", "lir.serving", "lir.cli")
    for folder, later in (("lir", stages), ("clients", stages[1:])):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                )
                for name in names:
                    assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"
                    assert ".".join(name.split(".")[:2]) not in later, f"{path} imports {name}"
