"""Tanh attention over modality vectors: AdaMF (Zhang et al., LREC-COLING 2024), with NativE's relation temperature
(Zhang et al., SIGIR 2024) and AFME's confidence weights (Wang et al., Neural Networks 2025); methods.md §6.2, §7,
§5.2.  The same attention as PyG's ``AttentionalAggregation`` with a ``wᵀ tanh(·)`` gate."""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.fusion.base import Fusion, masked_softmax
from mmkgc.nn.kernels import load as _kernels

__all__ = ["TanhAttentionFusion", "tanh_attention", "tanh_dot"]


def _kernel_ready(x: torch.Tensor) -> bool:
    """Whether the compiled CPU kernels (``gate.c``) can take ``x``: float32 on the CPU outside autocast (bf16
    autocast would hand the backward reduced-precision gradients), kernels built."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and _kernels() is not None)


def _tanh_dot_grad(x: torch.Tensor, th: torch.Tensor, w: torch.Tensor, g_t: torch.Tensor, beta: torch.Tensor | None,
                   g: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂/∂x, ∂/∂w)`` of ``Σ g_t · wᵀtanh(x)``, plus ``β_m g`` on every ``x_m`` with ``beta [B, M]`` and
    ``g [B, D]`` (the attention mixture's own term), for contiguous float32 ``x [..., D]``, ``th = tanh(x)`` and
    ``g_t [...]``: one pass of the compiled kernel for ``∂/∂x``, a matrix-vector product for ``∂/∂w``.

    In a double-backward context (``torch.is_grad_enabled()`` inside a backward: ``create_graph=True``, e.g. a
    gradient penalty taken through the fusion) the callers compute their gradients as differentiable PyTorch
    operations instead (:func:`_differentiable_grads`)."""
    d = x.shape[-1]
    rows = x.numel() // d
    g_x = torch.empty_like(th)
    _kernels().mmkgc_tanh_dot_grad(th.data_ptr(), w.data_ptr(), g_t.data_ptr(),
                                   None if beta is None else beta.data_ptr(), None if g is None else g.data_ptr(),
                                   rows, x.shape[-2] if beta is not None else 1, d, g_x.data_ptr(),
                                   torch.get_num_threads())
    return g_x, th.view(rows, d).t() @ g_t.reshape(rows)


