"""Training a SPLADE model in bounded memory: the MLM head and its pooling run a chunk of positions at a time
and are recomputed in the backward pass, with the same gradients as one pass over [B, L, V]."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lir.train.checkpoints import load_model
from tests import builders


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    return builders.lightning_ir_splade_dir(tmp_path_factory.mktemp("splade") / "splade")


def gradients(model, chunk_tokens: int, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    model.chunk_tokens = chunk_tokens
    weights = model.encode(ids, mask, "doc")
    (weights * torch.linspace(0.5, 1.5, weights.shape[-1])).sum().backward()
    return weights.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("pooling", ["max", "sum", "mean", "first"])
def test_chunked_training_pass_has_the_same_weights_and_gradients(splade, pooling):
    model = load_model(str(splade)).model.train()
    model.backbone.eval()  # no dropout: both passes must see the same network (the head still trains chunked)
    model.config.pooling = pooling
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (3, 37), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0  # a padded text: padding never contributes, in any chunk
    whole, whole_grads = gradients(model, 10**6, ids, mask)
    chunked, chunked_grads = gradients(model, 5, ids, mask)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert chunked_grads.keys() == whole_grads.keys() and "head.bias" in whole_grads
    for name, grad in whole_grads.items():  # alike up to float32 rounding of sums in another order
        scale = max(float(grad.abs().max()), 1.0)  # key biases get no gradient at all: rounding noise
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def held_for_backward(model, chunk_tokens: int, ids: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps from the forward pass for the backward pass (distinct storages)."""
    model.chunk_tokens = chunk_tokens
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        weights = model.encode(ids, torch.ones_like(ids), "doc")
    weights.sum().backward()  # a chunk's recomputation in here is held one chunk at a time
    return sum(storages.values())


def test_a_training_step_holds_memory_by_the_chunk_not_the_text_length(splade):
    """16 documents × 256 positions × 30,522 terms: one pass keeps two [B, L, V] tensors (0.5 GB each) for the
    backward pass; chunks of 16 positions keep the backbone's states and one [B, V] row per chunk."""
    model = load_model(str(splade)).model.train()
    ids = torch.randint(1000, 30000, (16, 256), generator=torch.Generator().manual_seed(0))
    whole, chunked = held_for_backward(model, 10**6, ids), held_for_backward(model, 16, ids)
    assert whole > 16 * 256 * 30522 * 4 * 1.5, whole
    assert chunked < whole / 8, (chunked, whole)


def test_gradient_checkpointing_keeps_the_gradients_and_holds_less(splade, tmp_path):
    """`gradient_checkpointing: true` (any family's fit module) recomputes each backbone layer in the backward
    pass: the same gradients, and the backbone's activations are no longer held."""
    from lir.train.fit_module import SparseFitModule, checkpoint_backbone

    quiet = tmp_path / "no-dropout"
    shutil.copytree(splade, quiet)
    config = json.loads((quiet / "config.json").read_text())
    (quiet / "config.json").write_text(
        json.dumps(config | {"hidden_dropout_prob": 0, "attention_probs_dropout_prob": 0})
    )
    ids = torch.randint(1000, 30000, (4, 64), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    plain = load_model(str(quiet)).model.train()
    checkpointed = load_model(str(quiet)).model.train()
    checkpoint_backbone(checkpointed)
    _, expected = gradients(plain, 16, ids, mask)
    _, found = gradients(checkpointed, 16, ids, mask)
    for name, grad in expected.items():
        torch.testing.assert_close(found[name], grad, rtol=1e-4, atol=1e-5 * max(float(grad.abs().max()), 1.0))
    assert held_for_backward(checkpointed, 16, ids) < held_for_backward(plain, 16, ids)
    assert SparseFitModule(str(quiet), gradient_checkpointing=True).model.backbone.is_gradient_checkpointing
