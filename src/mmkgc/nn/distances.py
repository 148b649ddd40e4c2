"""Distances between query and entity vectors, the hot paths of TransE-L1 and RotatE (and of the relation-conditioned
fusion of NativE / AFME): all-entity L1 / complex-L1 scores, gathered distances of training negatives with their
backward passes, distances to per-occurrence mixtures, and the complex modulus with the zero subgradient of OpenKE.

TransE-L1 and RotatE need ``sum_k |q_k - x_k|`` for every (query, candidate) pair, which a naive broadcast computes at
about 10 s per 256 DB15K queries on two CPU cores; on CPU (float32) these functions use the compiled kernels of
:mod:`mmkgc.nn.kernels` (``distances.c``: entity-blocked, vectorised over candidates, OpenMP across blocks).  Every
function has a PyTorch path of equal value, used on GPU, for float64, when gradients are required by the all-entity
functions, with ``MMKGC_NO_COMPILE=1``, and -- after a one-time warning -- when no compiler works.
"""

from __future__ import annotations

import ctypes
import weakref

import torch

from mmkgc.nn import kernels

__all__ = [
    "EAGER_CHUNK_ELEMENTS",
    "EAGER_CHUNK_ELEMENTS_ACCELERATOR",
    "complex_l1_distance",
    "complex_modulus",
    "gathered_l1_distance",
    "gathered_mixture_l1_distance",
    "mixture_columns",
    "mixture_table_transposed",
    "pairwise_complex_l1_distance",
    "pairwise_l1_distance",
    "scorer_kernel_available",
]

#: Elements of one ``[B, chunk, d]`` temporary in the eager chunked path on CPU (2**24 floats = 64 MiB) and
#: on accelerators (2**26 floats = 256 MiB).
EAGER_CHUNK_ELEMENTS = 1 << 24
EAGER_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26


def _kernels() -> ctypes.CDLL | None:
    """The compiled CPU kernels (:func:`mmkgc.nn.kernels.load`): built on first use; ``None`` if disabled or
    unavailable."""
    return kernels.load()


def scorer_kernel_available() -> bool:
    """Whether the compiled CPU kernels are enabled and loadable (builds them on first call)."""
    return _kernels() is not None


def _kernel_applicable(*tensors: torch.Tensor) -> bool:
    """Whether the all-entity kernels apply: CPU float32 tensors and no gradient wanted."""
    if any(x.device.type != "cpu" or x.dtype != torch.float32 for x in tensors):
        return False
    return not (torch.is_grad_enabled() and any(x.requires_grad for x in tensors))