def _differentiable_grads(x: torch.Tensor, w: torch.Tensor, present: torch.Tensor | None, g_out: torch.Tensor,
                          g_beta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂/∂x, ∂/∂w)`` of :class:`_TanhDot` (``present is None``: ``g_out = ∂/∂t``) or :class:`_TanhAttention`
    (``g_out = ∂/∂y``, ``g_beta = ∂/∂β`` or ``None``) written as differentiable PyTorch operations of ``x``, ``w``
    and the incoming gradients, for a backward that runs with ``create_graph=True``."""
    th = torch.tanh(x)
    if present is None:
        g_t, g_x = g_out, 0.0
    else:
        beta = masked_softmax(th @ w, present)
        g_b = (x * g_out.unsqueeze(-2)).sum(-1)
        if g_beta is not None:
            g_b = g_b + g_beta
        g_t = beta * (g_b - (beta * g_b).sum(-1, keepdim=True))
        g_x = beta.unsqueeze(-1) * g_out.unsqueeze(-2)
    g_x = g_x + g_t.unsqueeze(-1) * w * (1 - th * th)
    return g_x, (g_t.unsqueeze(-1) * th).reshape(-1, x.shape[-1]).sum(0)


class _TanhDot(torch.autograd.Function):
    """``t = wᵀ tanh(x)`` over the last axis; the backward writes ``∂/∂x`` in one pass of the compiled kernel
    (``gate.c``) from the saved ``tanh(x)``."""

    @staticmethod
    def forward(ctx, x, w):
        x = x.contiguous()
        th = torch.tanh(x)
        ctx.save_for_backward(x, w, th)
        return th @ w

    @staticmethod
    def backward(ctx, g_t):
        x, w, th = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _differentiable_grads(x, w, None, g_t, None)
        return _tanh_dot_grad(x, th, w, g_t.contiguous(), None, None)


class _TanhAttention(torch.autograd.Function):
    """AdaMF's fusion ``β = softmax_present(wᵀ tanh(x_m))``, ``y = Σ_m β_m x_m`` as one node: the mixture, the
    products ``<x_m, ∂y>`` and ``∂/∂x`` (softmax, tanh and mixture terms together) are one pass each of the compiled
    kernels (``gate.c``), ``tanh`` and the logits PyTorch's."""

    @staticmethod
    def forward(ctx, x, w, present):
        x = x.contiguous()
        th = torch.tanh(x)
        beta = masked_softmax(th @ w, present).contiguous()
        y = x.new_empty(x.shape[0], x.shape[-1])
        _kernels().mmkgc_pair_mix(x.data_ptr(), beta.data_ptr(), x.shape[0], x.shape[1], x.shape[2], y.data_ptr(),
                                  torch.get_num_threads())
        ctx.save_for_backward(x, w, th, beta, present)
        return y, beta

    @staticmethod
    def backward(ctx, g_y, g_beta):
        x, w, th, beta, present = ctx.saved_tensors
        if g_y is None:
            g_y = x.new_zeros(x.shape[0], x.shape[-1])
        if torch.is_grad_enabled():
            return (*_differentiable_grads(x, w, present, g_y, g_beta), None)
        g_y = g_y.contiguous()
        g_b = x.new_empty(x.shape[:-1])  # <x_m, ∂y>  [B, M]
        _kernels().mmkgc_pair_dot(x.data_ptr(), g_y.data_ptr(), x.shape[0], x.shape[1], x.shape[2], g_b.data_ptr(),
                                  torch.get_num_threads())
        if g_beta is not None:
            g_b = g_b + g_beta
        g_t = beta * (g_b - (beta * g_b).sum(-1, keepdim=True))  # softmax backward; absent slots: β = 0 -> 0
        g_x, g_w = _tanh_dot_grad(x, th, w, g_t.contiguous(), beta.contiguous(), g_y)
        return g_x, g_w, None


