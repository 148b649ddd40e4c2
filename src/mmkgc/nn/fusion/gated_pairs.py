"""AFME's gate + attention fusion over distinct (entity, relation) pairs (Wang et al., Neural Networks 2025; methods.md
§5.2), as single autograd nodes: the training and evaluation hot path of relation-conditioned fusion with a gate.

The compiled CPU kernels (:mod:`mmkgc.nn.kernels`, ``gate.c``) do the element-wise work; without them (GPU, float64,
``MMKGC_NO_COMPILE=1``, no compiler) the PyTorch node :class:`_GatedPairs` computes the same values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mmkgc.nn.fusion.base import masked_softmax
from mmkgc.nn.kernels import load as _kernels

if TYPE_CHECKING:
    from mmkgc.nn.fusion.relation_gate import RelationGate
    from mmkgc.nn.fusion.tanh_attention import TanhAttentionFusion

__all__ = ["gated_pair_logits", "gated_pair_mixtures"]


class _GatedPairs(torch.autograd.Function):
    """Forward/backward of AFME's gate and the relation-independent attention logits for distinct (entity, relation)
    pairs, from the components of distinct entities, in a handful of passes over ``[V, M, D]``.

    Inputs: ``x [U, M, D]``, ``ent [V]``, ``rel [V]``, ``context [R, D]``, ``first [k, D]`` (the gate's first matrix),
    ``second [D, k]`` or ``None`` (low rank), ``bias [D]``, ``w [D]``, ``l2`` (bool).
    Outputs: gated components ``x̃ [V, M, D]`` and ``logits [V, M] = α_m wᵀtanh(x̃_m)`` (``α = ‖x̃_m‖₂`` with ``l2``).
    Saved for the backward: the gate values ``γ [V, M, D]``, ``x̃``, the low-rank activations and small tensors;
    ``tanh(x̃)``, ``x[ent]`` and ``x[ent] ⊙ c_r`` are recomputed in the backward, which runs over chunks of
    :attr:`CHUNK` pairs so that its temporaries stay small.  First-order gradients only.
    """

    CHUNK = 4096

    @staticmethod
    def forward(ctx, x, ent, rel, context, first, second, bias, w, l2: bool):
        v, m, d = ent.shape[0], x.shape[1], x.shape[2]
        c = context.index_select(0, rel).unsqueeze(1)  # [V, 1, D]
        xe = x.index_select(0, ent)
        a = (xe * c).view(v * m, d)
        h = a @ first.t()  # [T, k] (k = D for the full gate)
        del a, c
        z = torch.addmm(bias, h, second.t()) if second is not None else h.add_(bias)
        gamma = z.sigmoid_().view(v, m, d)
        xt = xe.mul_(gamma)  # xe is not needed any more: reuse its memory
        t = (torch.tanh(xt).view(v * m, d) @ w).view(v, m)
        norm = torch.linalg.vector_norm(xt, dim=-1) if l2 else None
        logits = t * norm if l2 else t
        ctx.save_for_backward(x, ent, rel, context, first, second, w, gamma, xt,
                              h.view(v, m, -1) if second is not None else None, t, norm)
        ctx.l2 = l2
        return xt, logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_xt, g_logits):
        x, ent, rel, context, first, second, w, gamma, xt, h, t, norm = ctx.saved_tensors
        v, m, d = gamma.shape
        g_x = torch.zeros_like(x)
        g_context = torch.zeros_like(context)
        g_first = torch.zeros_like(first)
        g_second = torch.zeros_like(second) if second is not None else None
        g_bias = torch.zeros(d, dtype=x.dtype, device=x.device)
        g_w = torch.zeros_like(w)
        for s0 in range(0, v, _GatedPairs.CHUNK):
            sl = slice(s0, min(v, s0 + _GatedPairs.CHUNK))
            n = sl.stop - sl.start
            ga, xs = gamma[sl], xt[sl]
            g = torch.zeros_like(xs) if g_xt is None else g_xt[sl].clone()
            if g_logits is not None:
                gl = g_logits[sl]
                g_t = gl * norm[sl] if ctx.l2 else gl  # [n, M]
                th = torch.tanh(xs)
                g_w.addmv_(th.view(n * m, d).t(), g_t.reshape(-1))  # dL/dw = Σ g_t tanh(x̃)
                g.addcmul_(th.mul_(th).neg_().add_(1.0).mul_(w), g_t.unsqueeze(-1))  # α w ⊙ (1 - tanh²)
                if ctx.l2:  # + t x̃ / ‖x̃‖
                    ns = norm[sl]
                    scale = torch.where(ns > 0, gl * t[sl] / ns.clamp_min(torch.finfo(ns.dtype).tiny),
                                        torch.zeros_like(ns))
                    g.addcmul_(xs, scale.unsqueeze(-1))
            es, rs = ent[sl], rel[sl]
            xe = x.index_select(0, es)
            c = context.index_select(0, rs).unsqueeze(1)
            g_xe = g * ga  # through x̃ = γ ⊙ x
            g_z = g.mul_(xe).mul_(ga).mul_(1.0 - ga).view(n * m, d)  # σ' = γ (1 - γ)
            g_bias += g_z.sum(0)
            if second is not None:
                g_second.addmm_(g_z.t(), h[sl].reshape(n * m, -1))
                g_h = g_z @ second
            else:
                g_h = g_z
            g_first.addmm_(g_h.t(), (xe * c).view(n * m, d))
            g_a = (g_h @ first).view(n, m, d)
            g_xe.addcmul_(g_a, c)
            g_context.index_add_(0, rs, g_a.mul_(xe).sum(1))
            g_x.index_add_(0, es, g_xe)
        return g_x, None, None, g_context, g_first, g_second, g_bias, g_w, None


def _gate_chunk(lib, threads: int, x, es, rs, context, first, second, bias, w, ab, hb, zb, xt, t, norm) -> None:
    """Forward of one chunk of ``n`` pairs with the compiled gate kernels (shared by :class:`_GatedPairsKernel` and
    :class:`_GatedPairMixturesKernel`): ``ab [n M, D] = x ⊙ c_r``, the gate's matrices by BLAS into ``zb [n M, D]``
    (low rank: through ``hb [n M, k]``, kept for the backward), then ``x̃`` into ``xt [n, M, D]``, the logit parts
    ``wᵀtanh(x̃)`` into ``t [n, M]`` and ``‖x̃‖`` into ``norm [n, M]``.  Every output buffer is written in place."""
    n, m, d = es.shape[0], x.shape[1], x.shape[2]
    lib.mmkgc_gate_context(x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), n, m, d, ab.data_ptr(),
                           threads)
    if second is not None:
        torch.mm(ab, first.t(), out=hb)
        torch.mm(hb, second.t(), out=zb)
    else:
        torch.mm(ab, first.t(), out=zb)
    lib.mmkgc_gate_forward(x.data_ptr(), es.data_ptr(), zb.data_ptr(), bias.data_ptr(), w.data_ptr(), n, m, d,
                           xt.data_ptr(), t.data_ptr(), norm.data_ptr(), threads)


def _gate_chunk_backward(lib, x, es, rs, context, first, second, ab, hb, gzb, g_hb, gab, gxb, g_first, g_second,
                         g_x, g_context) -> None:
    """Backward of one chunk through the gate's matrices and ``x ⊙ c_r`` (shared by :class:`_GatedPairsKernel` and
    :class:`_GatedPairMixturesKernel`), after ``mmkgc_gate_backward1`` has written ``gzb [n M, D]`` (the gradient of
    the gate pre-activations) and ``gxb``: accumulates into ``g_first``, ``g_second`` (low rank, through the saved
    ``hb [n M, k]`` and the buffer ``g_hb``), ``g_x`` and ``g_context`` in place; ``gab`` is a ``[n M, D]`` buffer."""
    n, m, d = es.shape[0], x.shape[1], x.shape[2]
    if second is not None:
        g_second.addmm_(gzb.t(), hb)
        ghb = torch.mm(gzb, second, out=g_hb)
    else:
        ghb = gzb
    g_first.addmm_(ghb.t(), ab)
    torch.mm(ghb, first, out=gab)
    lib.mmkgc_gate_backward2(x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), gab.data_ptr(),
                             gxb.data_ptr(), n, m, d, g_x.data_ptr(), g_context.data_ptr())


def _gate_recompute_z(lib, x, es, rs, context, first, second, hb, ab, zb) -> None:
    """The backward's recomputation of one chunk's gate pre-activation ``zb [n M, D] = W (x ⊙ c_r)`` (without the
    bias), shared by :class:`_GatedPairsKernel` and :class:`_GatedPairMixturesKernel`: low rank from the saved
    activations ``hb [n M, k]`` (``zb = hb Uᵀ``); the full gate from ``ab = x ⊙ c_r``, written into ``ab``."""
    if second is not None:
        torch.mm(hb, second.t(), out=zb)
        return
    n, m, d = es.shape[0], x.shape[1], x.shape[2]
    lib.mmkgc_gate_context(x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), n, m, d, ab.data_ptr(), 1)
    torch.mm(ab, first.t(), out=zb)


class _GatedPairsKernel(torch.autograd.Function):
    """:class:`_GatedPairs` with the compiled CPU kernels of :mod:`mmkgc.nn.kernels` (float32): the pairs are processed
    in chunks of :attr:`CHUNK` (512: fastest of 128-2048 measured on DB15K); per chunk a kernel forms ``x ⊙ c_r``, BLAS applies the gate's matrices, and a second
    kernel computes ``γ``, ``x̃``, ``wᵀtanh(x̃)`` and ``‖x̃‖`` in one pass over rows that stay in cache.  Nothing of
    shape ``[V, M, D]`` is kept but the output ``x̃``: the gate values are recomputed in the backward from the saved
    low-rank activations ``[V M, k]`` (the full gate recomputes them from ``x ⊙ c_r``).  Same inputs, outputs and
    gradients as :class:`_GatedPairs` up to float rounding (``σ`` and ``tanh`` use the kernels' vectorised ``exp``,
    a few ulps); first-order gradients only.
    """

    CHUNK = 512

    @staticmethod
    def forward(ctx, x, ent, rel, context, first, second, bias, w, l2: bool):
        lib = _kernels()
        x, context, first, bias, w = (t.detach().contiguous() for t in (x, context, first, bias, w))
        second = None if second is None else second.detach().contiguous()
        ent, rel = ent.contiguous(), rel.contiguous()
        v, m, d = ent.shape[0], x.shape[1], x.shape[2]
        threads = torch.get_num_threads()
        xt = torch.empty(v, m, d, dtype=x.dtype)
        t = torch.empty(v, m, dtype=x.dtype)
        norm = torch.empty(v, m, dtype=x.dtype)
        h = torch.empty(v * m, first.shape[0], dtype=x.dtype) if second is not None else None
        rows_max = min(v, _GatedPairsKernel.CHUNK) * m
        a = torch.empty(rows_max, d, dtype=x.dtype)
        z = torch.empty(rows_max, d, dtype=x.dtype)
        for s0 in range(0, v, _GatedPairsKernel.CHUNK):
            s1 = min(v, s0 + _GatedPairsKernel.CHUNK)
            rows = (s1 - s0) * m
            es, rs = ent[s0:s1], rel[s0:s1]
            ab, zb = a[:rows], z[:rows]
            _gate_chunk(lib, threads, x, es, rs, context, first, second, bias, w, ab,
                        None if h is None else h[s0 * m:s1 * m], zb, xt[s0:s1], t[s0:s1], norm[s0:s1])
        ctx.save_for_backward(x, ent, rel, context, first, second, bias, w, xt, h, t, norm)
        ctx.l2 = l2
        return xt, (t * norm if l2 else t.clone())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_xt, g_logits):
        lib = _kernels()
        x, ent, rel, context, first, second, bias, w, xt, h, t, norm = ctx.saved_tensors
        v, m, d = xt.shape
        g_xt = torch.zeros_like(xt) if g_xt is None else g_xt.contiguous().to(xt.dtype)
        g_logits = torch.zeros_like(t) if g_logits is None else g_logits.contiguous().to(t.dtype)
        g_x = torch.zeros_like(x)
        g_context = torch.zeros_like(context)
        g_first = torch.zeros_like(first)
        g_second = torch.zeros_like(second) if second is not None else None
        g_bias = torch.zeros_like(bias)
        g_w = torch.zeros_like(w)
        rows_max = min(v, _GatedPairsKernel.CHUNK) * m
        z, g_z, g_xe, a, g_a = (torch.empty(rows_max, d, dtype=x.dtype) for _ in range(5))
        g_h = torch.empty(rows_max, first.shape[0], dtype=x.dtype) if second is not None else None
        for s0 in range(0, v, _GatedPairsKernel.CHUNK):
            s1 = min(v, s0 + _GatedPairsKernel.CHUNK)
            n, rows = s1 - s0, (s1 - s0) * m
            es, rs = ent[s0:s1], rel[s0:s1]
            zb, gzb, gxb, ab, gab = z[:rows], g_z[:rows], g_xe[:rows], a[:rows], g_a[:rows]
            hb = h[s0 * m:s1 * m] if second is not None else None
            _gate_recompute_z(lib, x, es, rs, context, first, second, hb, ab, zb)
            lib.mmkgc_gate_backward1(
                x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), zb.data_ptr(), bias.data_ptr(),
                w.data_ptr(), xt[s0:s1].data_ptr(), t[s0:s1].data_ptr(), norm[s0:s1].data_ptr(),
                g_xt[s0:s1].data_ptr(), g_logits[s0:s1].data_ptr(), n, m, d, int(ctx.l2), gzb.data_ptr(),
                gxb.data_ptr(), ab.data_ptr(), g_w.data_ptr(), g_bias.data_ptr())
            _gate_chunk_backward(lib, x, es, rs, context, first, second, ab, hb, gzb,
                                 None if g_h is None else g_h[:rows], gab, gxb, g_first, g_second, g_x, g_context)
        return g_x, None, None, g_context, g_first, g_second, g_bias, g_w, None


def gated_pair_logits(gate: RelationGate, fusion: TanhAttentionFusion, x: torch.Tensor, entity: torch.Tensor,
                      relation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AFME's gate and the relation-independent attention logits of distinct (entity, relation) pairs.

    Equal to ``x̃ = gate(x[entity], None, relation)[0]`` and ``fusion.base_logits(x̃)`` (methods.md §5.2), computed
    by one autograd node that keeps ``x̃`` and the low-rank activations (compiled kernels, CPU float32:
    :class:`_GatedPairsKernel`) or the gate values and ``x̃`` (:class:`_GatedPairs`: GPU, float64,
    ``MMKGC_NO_COMPILE=1``, no C compiler) but none of the other ``[V, M, D]`` intermediates (the training path of
    :meth:`mmkgc.models.fused.FusedRepresentation.mixtures`).

    :param x: components of distinct entities ``[U, M, D]``; ``entity``, ``relation``: int64 ``[V]`` (pair ``v`` is
        entity ``x[entity[v]]`` under ``relation[v]``).
    :returns: ``(x̃ [V, M, D], logits [V, M])``.
    """
    lin = gate.linear
    first, second = (lin, None) if isinstance(lin, nn.Linear) else (lin[0], lin[1])
    dt = x.dtype
    bias = (first if second is None else second).bias.to(dt)
    args = (x, entity, relation, gate.context.to(dt), first.weight.to(dt),
            None if second is None else second.weight.to(dt), bias, fusion.w.to(dt), fusion.confidence == "l2")
    if x.device.type == "cpu" and dt == torch.float32 and _kernels() is not None:
        return _GatedPairsKernel.apply(*args)
    return _GatedPairs.apply(*args)


