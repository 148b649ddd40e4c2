"""Fusion operators: a set of modality vectors ``x [B, M, D]`` (+ presence ``[B, M]``, optional relation
embedding) -> one entity vector ``[B, D]``.

Every operator returns ``(fused, weights)``; ``weights [B, M]`` are the per-modality weights for diagnostics,
or ``None`` for operators without weights.  Missing modalities arrive already filled by the representation's
explicit fill policy (a learned "missing" vector or zeros); weighted operators additionally give an absent
modality zero weight through ``present``.
"""

from __future__ import annotations

import torch
from torch import nn

from mmkgc.nn.scorers import _kernels


class ConcatFusion(nn.Module):
    """Concatenate the ``M`` modality vectors and project back: ``y = W [x_1; ...; x_M] + b``.

    The "concat" configuration of VEMP's feature comparison (Sela et al.) and the usual multimodal KGE baseline.

    :param num_modalities: ``M`` (the structural embedding counts as one).
    :param dim: ``D``.
    :param residual_slot: if given, the projection starts as the identity on this slot (the structural
        embedding) plus the default random initialisation scaled by ``other_scale`` on the other slots and no
        bias, so training starts from the structure-only model and learns how much of each modality to add.
        With the plain random initialisation the structural embedding is scrambled by a random matrix at the
        start, which slows down the structural part (measured on the synthetic KG, see docs/benchmarks.md).
    :param other_scale: scale of the initial weights of the non-residual slots.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: concatenation has no weights) -> ``([B, D], None)``.
    """

    def __init__(self, num_modalities: int, dim: int, residual_slot: int | None = None, other_scale: float = 0.1):
        super().__init__()
        self.num_modalities = num_modalities
        self.projection = nn.Linear(num_modalities * dim, dim)
        if residual_slot is not None:
            if not 0 <= residual_slot < num_modalities:
                raise ValueError(f"residual_slot {residual_slot} out of range for {num_modalities} modalities")
            with torch.no_grad():
                self.projection.weight.mul_(other_scale)
                block = slice(residual_slot * dim, (residual_slot + 1) * dim)
                self.projection.weight[:, block] = torch.eye(dim)
                self.projection.bias.zero_()

    def forward(
        self, x: torch.Tensor, present: torch.Tensor | None = None, relation: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        if x.shape[-2] != self.num_modalities:
            raise ValueError(f"ConcatFusion expects {self.num_modalities} modalities, got x of shape {tuple(x.shape)}")
        return self.projection(x.flatten(-2)), None


def masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``present`` entries (absent ones get exactly 0); ``logits`` and
    ``present`` (bool) of the same shape ``[..., M]``.

    A row without any present entry (never produced by the representations, which always include structure)
    gets all-zero weights instead of NaN.
    """
    logits = logits.masked_fill(~present, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


class TanhAttentionFusion(nn.Module):
    """Attention over modality vectors: ``β = softmax_m( α_m · wᵀ tanh(x_m) / τ_r )``, ``y = Σ_m β_m x_m``.

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
        a = torch.tanh(x) @ self.w.to(x.dtype)
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
        if x.shape[-2] != self.num_modalities:
            raise ValueError(f"TanhAttentionFusion expects {self.num_modalities} modalities, got {tuple(x.shape)}")
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        weights = masked_softmax(self.logits(x, relation, base), present)
        return (weights.unsqueeze(-1) * x).sum(-2), weights


class RelationGate(nn.Module):
    """AFME's relation-driven denoising gate (MoIFu, methods.md §5.2): ``γ_m = σ(W_g (x_m ⊙ c_r) + b_g)``,
    ``x̃_m = γ_m ⊙ x_m``, with one dedicated relation context vector ``c_r ∈ R^D`` per relation and one ``W_g``
    shared by the modalities (a single bias: ``nn.Linear``'s; the seed sample's second bias is not reproduced).

    Choice (paper silent): ``c_r`` starts at 1 plus N(0, 0.1) noise and ``b_g`` at ``bias_init`` (3.0:
    ``σ ≈ 0.95``), so the gate starts close to the identity and learns what to suppress.

    :param dim: ``D``.  :param num_relations: ``R``.  :param bias_init: initial ``b_g``.
    :param rank: ``None`` (full ``D x D`` ``W_g``, the paper) or ``k`` for ``W_g = U V`` (``V: D -> k`` without
        bias, ``U: k -> D``), ``2Dk`` instead of ``D^2`` multiply-adds per token.

    Shapes: ``x [B, M, D]``, ``present [B, M]`` (unused: the gate is elementwise), ``relation [B]`` ->
    ``(gated x [B, M, D], mean gate value per modality [B, M])``.
    :raises ValueError: called without ``relation``.
    """

    relation_aware = True

    def __init__(self, dim: int, num_relations: int, bias_init: float = 3.0, rank: int | None = None):
        super().__init__()
        self.context = nn.Parameter(1.0 + 0.1 * torch.randn(num_relations, dim))
        out = nn.Linear(dim if rank is None else rank, dim)
        with torch.no_grad():
            out.weight.mul_(0.1)
            out.bias.fill_(bias_init)
        # ``rank``: W_g = U V (low rank; see FusionConfig.gate_rank), else the full D x D matrix
        self.linear = out if rank is None else nn.Sequential(nn.Linear(dim, rank, bias=False), out)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if relation is None:
            raise ValueError("RelationGate needs the relation ids")
        c = self.context[relation].to(x.dtype).unsqueeze(-2)
        gate = torch.sigmoid(self.linear(x * c))
        return gate * x, gate.mean(-1)


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


class _GatedPairsKernel(torch.autograd.Function):
    """:class:`_GatedPairs` with the compiled CPU kernels of :mod:`mmkgc.nn.scorers` (float32): the pairs are processed
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
            n, rows = s1 - s0, (s1 - s0) * m
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
            if second is not None:
                hb = h[s0 * m:s1 * m]
                torch.mm(hb, second.t(), out=zb)
            else:
                lib.mmkgc_gate_context(x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), n, m, d,
                                       ab.data_ptr(), 1)
                torch.mm(ab, first.t(), out=zb)
            lib.mmkgc_gate_backward1(
                x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), zb.data_ptr(), bias.data_ptr(),
                w.data_ptr(), xt[s0:s1].data_ptr(), t[s0:s1].data_ptr(), norm[s0:s1].data_ptr(),
                g_xt[s0:s1].data_ptr(), g_logits[s0:s1].data_ptr(), n, m, d, int(ctx.l2), gzb.data_ptr(),
                gxb.data_ptr(), ab.data_ptr(), g_w.data_ptr(), g_bias.data_ptr())
            _gate_chunk_backward(lib, x, es, rs, context, first, second, ab, None if second is None else hb, gzb,
                                 None if g_h is None else g_h[:rows], gab, gxb, g_first, g_second, g_x, g_context)
        return g_x, None, None, g_context, g_first, g_second, g_bias, g_w, None


def gated_pair_logits(gate: "RelationGate", fusion: "TanhAttentionFusion", x: torch.Tensor, entity: torch.Tensor,
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
            lib.mmkgc_pair_mix(xb.data_ptr(), beta.data_ptr(), n, m, d, e[s0:s1].data_ptr())
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
            if second is not None:
                hb = h[s0 * m:s1 * m]
                torch.mm(hb, second.t(), out=zb)
            else:
                lib.mmkgc_gate_context(x.data_ptr(), es.data_ptr(), rs.data_ptr(), context.data_ptr(), n, m, d,
                                       ab.data_ptr(), 1)
                torch.mm(ab, first.t(), out=zb)
            # x̃ of the chunk again (t and ‖x̃‖ are the saved ones)
            lib.mmkgc_gate_forward(x.data_ptr(), es.data_ptr(), zb.data_ptr(), bias.data_ptr(), w.data_ptr(), n, m,
                                   d, xb.data_ptr(), None, None, 1)
            ge, bc, tc = g_e[s0:s1], beta[s0:s1], tau[s0:s1]
            g_beta = torch.empty(n, m, dtype=x.dtype)
            lib.mmkgc_pair_dot(xb.data_ptr(), ge.data_ptr(), n, m, d, g_beta.data_ptr())  # <g_e, x̃_m>
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
            _gate_chunk_backward(lib, x, es, rs, context, first, second, ab, None if second is None else hb, gzb,
                                 None if g_h is None else g_h[:rows], gab, gxb, g_first, g_second, g_x, g_context)
        return g_x, None, None, g_context, g_first, g_second, g_bias, g_w, None, g_tau, None


def gated_pair_mixtures(gate: "RelationGate", fusion: "TanhAttentionFusion", x: torch.Tensor, entity: torch.Tensor,
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


def self_attention(attn: nn.MultiheadAttention, h: torch.Tensor, key_padding_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``attn(h, h, h, key_padding_mask=..., need_weights=True, average_attn_weights=True)`` for a batch-first
    :class:`torch.nn.MultiheadAttention` (Vaswani et al. 2017: ``softmax(Q Kᵀ / √d_h) V`` per head, output
    projection), written with one packed projection split by ``unbind``.

    Same parameters and values as the module's own forward (up to float rounding); for the short token sequences of
    the modality attentions (2-3 tokens) its backward is much cheaper: the module splits its packed ``[3, ...]``
    projection by ``select``, whose backward fills a zero tensor of the packed size for each of ``q``, ``k``, ``v``.
    Falls back to the module where this version does not apply (attention dropout while training, separate
    ``q``/``k``/``v`` weights, ``batch_first=False``, bias on the keys and values, zero attention).

    :param attn: the module (its weights are used).  :param h: ``[B, L, D]``.
    :param key_padding_mask: bool ``[B, L]``, ``True`` = not a key.
    :returns: ``(out [B, L, D], attention weights averaged over heads [B, L, L])``.
    """
    fallback = ((attn.dropout > 0 and attn.training) or not attn._qkv_same_embed_dim or not attn.batch_first
                or attn.bias_k is not None or attn.add_zero_attn)
    if fallback:
        return attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=True, average_attn_weights=True)
    b, length, d = h.shape
    heads = attn.num_heads
    hd = d // heads
    qkv = nn.functional.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, length, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, d_h] each
    scores = (q * hd ** -0.5) @ k.transpose(-1, -2)  # [B, H, L, L]
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = torch.softmax(scores, -1)
    out = (weights @ v).transpose(1, 2).reshape(b, length, d)
    return nn.functional.linear(out, attn.out_proj.weight, attn.out_proj.bias), weights.mean(1)