def tanh_dot(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``wᵀ tanh(x)`` over the last axis: ``x [..., D]``, ``w [D]`` -> ``[...]`` (AdaMF's attention logit, methods.md
    §6.2).  On the CPU in float32 the backward is one pass of the compiled kernel; elsewhere (GPU, float64, no
    compiler, ``MMKGC_NO_COMPILE=1``) plain ``tanh(x) @ w``.  Equal up to float rounding (tested)."""
    if _kernel_ready(x) and w.dtype == x.dtype:
        return _TanhDot.apply(x, w)
    return torch.tanh(x) @ w.to(x.dtype)


def tanh_attention(x: torch.Tensor, w: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaMF's fusion ``β = softmax_m(wᵀ tanh(x_m))`` over the present modalities, ``y = Σ_m β_m x_m``.

    ``x [B, M, D]``, ``w [D]``, ``present [B, M]`` (bool) -> ``(y [B, D], β [B, M])``; absent modalities get
    ``β = 0`` and no gradient.  The compiled kernel path (CPU, float32, 3-d ``x``) and the PyTorch path (any leading
    shape ``[..., M, D]``) give equal values and gradients up to float rounding (tested)."""
    if x.ndim == 3 and _kernel_ready(x) and w.dtype == x.dtype:  # the kernels read [B, M, D] rows
        return _TanhAttention.apply(x, w, present)
    weights = masked_softmax(torch.tanh(x) @ w.to(x.dtype), present)
    return (weights.unsqueeze(-1) * x).sum(-2), weights


class TanhAttentionFusion(Fusion):
    """AdaMF / NativE / AFME tanh attention. Attention over modality vectors: ``β = softmax_m( α_m · wᵀ tanh(x_m) / τ_r )``, ``y = Σ_m β_m x_m``.

    * AdaMF (Zhang et al., LREC-COLING 2024, methods.md §6.2): one shared ``w ∈ R^D`` without bias, ``α = τ = 1``.
    * NativE (Zhang et al., SIGIR 2024, §7): ``relation_temperature=True``: ``τ_r = sigmoid(g_r)`` with one scalar
      ``g_r`` per relation, initialised uniformly in ``±init_range`` (NativE: ``(γ + ε) / (2d)``, so τ ≈ 0.5).
    * AFME dynamic weights (Wang et al., Neural Networks 2025, §5.2): ``confidence='l2'``: ``α_m = ‖x_m‖₂``.

    Absent modalities (``present`` False) get weight exactly 0 (the softmax runs over the present ones only).

    :param dim: ``D``.
    :param num_modalities: ``M`` (the structural embedding counts as one).
    :param relation_temperature: use ``τ_r`` (then ``forward`` needs ``relation``).
    :param num_relations: ``R`` (rows of ``g``), needed with ``relation_temperature``.
    :param confidence: ``none`` or ``l2``.
    :param init_range: half-width of the uniform initialisation of ``g``.

    Shapes: ``x [B, M, D]``, ``present`` bool ``[B, M]`` (``None`` = all present), ``relation`` int64 ``[B]`` ->
    ``(fused [B, D], weights [B, M])``.
    :raises ValueError: wrong ``M``, or a relation-conditioned fusion called without ``relation``.
    """

    synonyms = ("attention",)

    def __init__(self, dim: int, num_modalities: int, relation_temperature: bool = False, num_relations: int = 0,
                 confidence: str = "none", init_range: float = 0.05):
        super().__init__()
        if confidence not in ("none", "l2"):
            raise ValueError(f"confidence must be 'none' or 'l2', got {confidence!r}")
        if relation_temperature and num_relations < 1:
            raise ValueError("relation_temperature needs num_relations >= 1")
        self.dim, self.num_modalities = dim, num_modalities
        self.relation_temperature, self.confidence = relation_temperature, confidence
        self.w = nn.Parameter(torch.empty(dim).uniform_(-dim ** -0.5, dim ** -0.5))
        if relation_temperature:
            self.g = nn.Parameter(torch.empty(num_relations).uniform_(-init_range, init_range))
        else:
            self.register_parameter("g", None)
        self.relation_aware = relation_temperature

    def temperature(self, relation: torch.Tensor) -> torch.Tensor:
        """``τ_r = sigmoid(g_r)`` of ``relation [B]`` -> ``[B]``."""
        return torch.sigmoid(self.g[relation])

    def base_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The relation-independent part ``α_m wᵀ tanh(x_m)`` ``[B, M]`` (reusable across relations)."""
        a = tanh_dot(x, self.w)
        if self.confidence == "l2":
            a = a * x.norm(dim=-1)
        return a

    def logits(self, x: torch.Tensor, relation: torch.Tensor | None = None,
               base: torch.Tensor | None = None) -> torch.Tensor:
        """Unmasked attention logits ``[B, M]`` (``base``: precomputed :meth:`base_logits`)."""
        a = self.base_logits(x) if base is None else base
        if self.relation_temperature:
            if relation is None:
                raise ValueError("TanhAttentionFusion with relation_temperature needs the relation ids")
            a = a / self.temperature(relation).to(a.dtype).unsqueeze(-1)
        return a

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None, base: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        present = self.check_input(x, present)
        if base is None and not self.relation_temperature and self.confidence == "none":
            return tanh_attention(x, self.w, present)  # AdaMF: one node (compiled kernels on the CPU)
        weights = masked_softmax(self.logits(x, relation, base), present)
        return (weights.unsqueeze(-1) * x).sum(-2), weights