class _GatedPairMixturesKernel(torch.autograd.Function):
    """AFME's fused vector of each distinct (entity, relation) pair, ``e_v = Σ_m β_vm x̃_vm`` with ``x̃`` the gated
    components (:class:`_GatedPairsKernel`) and ``β_v = softmax_m(α_m wᵀtanh(x̃_vm) / τ_v)`` over the present
    modalities, computed chunk by chunk with the compiled gate kernels: only ``e [V, D]`` (and ``[V M, k]``
    activations, ``[V, M]`` logit parts and weights) is kept; the backward recomputes each chunk's ``x̃``.

    Inputs: as :class:`_GatedPairsKernel` plus ``tau [V]`` (the pair's temperature, differentiable) and ``present``
    bool ``[V, M]``.  Outputs: ``e [V, D]``, ``β [V, M]`` (not differentiable; for inspection).  First-order
    gradients only.
    """

    @staticmethod
    def forward(ctx, x, ent, rel, context, first, second, bias, w, l2: bool, tau, present):
        lib = _kernels()
        x, context, first, bias, w, tau = (t.detach().contiguous() for t in (x, context, first, bias, w, tau))
        second = None if second is None else second.detach().contiguous()
        ent, rel, present = ent.contiguous(), rel.contiguous(), present.contiguous()
        v, m, d = ent.shape[0], x.shape[1], x.shape[2]
        chunk = _GatedPairsKernel.CHUNK
        threads = torch.get_num_threads()
        e = torch.empty(v, d, dtype=x.dtype)
        t = torch.empty(v, m, dtype=x.dtype)
        norm = torch.empty(v, m, dtype=x.dtype)
        h = torch.empty(v * m, first.shape[0], dtype=x.dtype) if second is not None else None
        rows_max = min(v, chunk) * m
        a, z, xt = (torch.empty(rows_max, d, dtype=x.dtype) for _ in range(3))
        for s0 in range(0, v, chunk):
            s1 = min(v, s0 + chunk)
            n, rows = s1 - s0, (s1 - s0) * m
            es, rs = ent[s0:s1], rel[s0:s1]
            ab, zb, xb = a[:rows], z[:rows], xt[:rows]
            _gate_chunk(lib, threads, x, es, rs, context, first, second, bias, w, ab,
                        None if h is None else h[s0 * m:s1 * m], zb, xb, t[s0:s1], norm[s0:s1])
            base = t[s0:s1] * norm[s0:s1] if l2 else t[s0:s1]
            beta = masked_softmax(base / tau[s0:s1].unsqueeze(-1), present[s0:s1]).contiguous()
            lib.mmkgc_pair_mix(xb.data_ptr(), beta.data_ptr(), n, m, d, e[s0:s1].data_ptr(), threads)
        base = t * norm if l2 else t
        beta = masked_softmax(base / tau.unsqueeze(-1), present)
        ctx.save_for_backward(x, ent, rel, context, first, second, bias, w, h, t, norm, tau, beta)
        ctx.l2 = l2
        ctx.mark_non_differentiable(beta)
        return e, beta

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_e, _g_beta):
        lib = _kernels()
        x, ent, rel, context, first, second, bias, w, h, t, norm, tau, beta = ctx.saved_tensors
        v, m, d = ent.shape[0], x.shape[1], x.shape[2]
        chunk = _GatedPairsKernel.CHUNK
        g_e = torch.zeros(v, d, dtype=x.dtype) if g_e is None else g_e.contiguous().to(x.dtype)
        g_x = torch.zeros_like(x)
        g_context = torch.zeros_like(context)
        g_first = torch.zeros_like(first)
        g_second = torch.zeros_like(second) if second is not None else None
        g_bias = torch.zeros_like(bias)
        g_w = torch.zeros_like(w)
        g_tau = torch.empty_like(tau)
        rows_max = min(v, chunk) * m
        z, g_z, g_xe, a, g_a, xt, g_xt = (torch.empty(rows_max, d, dtype=x.dtype) for _ in range(7))
        g_h = torch.empty(rows_max, first.shape[0], dtype=x.dtype) if second is not None else None
        for s0 in range(0, v, chunk):
            s1 = min(v, s0 + chunk)
            n, rows = s1 - s0, (s1 - s0) * m
            es, rs = ent[s0:s1], rel[s0:s1]
            zb, gzb, gxb, ab, gab, xb, gxtb = (buf[:rows] for buf in (z, g_z, g_xe, a, g_a, xt, g_xt))
            hb = h[s0 * m:s1 * m] if second is not None else None
            _gate_recompute_z(lib, x, es, rs, context, first, second, hb, ab, zb)
            # x̃ of the chunk again (t and ‖x̃‖ are the saved ones)
            lib.mmkgc_gate_forward(x.data_ptr(), es.data_ptr(), zb.data_ptr(), bias.data_ptr(), w.data_ptr(), n, m,
                                   d, xb.data_ptr(), None, None, 1)
            ge, bc, tc = g_e[s0:s1], beta[s0:s1], tau[s0:s1]
            g_beta = torch.empty(n, m, dtype=x.dtype)
            lib.mmkgc_pair_dot(xb.data_ptr(), ge.data_ptr(), n, m, d, g_beta.data_ptr(), 1)  # <g_e, x̃_m>
            g_logit = bc * (g_beta - (bc * g_beta).sum(-1, keepdim=True))  # softmax backward (absent: β = 0)
            base = t[s0:s1] * norm[s0:s1] if ctx.l2 else t[s0:s1]
            g_base = (g_logit / tc.unsqueeze(-1)).contiguous()
            g_tau[s0:s1] = -(g_logit * base).sum(-1) / (tc * tc)
            lib.mmkgc_pair_scale(bc.data_ptr(), ge.data_ptr(), n, m, d, gxtb.data_ptr())  # ∂L/∂x̃_m = β_m g_e
            lib.mmkgc_gate_backward1(
                x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), zb.data_ptr(), bias.data_ptr(),
                w.data_ptr(), xb.data_ptr(), t[s0:s1].data_ptr(), norm[s0:s1].data_ptr(), gxtb.data_ptr(),
                g_base.data_ptr(), n, m, d, int(ctx.l2), gzb.data_ptr(), gxb.data_ptr(), ab.data_ptr(),
                g_w.data_ptr(), g_bias.data_ptr())
            _gate_chunk_backward(lib, x, es, rs, context, first, second, ab, hb, gzb,
                                 None if g_h is None else g_h[:rows], gab, gxb, g_first, g_second, g_x, g_context)
        return g_x, None, None, g_context, g_first, g_second, g_bias, g_w, None, g_tau, None