class ModalitySelfAttention(nn.Module):
    """Multi-layer multi-head self-attention over the sequence of modality tokens of each entity (AFME MoIEn,
    methods.md §5.2; the seed sample's length-1 "attention" is not reproduced): per layer
    ``H ← LayerNorm(H + MHA(H, H, H))`` with absent modalities masked out as keys.

    As a fusion, the output tokens are averaged over the present modalities and the weights are the attention
    each token receives, averaged over queries, heads and layers.

    :param dim: ``D`` (divisible by ``heads``).
    :param layers: ``L`` >= 1.
    :param heads: attention heads.

    Shapes: :meth:`encode`: ``x [B, M, D]``, ``present [B, M]`` -> ``([B, M, D], attention received [B, M])``;
    ``forward`` -> ``(fused [B, D], weights [B, M])``.
    :raises ValueError: ``dim`` not divisible by ``heads``, ``layers < 1``.
    """

    relation_aware = False

    def __init__(self, dim: int, layers: int = 2, heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if layers < 1 or heads < 1 or dim % heads:
            raise ValueError(f"ModalitySelfAttention: need layers >= 1 and dim divisible by heads "
                             f"(dim={dim}, layers={layers}, heads={heads})")
        self.attention = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                                       for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))

    def encode(self, x: torch.Tensor, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        received = torch.zeros(present.shape, dtype=x.dtype, device=x.device)
        h = x
        for attn, norm in zip(self.attention, self.norms):
            out, w = self_attention(attn, h, ~present)
            h = norm(h + out)
            q = present.to(w.dtype).unsqueeze(-1)  # average over present queries only
            received = received + (w * q).sum(-2) / q.sum(-2).clamp_min(1.0)
        return h, received / len(self.attention)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if present is None:
            present = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        h, received = self.encode(x, present)
        p = present.to(h.dtype).unsqueeze(-1)
        return (h * p).sum(-2) / p.sum(-2).clamp_min(1.0), received


class CrossAttentionTokenFusion(nn.Module):
    """VEMP's token-level multimodal encoder (Sela et al., "Vision-Enhanced Message Passing"; methods.md 2.2).

    Text tokens ``X_t [B, L_t, d_t]`` (with mask ``m [B, L_t]``, ``True`` = real token) and image patch tokens
    ``X_v [B, L_v, d_v]`` are projected to a common width ``D`` (``T = X_t W_t + b_t``, ``V = X_v W_v + b_v``), then:

    * ``A_tv = MHA(Q=T, K=V, V=V)`` (no mask), ``T' = FFN_t(A_tv + T)``;
    * ``A_vt = MHA(Q=V, K=T, V=T, key_padding=not m)``, ``V' = FFN_v(A_vt + V)``;
      ``FFN(x) = W_2 GELU(W_1 x)`` (``D -> ffn_dim -> D``), no LayerNorm and no second residual;
    * pooling: ``p_t = sum_l m_l T'_l / max(sum_l m_l, 1e-6)`` (masked mean), ``p_v = mean_p V'_p``;
    * fusion ``f = W_4 GELU(LN(W_3 [p_t; p_v]))`` (``2D -> D -> D``);
    * heads ``z_g = norm(W_g f)``, ``z_t = norm(W_tp p_t)``, ``z_v = norm(W_vp p_v)`` (``D -> proj_dim``, L2-normalised).

    Padding text tokens never influence any output: they are excluded as attention keys and from the text pooling
    (their own query rows are computed but dropped by the masked mean).

    :param text_dim: ``d_t`` (512 for CLIP ViT-B/32 text).
    :param image_dim: ``d_v`` (768 for CLIP ViT-B/32 vision).
    :param dim: ``D`` (VEMP: 512).
    :param num_heads: heads of both attentions (VEMP: 8); must divide ``dim``.
    :param ffn_dim: hidden width of the FFNs (VEMP: ``2 * dim`` = 1024); default ``2 * dim``.
    :param proj_dim: width of the three heads (VEMP: 256).
    :param dropout: attention dropout (VEMP: 0).

    ``forward(text [B, L_t, d_t], text_mask [B, L_t] bool, image [B, L_v, d_v]) -> dict`` with ``fused [B, D]``,
    ``text [B, D]`` (``p_t``), ``image [B, D]`` (``p_v``), ``z_graph``, ``z_text``, ``z_image`` ``[B, proj_dim]``.
    :raises ValueError: inconsistent shapes or a ``text_mask`` of the wrong shape (a row without any real text
        token is allowed: its ``p_t`` is 0).
    """

    def __init__(self, text_dim: int, image_dim: int, dim: int = 512, num_heads: int = 8,
                 ffn_dim: int | None = None, proj_dim: int = 256, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
        self.text_dim, self.image_dim, self.dim, self.proj_dim = text_dim, image_dim, dim, proj_dim
        self.text_in = nn.Linear(text_dim, dim)
        self.image_in = nn.Linear(image_dim, dim)
        self.text_to_image = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.image_to_text = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.text_ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.image_ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.fusion = nn.Sequential(nn.Linear(2 * dim, dim), nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim))
        self.graph_head = nn.Linear(dim, proj_dim)
        self.text_head = nn.Linear(dim, proj_dim)
        self.image_head = nn.Linear(dim, proj_dim)

    def encode(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused vector ``f [B, D]`` and the pooled text / image vectors ``p_t, p_v [B, D]`` (before the heads)."""
        if text.ndim != 3 or image.ndim != 3 or text.shape[0] != image.shape[0]:
            raise ValueError(f"expected text [B, L_t, {self.text_dim}] and image [B, L_v, {self.image_dim}], "
                             f"got {tuple(text.shape)} and {tuple(image.shape)}")
        if text_mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be {tuple(text.shape[:2])}, got {tuple(text_mask.shape)}")
        mask = text_mask.bool()
        t = self.text_in(text)
        v = self.image_in(image)
        a_tv, _ = self.text_to_image(t, v, v, need_weights=False)
        t2 = self.text_ffn(a_tv + t)
        # A row without real tokens would make every key masked (NaN softmax); give it one dummy key and zero p_t.
        empty = ~mask.any(1)
        key_padding = ~mask
        if bool(empty.any()):
            key_padding = key_padding.clone()
            key_padding[empty, 0] = False
        a_vt, _ = self.image_to_text(v, t, t, key_padding_mask=key_padding, need_weights=False)
        v2 = self.image_ffn(a_vt + v)
        m = mask.unsqueeze(-1).to(t2.dtype)
        p_t = (t2 * m).sum(1) / m.sum(1).clamp_min(1e-6)
        p_v = v2.mean(1)
        return self.fusion(torch.cat([p_t, p_v], -1)), p_t, p_v

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        f, p_t, p_v = self.encode(text, text_mask, image)
        norm = torch.nn.functional.normalize
        return {"fused": f, "text": p_t, "image": p_v, "z_graph": norm(self.graph_head(f), dim=-1),
                "z_text": norm(self.text_head(p_t), dim=-1), "z_image": norm(self.image_head(p_v), dim=-1)}


class DecisionFusion(nn.Module):
    """Late (decision-level) fusion of per-modality predictions ``P [B, M, N] -> [B, N]``.

    * ``mean``: ``(1/M) sum_m P_m`` -- IMVIA's ``(P_s + P_v + P_t) / 3`` (methods.md section 4.2), no parameters;
    * ``learned``: ``sum_m softmax(w)_m P_m`` with one trainable logit per modality (zero init = mean);
    * ``relation``: ``sum_m softmax(w_r)_m P_m`` with logits per query relation (zero init = mean) -- the
      "relation-aware gated decision fusion" the IMVIA paper describes but its code does not implement.

    The inputs are whatever the caller fuses (IMVIA: probabilities); a convex combination of probabilities stays
    a probability.

    :param num_modalities: ``M``.
    :param mode: ``mean``, ``learned`` or ``relation``.
    :param num_relations: rows of the relation weight table (needed for ``relation``).

    Shapes: ``forward(P [B, M, N], relation [B] | None) -> (fused [B, N], weights [B, M])``.
    :raises ValueError: unknown mode, missing relation for ``relation``, or wrong ``M``.
    """

    def __init__(self, num_modalities: int, mode: str = "mean", num_relations: int = 0):
        super().__init__()
        if mode not in ("mean", "learned", "relation"):
            raise ValueError(f"DecisionFusion: mode must be mean, learned or relation, got {mode!r}")
        if mode == "relation" and num_relations < 1:
            raise ValueError("DecisionFusion mode 'relation' needs num_relations >= 1")
        self.num_modalities, self.mode = num_modalities, mode
        self.logits = nn.Parameter(torch.zeros(num_modalities)) if mode == "learned" else None
        self.relation_logits = nn.Embedding(num_relations, num_modalities) if mode == "relation" else None
        if self.relation_logits is not None:
            nn.init.zeros_(self.relation_logits.weight)

    def weights(self, batch: int, relation: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """Per-query modality weights ``[B, M]`` (rows sum to 1)."""
        if self.mode == "mean":
            return torch.full((batch, self.num_modalities), 1.0 / self.num_modalities, device=device)
        if self.mode == "learned":
            return torch.softmax(self.logits, 0).expand(batch, -1)
        if relation is None:
            raise ValueError("DecisionFusion mode 'relation' needs the query relations")
        return torch.softmax(self.relation_logits(relation), -1)

    def forward(self, predictions: torch.Tensor, relation: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if predictions.ndim != 3 or predictions.shape[1] != self.num_modalities:
            raise ValueError(f"DecisionFusion expects [B, {self.num_modalities}, N], got {tuple(predictions.shape)}")
        w = self.weights(predictions.shape[0], relation, predictions.device).to(predictions.dtype)
        return (w.unsqueeze(-1) * predictions).sum(1), w