class _TransposeCache:
    """Remembers the last transposed copy ``x.T.contiguous()`` of a candidate table.

    The evaluator scores many query batches against the same entity matrix; transposing it (25 MB on DB15K)
    costs about 15 % of a batch.  The entry is valid while the same tensor object is alive and unmodified
    (``x._version`` unchanged); the cache holds only a weak reference to the source.  Inference-mode tensors
    have no version counter, so they are never cached (transposed on every call).
    """

    def __init__(self) -> None:
        self._ref = None
        self._key = None
        self._value: torch.Tensor | None = None

    def get(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_inference():
            return x.t().contiguous()
        key = (x.data_ptr(), tuple(x.shape), tuple(x.stride()), x._version)
        if self._ref is not None and self._ref() is x and self._key == key and self._value is not None:
            return self._value
        value = x.detach().t().contiguous()
        self._ref, self._key, self._value = weakref.ref(x), key, value
        return value


class _ComplexModulus(torch.autograd.Function):
    """``|re + i im|`` element-wise (``torch.hypot``) with the zero subgradient at the origin, like OpenKE's
    ``stack(...).norm(dim=0)`` but about 30x faster on CPU; the backward is made of differentiable torch ops, so
    double backward (gradient penalties) works."""

    @staticmethod
    def forward(ctx, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        modulus = torch.hypot(re, im)
        ctx.save_for_backward(re, im, modulus)
        return modulus

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        re, im, modulus = ctx.saved_tensors
        # Where the modulus is 0, re and im are 0 too, so any finite scale gives the zero subgradient.
        scale = grad / torch.where(modulus > 0, modulus, 1.0)
        return scale * re, scale * im


def _by_entity(entity_index: torch.Tensor) -> torch.Tensor:
    """The occurrences ``[P]`` ordered by the row they read (stable, so the order is deterministic): the gather kernels
    then read -- and their backward writes -- the same or neighbouring entity rows one after the other instead of
    jumping through a table much larger than the cache (measured 2x on the DB15K batches of NativE and AFME)."""
    return torch.argsort(entity_index, stable=True)


class _GatheredL1(torch.autograd.Function):
    """``out[p] = sum_k |Q[qi[p]] - E[ei[p]]|_k`` with the compiled gather kernels (CPU, float32); first-order
    gradients only (double backward raises)."""

    @staticmethod
    def forward(ctx, queries, query_index, entities, entity_index, complex_layout: bool):
        lib = _kernels()
        q = queries.detach().contiguous()
        e = entities.detach().contiguous()
        order = _by_entity(entity_index)
        qi = query_index.index_select(0, order)
        ei = entity_index.index_select(0, order)
        width = q.shape[1]
        d = width // 2 if complex_layout else width
        out = torch.empty(qi.shape[0], dtype=torch.float32)
        lib.mmkgc_gather_l1(q.data_ptr(), qi.data_ptr(), e.data_ptr(), ei.data_ptr(), qi.shape[0], d,
                            int(complex_layout), out.data_ptr(), torch.get_num_threads())
        ctx.save_for_backward(q, qi, e, ei, order)
        ctx.complex_layout = complex_layout
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, qi, e, ei, order = ctx.saved_tensors
        width = q.shape[1]
        d = width // 2 if ctx.complex_layout else width
        g = grad.to(torch.float32).index_select(0, order)
        diff_grad = torch.empty(qi.shape[0], width, dtype=torch.float32)
        _kernels().mmkgc_gather_l1_grad(q.data_ptr(), qi.data_ptr(), e.data_ptr(), ei.data_ptr(), g.data_ptr(),
                                         qi.shape[0], d, int(ctx.complex_layout), diff_grad.data_ptr(),
                                         torch.get_num_threads())
        grad_q = grad_e = None
        if ctx.needs_input_grad[0]:
            grad_q = torch.zeros_like(q).index_add_(0, qi, diff_grad)
        if ctx.needs_input_grad[2]:
            grad_e = torch.zeros_like(e).index_add_(0, ei, diff_grad, alpha=-1.0)
        return grad_q, None, grad_e, None, None


def gathered_l1_distance(queries: torch.Tensor, query_index: torch.Tensor, entities: torch.Tensor,
                         entity_index: torch.Tensor, complex_layout: bool) -> torch.Tensor:
    """``sum_k |queries[query_index[p]] - entities[entity_index[p]]|_k`` for every ``p`` -> ``[P]``.

    The training hot path of TransE-L1 and RotatE: ``K`` negatives of a positive share its query vector, so
    the query table has ``2B`` rows (tail and head queries) and the entity table one row per distinct entity;
    nothing of shape ``[P, D]`` is materialised in the forward pass.  Uses the compiled CPU kernels (float32,
    first-order gradients) when available, otherwise gathers and calls the eager expression.

    :param queries: float ``[M, D]``; ``entities``: float ``[U, D]``; indices: int64 ``[P]``.
    :param complex_layout: rows are ``[re | im]`` complex vectors (moduli summed) instead of real vectors.
    """
    kernel = (_kernels() is not None and queries.device.type == "cpu" and entities.device.type == "cpu"
              and queries.dtype == torch.float32 and entities.dtype == torch.float32)
    if kernel:
        return _GatheredL1.apply(queries, query_index, entities, entity_index, complex_layout)
    q = queries.index_select(0, query_index)
    e = entities.index_select(0, entity_index)
    if complex_layout:
        return complex_l1_distance(q, e)
    return (q - e).abs().sum(-1)


class _GatheredMixtureL1(torch.autograd.Function):
    """``out[p] = sum_k |Q[qi[p]] - sum_m beta[p, m] X[ei[p], m]|_k`` with the compiled kernels (CPU, float32);
    first-order gradients to ``Q``, ``X`` and ``beta`` (double backward raises)."""

    @staticmethod
    def forward(ctx, queries, query_index, mixtures, weights, entity_index, complex_layout: bool):
        q = queries.detach().contiguous()
        x = mixtures.detach().contiguous()
        order = _by_entity(entity_index)
        beta = weights.detach().index_select(0, order)
        qi = query_index.index_select(0, order)
        ei = entity_index.index_select(0, order)
        width = q.shape[1]
        d = width // 2 if complex_layout else width
        out = torch.empty(qi.shape[0], dtype=torch.float32)
        _kernels().mmkgc_gather_mix_l1(q.data_ptr(), qi.data_ptr(), x.data_ptr(), beta.data_ptr(), ei.data_ptr(),
                                       qi.shape[0], x.shape[1], d, int(complex_layout), out.data_ptr(),
                                       torch.get_num_threads())
        ctx.save_for_backward(q, qi, x, beta, ei, order)
        ctx.complex_layout = complex_layout
        return torch.empty_like(out).index_copy_(0, order, out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, qi, x, beta, ei, order = ctx.saved_tensors
        width = q.shape[1]
        d = width // 2 if ctx.complex_layout else width
        g = grad.to(torch.float32).index_select(0, order)
        grad_q = torch.zeros_like(q) if ctx.needs_input_grad[0] else None
        grad_x = torch.zeros_like(x) if ctx.needs_input_grad[2] else None
        grad_beta = torch.empty_like(beta)
        scratch = torch.empty(2 * width, dtype=torch.float32)
        _kernels().mmkgc_gather_mix_l1_grad(
            q.data_ptr(), qi.data_ptr(), x.data_ptr(), beta.data_ptr(), ei.data_ptr(), g.data_ptr(), qi.shape[0],
            x.shape[1], d, int(ctx.complex_layout), 0 if grad_q is None else grad_q.data_ptr(),
            0 if grad_x is None else grad_x.data_ptr(), grad_beta.data_ptr(), scratch.data_ptr())
        grad_beta = torch.empty_like(grad_beta).index_copy_(0, order, grad_beta) if ctx.needs_input_grad[3] else None
        return grad_q, None, grad_x, grad_beta, None, None


def gathered_mixture_l1_distance(queries: torch.Tensor, query_index: torch.Tensor, mixtures: torch.Tensor,
                                 weights: torch.Tensor, entity_index: torch.Tensor,
                                 complex_layout: bool) -> torch.Tensor:
    """``sum_k |queries[query_index[p]] - sum_m weights[p, m] mixtures[entity_index[p], m]|_k`` -> ``[P]``.

    :func:`gathered_l1_distance` for entity vectors that are per-occurrence mixtures of ``M`` component vectors
    (the relation-conditioned fusion of NativE / AFME, ``e = sum_m beta_m x_m``): only the components of each
    distinct entity (``[U, M, D]``) and the weights of each occurrence (``[P, M]``) are stored, never the ``[P, D]``
    fused vectors.  Compiled CPU kernels (float32, first-order gradients to all three float inputs) when available;
    otherwise (GPU, float64, ``MMKGC_NO_COMPILE=1``, no compiler) the same value from gathered PyTorch ops.

    :param queries: float ``[Mq, D]``; ``mixtures``: float ``[U, M, D]``; ``weights``: float ``[P, M]``;
        indices: int64 ``[P]``.
    :param complex_layout: rows are ``[re | im]`` complex vectors (moduli summed) instead of real vectors.
    :raises ValueError: inconsistent shapes.
    """
    if mixtures.ndim != 3 or weights.ndim != 2 or weights.shape != (entity_index.shape[0], mixtures.shape[1]):
        raise ValueError(f"gathered_mixture_l1_distance: mixtures [U, M, D] and weights [P, M] expected, got "
                         f"{tuple(mixtures.shape)}, {tuple(weights.shape)} for {entity_index.shape[0]} indices")
    kernel = (_kernels() is not None
              and all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (queries, mixtures, weights)))
    if kernel:
        return _GatheredMixtureL1.apply(queries, query_index, mixtures, weights, entity_index, complex_layout)
    q = queries.index_select(0, query_index)
    x = mixtures.index_select(0, entity_index)
    e = x[:, 0] * weights[:, :1]
    for m in range(1, x.shape[1]):
        e = e.addcmul(x[:, m], weights[:, m:m + 1])
    if complex_layout:
        return complex_l1_distance(q, e)
    return (q - e).abs().sum(-1)


def mixture_table_transposed(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out_t[d, n] = sum_m weights[n, m] x[n, m, d]``: the fused vectors of ``N`` entities, written directly in the
    transposed ``[D, N]`` layout that the all-entity kernels read (``out_t.t()`` is the ``[N, D]`` table, and
    :class:`_TransposeCache` then finds it already transposed: no copy).

    Compiled CPU kernel (float32, no autograd) when available, else ``(x * weights[..., None]).sum(1).t()`` made
    contiguous.

    :param x: float ``[N, M, D]`` components; ``weights``: float ``[N, M]``.
    :returns: contiguous ``[D, N]``.
    :raises ValueError: inconsistent shapes.
    """
    if x.ndim != 3 or weights.shape != x.shape[:2]:
        raise ValueError(f"mixture_table_transposed: x [N, M, D] and weights [N, M] expected, got {tuple(x.shape)} "
                         f"and {tuple(weights.shape)}")
    lib = _kernels() if _kernel_applicable(x, weights) else None
    if lib is None:
        return (x * weights.unsqueeze(-1)).sum(1).t().contiguous()
    xc, wc = x.detach().contiguous(), weights.detach().contiguous()
    n, m, d = xc.shape
    out = torch.empty(d, n, dtype=torch.float32)
    lib.mmkgc_mix_transposed(xc.data_ptr(), wc.data_ptr(), n, m, d, out.data_ptr(), torch.get_num_threads())
    return out


def mixture_columns(x_columns: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``out_t[d, n] = sum_m weights[n, m] x_columns[m, d, n]``: :func:`mixture_table_transposed` for components
    already in the transposed layout ``[M, D, N]`` (``x.permute(1, 2, 0)``), which a scoring session of NativE-style
    fusion makes once because the components do not depend on the relation.  One streaming pass per table instead
    of a transposing one (about 4x fewer CPU seconds per DB15K table); equal bit for bit to
    :func:`mixture_table_transposed` of the same components and weights (same products, summed over ``m`` in the same
    order; tested).

    Compiled CPU kernel (float32, no autograd) when available, else ``(x_columns * weights.t()[:, None]).sum(0)``.

    :param x_columns: float ``[M, D, N]``; ``weights``: float ``[N, M]``.
    :returns: contiguous ``[D, N]``.
    :raises ValueError: inconsistent shapes.
    """
    if x_columns.ndim != 3 or weights.shape != (x_columns.shape[2], x_columns.shape[0]):
        raise ValueError(f"mixture_columns: x_columns [M, D, N] and weights [N, M] expected, got "
                         f"{tuple(x_columns.shape)} and {tuple(weights.shape)}")
    w_t = weights.detach().t().contiguous()
    lib = _kernels() if _kernel_applicable(x_columns, weights) else None
    if lib is None:
        out = x_columns[0] * w_t[0]
        for m in range(1, x_columns.shape[0]):
            out = out + x_columns[m] * w_t[m]
        return out.contiguous()
    xc = x_columns.detach().contiguous()
    m, d, n = xc.shape
    out = torch.empty(d, n, dtype=torch.float32)
    lib.mmkgc_mix_columns(xc.data_ptr(), w_t.data_ptr(), n, m, d, out.data_ptr(), torch.get_num_threads())
    return out


def _sum_to_shape(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a broadcast gradient ``x`` back to ``shape``."""
    if x.shape == shape:
        return x
    lead = x.ndim - len(shape)
    x = x.sum(dim=tuple(range(lead))) if lead > 0 else x
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(dim=dims, keepdim=True) if dims else x


class _ComplexL1Distance(torch.autograd.Function):
    """``sum_k |q_k - e_k|`` over complex coordinates in ``[re | im]`` layout, broadcasting ``q`` and ``e``.

    One subtraction and one ``hypot`` forward; the backward writes the gradient of the difference in the
    ``[re | im]`` layout directly (no split/concatenate of the halves) and recomputes the difference from the
    saved inputs with differentiable ops when a double backward is requested (``create_graph=True``, e.g. gradient
    penalties), so that stays exact; a plain backward reuses the forward's difference and moduli.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        diff = (q - e).unflatten(-1, (2, -1))
        modulus = torch.hypot(diff[..., 0, :], diff[..., 1, :])
        ctx.save_for_backward(q, e, diff, modulus)
        return modulus.sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, e, diff, modulus = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: rebuild the graph from the inputs
            diff = (q - e).unflatten(-1, (2, -1))
            modulus = torch.hypot(diff[..., 0, :], diff[..., 1, :])
        # Zero subgradient at the origin: there the difference is 0, so any finite scale gives 0.
        scale = grad.unsqueeze(-1) / torch.where(modulus > 0, modulus, 1.0)
        g = (diff * scale.unsqueeze(-2)).flatten(-2)
        return _sum_to_shape(g, q.shape), _sum_to_shape(-g, e.shape)


def complex_l1_distance(q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``sum_k |q_k - e_k|`` for complex vectors in ``[re | im]`` layout: ``q [..., 2d], e [..., 2d] -> [...]``
    (broadcast), with the zero subgradient where ``q_k = e_k`` (as OpenKE's RotatE).

    :raises ValueError: if the last dimensions differ or are odd.
    """
    if q.shape[-1] != e.shape[-1] or q.shape[-1] % 2:
        raise ValueError(f"complex_l1_distance needs equal, even last dimensions, got {tuple(q.shape)} and "
                         f"{tuple(e.shape)}")
    return _ComplexL1Distance.apply(q, e)


def complex_modulus(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """Element-wise modulus ``sqrt(re^2 + im^2)`` of equally shaped tensors (broadcast first), differentiable
    with gradient 0 where the modulus is 0."""
    re, im = torch.broadcast_tensors(re, im)
    if torch.is_grad_enabled() and (re.requires_grad or im.requires_grad):
        return _ComplexModulus.apply(re, im)
    return torch.hypot(re, im)


def _eager_l1(q: torch.Tensor, x: torch.Tensor, bias: float, complex_layout: bool) -> torch.Tensor:
    """Chunked broadcast of ``bias - sum_k |q_k - x_k|``; temporaries bounded by :data:`EAGER_CHUNK_ELEMENTS`
    (CPU) or :data:`EAGER_CHUNK_ELEMENTS_ACCELERATOR` elements."""
    batch, width = q.shape
    budget = EAGER_CHUNK_ELEMENTS if q.device.type == "cpu" else EAGER_CHUNK_ELEMENTS_ACCELERATOR
    chunk = max(1, budget // max(1, batch * width))
    if complex_layout:
        q_re, q_im = q.chunk(2, dim=-1)
    parts = []
    for start in range(0, x.shape[0], chunk):
        xc = x[start:start + chunk]
        if complex_layout:
            x_re, x_im = xc.chunk(2, dim=-1)
            dist = complex_modulus(q_re[:, None, :] - x_re[None], q_im[:, None, :] - x_im[None]).sum(-1)
        else:
            dist = (q[:, None, :] - xc[None]).abs().sum(-1)
        parts.append(bias - dist)
    if not parts:
        return q.new_empty(batch, 0)
    return torch.cat(parts, dim=1)


def _output(q: torch.Tensor, x: torch.Tensor, out: torch.Tensor | None, out_rows: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``[R, N]`` matrix the all-entity kernels write into and the int64 row map (``None``: rows ``0..B-1`` of a
    new ``[B, N]``).

    :raises ValueError: ``out`` without ``out_rows`` (or the reverse), a non-contiguous float32 ``out`` of another
        width, ``out_rows`` of another length or outside ``[0, R)``.
    """
    if out is None and out_rows is None:
        return torch.empty(q.shape[0], x.shape[0], dtype=torch.float32), None
    if out is None or out_rows is None:
        raise ValueError("give both out and out_rows, or neither")
    if (out.ndim != 2 or out.shape[1] != x.shape[0] or out.dtype != torch.float32 or not out.is_contiguous()
            or out.device.type != "cpu"):
        raise ValueError(f"out must be a contiguous CPU float32 [R, {x.shape[0]}] tensor, got {tuple(out.shape)} "
                         f"{out.dtype} on {out.device}")
    rows = out_rows.to(dtype=torch.long).contiguous()
    if rows.shape != (q.shape[0],):
        raise ValueError(f"out_rows must have shape [{q.shape[0]}], got {tuple(rows.shape)}")
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= out.shape[0]):
        raise ValueError(f"out_rows must lie in [0, {out.shape[0]})")
    return out, rows


def _eager_into(scores: torch.Tensor, out: torch.Tensor | None, out_rows: torch.Tensor | None) -> torch.Tensor:
    """The eager path's ``[B, N]`` scores, or ``out`` with them copied into rows ``out_rows``."""
    if out is None and out_rows is None:
        return scores
    if out is None or out_rows is None:
        raise ValueError("give both out and out_rows, or neither")
    return out.index_copy_(0, out_rows.to(device=out.device, dtype=torch.long), scores.to(out.dtype))


def pairwise_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                         cache: _TransposeCache | None = None, out: torch.Tensor | None = None,
                         out_rows: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q[b, k] - x[n, k]|`` for all pairs.

    :param q: queries, float ``[B, D]``.
    :param x: candidates, float ``[N, D]`` (same dtype and device).
    :param bias: added to every score (a margin), float.
    :param cache: optional transposed-candidate cache (see module docstring).
    :param out, out_rows: write query ``b``'s scores into row ``out_rows[b]`` of ``out [R, N]`` (contiguous float32;
        the kernel writes there directly, no ``[B, N]`` copy) and return ``out``; both or neither.
    :returns: ``[B, N]`` in ``q.dtype`` (or ``out``).  Uses the compiled CPU kernel when applicable, else chunked
        eager.  A (query, candidate) score does not depend on the other queries of the batch.
    :raises ValueError: see :func:`_output`.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_into(_eager_l1(q, x, bias, complex_layout=False), out, out_rows)
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out, rows = _output(q, x, out, out_rows)
    lib.mmkgc_l1_dist(q_t.data_ptr(), x_t.data_ptr(), q.shape[0], x.shape[0], q.shape[1], float(bias),
                      out.data_ptr(), None if rows is None else rows.data_ptr(), torch.get_num_threads())
    return out


def pairwise_complex_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                                 cache: _TransposeCache | None = None, out: torch.Tensor | None = None,
                                 out_rows: torch.Tensor | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q_b,k - x_n,k|`` with complex vectors in ``[re | im]`` layout.

    :param q: queries, float ``[B, 2d]`` (real parts then imaginary parts).
    :param x: candidates, float ``[N, 2d]``.
    :param bias: added to every score (RotatE's margin gamma).
    :param out, out_rows: as :func:`pairwise_l1_distance` (scores written into rows ``out_rows`` of ``out``).
    :returns: ``[B, N]`` (or ``out``); the modulus of each complex difference is summed over the ``d`` coordinates.
        A (query, candidate) score does not depend on the other queries of the batch (every tile of the kernel runs
        the same instructions), so splitting or stacking query batches gives equal scores bit for bit.
    :raises ValueError: see :func:`_output`.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_into(_eager_l1(q, x, bias, complex_layout=True), out, out_rows)
    d = q.shape[1] // 2
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out, rows = _output(q, x, out, out_rows)
    lib.mmkgc_complex_l1_dist(q_t[:d].data_ptr(), q_t[d:].data_ptr(), x_t[:d].data_ptr(), x_t[d:].data_ptr(),
                              q.shape[0], x.shape[0], d, float(bias), out.data_ptr(),
                              None if rows is None else rows.data_ptr(), torch.get_num_threads())
    return out