def gated_pair_mixtures(gate: RelationGate, fusion: TanhAttentionFusion, x: torch.Tensor, entity: torch.Tensor,
                        relation: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """AFME's fused vectors of distinct (entity, relation) pairs: gate (methods.md §5.2), attention weights
    ``β = softmax(α_m wᵀtanh(x̃_m) / τ_r)`` over the present modalities, ``e = Σ_m β_m x̃_m``.

    Equal to ``fuse(x[entity], present, relation)`` of :class:`~mmkgc.models.fused.FusedRepresentation`.  On the CPU
    in float32 with the compiled kernels one autograd node (:class:`_GatedPairMixturesKernel`) keeps only ``e`` of
    the ``[V, *, D]`` tensors; otherwise the PyTorch composition of :func:`gated_pair_logits`.

    :param x: components of distinct entities ``[U, M, D]``; ``entity``, ``relation``: int64 ``[V]``;
        ``present``: bool ``[V, M]`` (the pairs' fusion mask).
    :returns: ``(e [V, D], β [V, M])``.
    """
    if fusion.relation_temperature:
        tau = fusion.temperature(relation).to(x.dtype)
    else:
        tau = torch.ones(relation.shape[0], dtype=x.dtype, device=x.device)
    if not (x.device.type == "cpu" and x.dtype == torch.float32 and _kernels() is not None):
        xg, base = gated_pair_logits(gate, fusion, x, entity, relation)
        beta = masked_softmax(base / tau.unsqueeze(-1), present).to(x.dtype)
        return (xg * beta.unsqueeze(-1)).sum(1), beta
    lin = gate.linear
    first, second = (lin, None) if isinstance(lin, nn.Linear) else (lin[0], lin[1])
    bias = (first if second is None else second).bias
    return _GatedPairMixturesKernel.apply(x, entity, relation, gate.context, first.weight,
                                          None if second is None else second.weight, bias, fusion.w,
                                          fusion.confidence == "l2", tau, present)
