"""The tanh attention without a gate (AdaMF's fusion; the relation-independent logits of NativE and AFME) on its
compiled CPU path (``gate.c``: ``mmkgc_tanh_dot_grad``, ``mmkgc_pair_mix``, ``mmkgc_pair_dot``) and its PyTorch path,
both against a float64 computation written from the formula: values, first derivatives, and the second derivatives
a gradient penalty takes through the fusion."""

from __future__ import annotations

import pytest
import torch

from mmkgc.nn.fusion import TanhAttentionFusion
from mmkgc.nn.fusion.tanh_attention import tanh_attention, tanh_dot
from mmkgc.nn.scorers import scorer_kernel_available


def reference(x: torch.Tensor, w: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``β_m = exp(l_m) / Σ_present exp(l_k)`` with ``l_m = Σ_d tanh(x_md) w_d``, absent -> 0; ``y = Σ_m β_m x_m``."""
    logits = (torch.tanh(x) * w).sum(-1)
    e = torch.exp(logits - logits.max(-1, keepdim=True).values) * present
    beta = e / e.sum(-1, keepdim=True)
    return (beta.unsqueeze(-1) * x).sum(-2), beta


def _inputs(b: int = 9, m: int = 3, d: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (1.5 * torch.randn(b, m, d, generator=g)).requires_grad_(True)
    w = torch.randn(d, generator=g).requires_grad_(True)
    present = torch.rand(b, m, generator=g) > 0.3
    present[:, 0] = True
    present[1, 1:] = False  # structure only
    return x, w, present


def _path(path: str, monkeypatch) -> None:
    if path == "kernel" and not scorer_kernel_available():
        pytest.skip("no C compiler")
    if path == "pytorch":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_tanh_attention_values_and_gradients_equal_the_float64_formula(path, threads, monkeypatch):
    _path(path, monkeypatch)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x, w, present = _inputs()
        y, beta = tanh_attention(x, w, present)
        g = torch.Generator().manual_seed(5)
        wy, wb = torch.randn(y.shape, generator=g), torch.randn(beta.shape, generator=g)
        got = torch.autograd.grad((y * wy).sum() + (beta * wb).sum(), [x, w])  # both outputs reach the loss
    finally:
        torch.set_num_threads(before)
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    ref_y, ref_beta = reference(x64, w64, present)
    ref = torch.autograd.grad((ref_y * wy.double()).sum() + (ref_beta * wb.double()).sum(), [x64, w64])
    torch.testing.assert_close(y.double(), ref_y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(beta.double(), ref_beta, rtol=1e-5, atol=1e-6)
    assert torch.all(beta[~present] == 0)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
    assert torch.all(got[0][~present] == 0)  # an absent modality gets no gradient


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_tanh_dot_values_and_gradients_equal_the_float64_formula(path, monkeypatch):
    _path(path, monkeypatch)
    x, w, _ = _inputs(seed=2)
    t = tanh_dot(x, w)
    wt = torch.randn(t.shape, generator=torch.Generator().manual_seed(3))
    got = torch.autograd.grad((t * wt).sum(), [x, w])
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    ref_t = (torch.tanh(x64) * w64).sum(-1)
    ref = torch.autograd.grad((ref_t * wt.double()).sum(), [x64, w64])
    torch.testing.assert_close(t.double(), ref_t, rtol=1e-5, atol=1e-6)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_second_derivatives_for_a_gradient_penalty_through_the_fusion(path, monkeypatch):
    """``(‖∂f/∂x‖ - 1)²`` with ``create_graph=True`` (WGAN-GP with ``gp_target: modality``) differentiates the fusion's
    backward: its gradients to ``x`` and ``w`` equal the float64 formula's."""
    _path(path, monkeypatch)
    x, w, present = _inputs(seed=4)
    u = torch.randn(x.shape[0], x.shape[-1], generator=torch.Generator().manual_seed(6))

    def penalty(xx, ww, uu, fn):
        y = fn(xx, ww, present)[0]
        (gx,) = torch.autograd.grad((y * uu).sum(), xx, create_graph=True)
        t = tanh_dot(xx, ww) if fn is tanh_attention else (torch.tanh(xx) * ww).sum(-1)
        (gt,) = torch.autograd.grad(t.pow(2).sum(), xx, create_graph=True)
        return (gx.flatten(1).norm(dim=-1) - 1).pow(2).sum() + gt.pow(2).sum()

    got = torch.autograd.grad(penalty(x, w, u, tanh_attention), [x, w])
    x64, w64 = x.detach().double().requires_grad_(True), w.detach().double().requires_grad_(True)
    ref = torch.autograd.grad(penalty(x64, w64, u.double(), reference), [x64, w64])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path", ["kernel", "pytorch"])
def test_the_fusion_module_takes_the_compiled_path_with_the_same_numbers(path, monkeypatch):
    """``TanhAttentionFusion`` (AdaMF) and its NativE form (``base_logits`` through :func:`tanh_dot`) in float32
    against the module's own float64 computation, which takes the PyTorch path."""
    _path(path, monkeypatch)
    x, _, present = _inputs(seed=7)
    relation = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    for kwargs in ({}, {"relation_temperature": True, "num_relations": 3}):
        torch.manual_seed(1)
        fusion = TanhAttentionFusion(7, 3, **kwargs)
        y, beta = fusion(x, present, relation)
        got = torch.autograd.grad((y * y).sum(), [x, fusion.w])
        fusion64 = fusion.double()
        x64 = x.detach().double().requires_grad_(True)
        ref_y, ref_beta = fusion64(x64, present, relation)
        ref = torch.autograd.grad((ref_y * ref_y).sum(), [x64, fusion64.w])
        torch.testing.assert_close(y.double(), ref_y, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(beta.double(), ref_beta, rtol=1e-5, atol=1e-6)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)
        fusion.float()


def test_leading_batch_axes_take_the_pytorch_path_with_the_same_numbers():
    """``x [A, B, M, D]`` (the operator contract allows leading axes) equals the 3-d call on the flattened batch."""
    x, w, present = _inputs(seed=8)
    x4, p4 = x.detach().reshape(3, 3, *x.shape[1:]), present.reshape(3, 3, -1)
    y4, b4 = tanh_attention(x4, w.detach(), p4)
    y3, b3 = tanh_attention(x.detach(), w.detach(), present)
    torch.testing.assert_close(y4.reshape(y3.shape), y3, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b4.reshape(b3.shape), b3, rtol=1e-5, atol=1e-6)
