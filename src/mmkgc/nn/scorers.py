"""Interaction functions ("scorers") of knowledge graph embedding models.

A scorer maps embeddings to plausibility scores; it owns no embedding table, because multimodal models
build entity vectors by fusing modalities.  The model creates tables of widths :attr:`Scorer.entity_dim`
and :attr:`Scorer.relation_dim` and lets the scorer initialise them (:meth:`Scorer.init_entity_`,
:meth:`Scorer.init_relation_`).

Three scoring modes, all **higher = more plausible** (distances are negated):

* :meth:`Scorer.score_hrt` -- ``h [..., De], r [..., Dr], t [..., De] -> [...]`` with broadcasting over the
  leading dimensions (positives ``[B]``; negatives ``[B, K]`` via ``h[:, None]`` etc.);
* :meth:`Scorer.score_t` -- every entity as tail: ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``;
* :meth:`Scorer.score_h` -- every entity as head: ``h_all [N, De], r [B, Dr], t [B, De] -> [B, N]``.

``score_t``/``score_h`` equal ``score_hrt`` for every candidate.  DistMult, ComplEx and TransE-L2 use one
matrix product.  TransE-L1 and RotatE need ``sum_k |q_k - x_k|`` for every (query, candidate) pair, which a
naive broadcast computes at about 10 s per 256 DB15K queries on two CPU cores; on CPU (float32, no autograd)
these use a small C kernel (entity-blocked, vectorised over candidates, OpenMP across blocks;
``mmkgc/nn/kernels/distances.c``) that is compiled once into the mmkgc cache directory
(:mod:`mmkgc.nn.kernels`) and loaded with :mod:`ctypes`.  Set the
environment variable ``MMKGC_NO_COMPILE=1`` to use the eager, chunked PyTorch path instead (also used on GPU,
for float64, when gradients are required, and -- after a one-time warning -- when no compiler works).
"""

from __future__ import annotations

import abc
import ctypes
import inspect
import math
import weakref
from typing import ClassVar, Literal

import torch
from class_resolver import ClassResolver
from torch import nn

from mmkgc.errors import ConfigError, UnknownNameError
from mmkgc.nn import kernels

__all__ = [
    "ComplEx",
    "DistMult",
    "RotatE",
    "Scorer",
    "TransE",
    "build_scorer",
    "complex_l1_distance",
    "complex_modulus",
    "gathered_l1_distance",
    "gathered_mixture_l1_distance",
    "mixture_table_transposed",
    "pairwise_complex_l1_distance",
    "pairwise_l1_distance",
    "scorer_kernel_available",
    "scorer_resolver",
]

Side = Literal["head", "tail"]

#: Elements of one ``[B, chunk, d]`` temporary in the eager chunked path on CPU (2**24 floats = 64 MiB) and
#: on accelerators (2**26 floats = 256 MiB).
EAGER_CHUNK_ELEMENTS = 1 << 24
EAGER_CHUNK_ELEMENTS_ACCELERATOR = 1 << 26


# ====================================================================================== compiled kernels
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


def pairwise_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                         cache: _TransposeCache | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q[b, k] - x[n, k]|`` for all pairs.

    :param q: queries, float ``[B, D]``.
    :param x: candidates, float ``[N, D]`` (same dtype and device).
    :param bias: added to every score (a margin), float.
    :param cache: optional transposed-candidate cache (see module docstring).
    :returns: ``[B, N]`` in ``q.dtype``.  Uses the compiled CPU kernel when applicable, else chunked eager.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_l1(q, x, bias, complex_layout=False)
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out = torch.empty(q.shape[0], x.shape[0], dtype=torch.float32)
    lib.mmkgc_l1_dist(q_t.data_ptr(), x_t.data_ptr(), q.shape[0], x.shape[0], q.shape[1], float(bias),
                      out.data_ptr(), torch.get_num_threads())
    return out


def pairwise_complex_l1_distance(q: torch.Tensor, x: torch.Tensor, bias: float = 0.0,
                                 cache: _TransposeCache | None = None) -> torch.Tensor:
    """``out[b, n] = bias - sum_k |q_b,k - x_n,k|`` with complex vectors in ``[re | im]`` layout.

    :param q: queries, float ``[B, 2d]`` (real parts then imaginary parts).
    :param x: candidates, float ``[N, 2d]``.
    :param bias: added to every score (RotatE's margin gamma).
    :returns: ``[B, N]``; the modulus of each complex difference is summed over the ``d`` coordinates.
    """
    lib = _kernels() if _kernel_applicable(q, x) else None
    if lib is None:
        return _eager_l1(q, x, bias, complex_layout=True)
    d = q.shape[1] // 2
    q_t = q.detach().t().contiguous()
    x_t = cache.get(x) if cache is not None else x.detach().t().contiguous()
    out = torch.empty(q.shape[0], x.shape[0], dtype=torch.float32)
    lib.mmkgc_complex_l1_dist(q_t[:d].data_ptr(), q_t[d:].data_ptr(), x_t[:d].data_ptr(), x_t[d:].data_ptr(),
                              q.shape[0], x.shape[0], d, float(bias), out.data_ptr(), torch.get_num_threads())
    return out


# ====================================================================================== scorers
class Scorer(nn.Module, abc.ABC):
    """Base class of interaction functions over embeddings; higher scores mean more plausible triples.

    :param dim: the rank hyper-parameter ``d`` (for complex models, the number of complex coordinates).
    :raises ConfigError: if ``dim`` is not a positive integer.

    A new scorer needs only its score function: subclass, implement :meth:`_score_hrt` (``h [..., De],
    r [..., Dr], t [..., De] -> [...]``, broadcasting), and set :attr:`entity_dim` / :attr:`relation_dim` in
    ``__init__`` if they differ from ``dim``.  The base class derives 1-N scoring (:meth:`score_t`,
    :meth:`score_h`) by broadcasting :meth:`_score_hrt` over chunks of candidates (temporaries bounded by
    :data:`EAGER_CHUNK_ELEMENTS`), input validation and the registry entry: every public subclass defined in
    ``mmkgc`` is in :data:`scorer_resolver` under its lower-cased class name; one defined elsewhere is added with
    ``scorer_resolver.register(cls)``.  Overriding :meth:`_score_t` / :meth:`_score_h` (one matrix product, a kernel)
    and the query factorisation (:meth:`tail_query`, :meth:`head_query`, :meth:`match`) is optional, for speed.
    """

    #: Whether the scorer scores all heads natively (otherwise the model uses reciprocal relations).
    supports_head_mode: ClassVar[bool] = True

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            name = type(self).__name__.lower()  # its name in scorer_resolver
            raise ConfigError(f"scorer {name!r}: dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.entity_dim = dim
        self.relation_dim = dim

    # ---------------------------------------------------------------- initialisation
    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Initialise an entity table ``[N, entity_dim]`` in place (default: Xavier uniform, as OpenKE)."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.xavier_uniform_(weight)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Initialise a relation table ``[R, relation_dim]`` in place (default: Xavier uniform, as OpenKE)."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.xavier_uniform_(weight)

    # ---------------------------------------------------------------- scoring
    def forward(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`score_hrt`."""
        return self.score_hrt(h, r, t)

    def score_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Scores of individual triples: ``h [..., De], r [..., Dr], t [..., De] -> [...]`` (broadcast)."""
        self._check_hrt(h, r, t)
        return self._score_hrt(h, r, t)

    def score_t(self, h: torch.Tensor, r: torch.Tensor, t_all: torch.Tensor) -> torch.Tensor:
        """Every candidate as tail: ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``;
        ``out[b, n] == score_hrt(h[b], r[b], t_all[n])``."""
        self._check_all(h, r, t_all, "h", "t_all")
        return self._score_t(h, r, t_all)

    def score_h(self, h_all: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Every candidate as head: ``h_all [N, De], r [B, Dr], t [B, De] -> [B, N]``;
        ``out[b, n] == score_hrt(h_all[n], r[b], t[b])``."""
        self._check_all(t, r, h_all, "t", "h_all")
        return self._score_h(h_all, r, t)

    # ---------------------------------------------------------------- query factorisation
    def tail_query(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The query vector of ``(h, r, ?)``: ``h [..., De], r [..., Dr] -> q [..., De]`` such that
        ``score_hrt(h, r, t) == match(q, t)``.  Every built-in scorer factorises this way; training uses it to
        score ``K`` corrupted tails of a positive without repeating the ``(h, r)`` part ``K`` times."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def head_query(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The query vector of ``(?, r, t)``: ``q [..., De]`` with ``score_hrt(h, r, t) == match(q, h)``."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def match(self, q: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Score of query vectors against candidate entity vectors: ``q [..., De], e [..., De] -> [...]``."""
        raise TypeError(f"{type(self).__name__} does not factorise into query and match")

    def match_gathered(self, queries: torch.Tensor, query_index: torch.Tensor, entities: torch.Tensor,
                       entity_index: torch.Tensor) -> torch.Tensor:
        """``match(queries[query_index], entities[entity_index]) -> [P]`` for query and entity tables
        ``[M, De]``, ``[U, De]`` and int64 indices ``[P]``; distance scorers override it with a fused kernel."""
        return self.match(queries.index_select(0, query_index), entities.index_select(0, entity_index))

    def match_gathered_mixture(self, queries: torch.Tensor, query_index: torch.Tensor, mixtures: torch.Tensor,
                               weights: torch.Tensor, entity_index: torch.Tensor) -> torch.Tensor:
        """``match(queries[query_index], e) -> [P]`` with ``e[p] = sum_m weights[p, m] mixtures[entity_index[p], m]``
        (``mixtures [U, M, De]``, ``weights [P, M]``): scoring the negatives of a relation-conditioned fusion.
        Distance scorers override it with a kernel that never materialises ``e``."""
        x = mixtures.index_select(0, entity_index)
        e = (weights.unsqueeze(-1).to(x.dtype) * x).sum(-2)
        return self.match(queries.index_select(0, query_index), e)

    @property
    def factorises(self) -> bool:
        """Whether :meth:`tail_query` / :meth:`head_query` / :meth:`match` are implemented."""
        return type(self).match is not Scorer.match

    def score_all(self, known: torch.Tensor, r: torch.Tensor, candidates: torch.Tensor, side: Side) -> torch.Tensor:
        """``score_t(known, r, candidates)`` if ``side == "tail"``, ``score_h(candidates, r, known)`` if
        ``side == "head"``; ``[B, N]``.

        :raises ValueError: for another ``side``.
        """
        if side == "tail":
            return self.score_t(known, r, candidates)
        if side == "head":
            return self.score_h(candidates, r, known)
        raise ValueError(f"side must be 'head' or 'tail', got {side!r}")

    # ---------------------------------------------------------------- validation
    def _check_width(self, x: torch.Tensor, width: int, what: str) -> None:
        if x.ndim == 0 or x.shape[-1] != width:
            raise ValueError(
                f"{type(self).__name__}: {what} must have last dimension {width}, got shape {tuple(x.shape)}"
            )

    def _check_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> None:
        self._check_width(h, self.entity_dim, "head embeddings h")
        self._check_width(r, self.relation_dim, "relation embeddings r")
        self._check_width(t, self.entity_dim, "tail embeddings t")

    def _check_all(self, e: torch.Tensor, r: torch.Tensor, cand: torch.Tensor, e_name: str, c_name: str) -> None:
        self._check_width(e, self.entity_dim, f"{e_name}")
        self._check_width(r, self.relation_dim, "relation embeddings r")
        self._check_width(cand, self.entity_dim, f"candidate embeddings {c_name}")
        if e.ndim != 2 or r.ndim != 2 or cand.ndim != 2 or e.shape[0] != r.shape[0]:
            raise ValueError(
                f"{type(self).__name__}: expected {e_name} [B, {self.entity_dim}], r [B, {self.relation_dim}], "
                f"{c_name} [N, {self.entity_dim}]; got {tuple(e.shape)}, {tuple(r.shape)}, {tuple(cand.shape)}"
            )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, entity_dim={self.entity_dim}, relation_dim={self.relation_dim}"

    # ---------------------------------------------------------------- what subclasses implement
    @abc.abstractmethod
    def _score_hrt(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_hrt`: ``h [..., De], r [..., Dr], t [..., De] -> [...]`` with broadcasting."""

    def _score_t(self, h: torch.Tensor, r: torch.Tensor, t_all: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_t` (default: :meth:`_score_hrt` broadcast over chunks of candidates)."""
        return self._broadcast_all(lambda c: self._score_hrt(h[:, None], r[:, None], c[None]), h.shape[0], t_all)

    def _score_h(self, h_all: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Validated :meth:`score_h` (default: :meth:`_score_hrt` broadcast over chunks of candidates)."""
        return self._broadcast_all(lambda c: self._score_hrt(c[None], r[:, None], t[:, None]), t.shape[0], h_all)

    @staticmethod
    def _broadcast_all(score, batch: int, candidates: torch.Tensor) -> torch.Tensor:
        """``score(chunk) [B, n]`` over chunks of ``candidates [N, De]`` concatenated to ``[B, N]``; a chunk's
        ``[B, n, De]`` temporaries hold at most :data:`EAGER_CHUNK_ELEMENTS` (CPU) or
        :data:`EAGER_CHUNK_ELEMENTS_ACCELERATOR` elements."""
        accel = candidates.device.type != "cpu"
        budget = EAGER_CHUNK_ELEMENTS_ACCELERATOR if accel else EAGER_CHUNK_ELEMENTS
        chunk = max(1, budget // max(1, batch * candidates.shape[-1]))
        parts = [score(candidates[s:s + chunk]) for s in range(0, candidates.shape[0], chunk)]
        if not parts:
            return candidates.new_empty(batch, 0)
        return torch.cat(parts, dim=1)


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary halves of a ``[..., 2d]`` tensor in ``[re | im]`` layout."""
    return x.chunk(2, dim=-1)


class TransE(Scorer):
    """TransE (Bordes et al., 2013, "Translating Embeddings for Modeling Multi-relational Data").

    ``f(h, r, t) = margin - ||h + r - t||_p`` (``margin`` omitted -> ``-||h + r - t||_p``), entity and
    relation vectors in ``R^d``.  With ``normalize=True`` h, r and t are first scaled to unit L2 norm (OpenKE
    ``norm_flag``).  All-entity scoring: ``p = 1`` uses the compiled L1 kernel on CPU; ``p = 2`` uses the
    expansion ``||q||^2 + ||x||^2 - 2 <q, x>`` (one GEMM, clamped at 0 before the square root; the float32
    cancellation error is ``~1e-7 ||q||^2`` absolute).

    :param dim: ``d``.
    :param p: norm order, 1 or 2.
    :param margin: optional constant added to every score (OpenKE ``margin_flag``), float.
    :param normalize: L2-normalise h, r, t before scoring.
    :raises ConfigError: for ``p`` not in {1, 2}.
    """

    def __init__(self, dim: int, p: int = 1, margin: float | None = None, normalize: bool = False):
        super().__init__(dim)
        if p not in (1, 2):
            raise ConfigError(f"scorer 'transe': p must be 1 or 2, got {p!r}")
        self.p = int(p)
        self.margin = None if margin is None else float(margin)
        self.normalize = bool(normalize)
        self._cache = _TransposeCache()

    def _bias(self) -> float:
        return 0.0 if self.margin is None else self.margin

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, p=2.0, dim=-1) if self.normalize else x

    def _score_hrt(self, h, r, t):
        dist = torch.linalg.vector_norm(self._norm(h) + self._norm(r) - self._norm(t), ord=self.p, dim=-1)
        return self._bias() - dist

    def _all(self, q: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        cand = self._norm(cand)
        if self.p == 1:
            return pairwise_l1_distance(q, cand, self._bias(), cache=None if self.normalize else self._cache)
        sq = (q * q).sum(-1, keepdim=True) + (cand * cand).sum(-1)[None, :] - 2.0 * (q @ cand.t())
        return self._bias() - sq.clamp_min(0.0).sqrt()

    def tail_query(self, h, r):
        return self._norm(h) + self._norm(r)

    def head_query(self, r, t):
        # |h + r - t| = |h - (t - r)| coordinate-wise.
        return self._norm(t) - self._norm(r)

    def match(self, q, e):
        return self._bias() - torch.linalg.vector_norm(q - self._norm(e), ord=self.p, dim=-1)

    def match_gathered(self, queries, query_index, entities, entity_index):
        if self.p == 1:
            return self._bias() - gathered_l1_distance(queries, query_index, self._norm(entities), entity_index,
                                                       False)
        return super().match_gathered(queries, query_index, entities, entity_index)

    def match_gathered_mixture(self, queries, query_index, mixtures, weights, entity_index):
        if self.p == 1 and not self.normalize:
            return self._bias() - gathered_mixture_l1_distance(queries, query_index, mixtures, weights,
                                                               entity_index, False)
        return super().match_gathered_mixture(queries, query_index, mixtures, weights, entity_index)

    def _score_t(self, h, r, t_all):
        return self._all(self.tail_query(h, r), t_all)

    def _score_h(self, h_all, r, t):
        return self._all(self.head_query(r, t), h_all)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", p={self.p}, margin={self.margin}, normalize={self.normalize}"


class _DotProductScorer(Scorer):
    """Scorers whose score is a real dot product of a query vector with the candidate: ``match(q, e) = <q, e>``
    (DistMult; ComplEx, where ``Re(sum q conj(e))`` is the dot product of the ``[re | im]`` vectors), so
    all-entity scoring is one matrix product per side."""

    def match(self, q, e):
        return (q * e).sum(-1)

    def _score_t(self, h, r, t_all):
        return self.tail_query(h, r) @ t_all.t()

    def _score_h(self, h_all, r, t):
        return self.head_query(r, t) @ h_all.t()


class DistMult(_DotProductScorer):
    """DistMult (Yang et al., 2015, "Embedding Entities and Relations for Learning and Inference in KBs").

    ``f(h, r, t) = sum_k h_k r_k t_k`` with h, r, t in ``R^d``; all-entity scoring is one matrix product.
    """

    def _score_hrt(self, h, r, t):
        return (h * r * t).sum(-1)

    def tail_query(self, h, r):
        return h * r

    def head_query(self, r, t):
        return r * t



class ComplEx(_DotProductScorer):
    """ComplEx (Trouillon et al., 2016, "Complex Embeddings for Simple Link Prediction").

    ``f(h, r, t) = Re(sum_k h_k r_k conj(t_k))`` with h, r, t in ``C^d``, stored as ``[re | im]`` float
    vectors of width ``2d`` (``entity_dim = relation_dim = 2 * dim``).  All-entity scoring is one matrix
    product per side.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.entity_dim = 2 * dim
        self.relation_dim = 2 * dim

    def _score_hrt(self, h, r, t):
        h_re, h_im = _halves(h)
        r_re, r_im = _halves(r)
        t_re, t_im = _halves(t)
        return (h_re * r_re * t_re + h_im * r_re * t_im + h_re * r_im * t_im - h_im * r_im * t_re).sum(-1)

    def tail_query(self, h, r):
        h_re, h_im = _halves(h)
        r_re, r_im = _halves(r)
        return torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)  # h * r

    def head_query(self, r, t):
        r_re, r_im = _halves(r)
        t_re, t_im = _halves(t)
        return torch.cat([r_re * t_re + r_im * t_im, r_re * t_im - r_im * t_re], dim=-1)  # r * conj(t), conjugated



class RotatE(Scorer):
    """RotatE (Sun et al., 2019, "RotatE: Knowledge Graph Embedding by Relational Rotation in Complex
    Space"), with OpenKE's parameterisation as used by AdaMF-MAT and NativE.

    Entities are ``d`` complex numbers stored as ``[re | im]`` (``entity_dim = 2d``); a relation is ``d``
    phases stored unscaled (``relation_dim = d``) and mapped to angles ``theta = r / (((gamma + eps) / d) / pi)``.
    ``f(h, r, t) = gamma - sum_k |h_k e^{i theta_k} - t_k|``; head mode computes
    ``|conj(e^{i theta_k}) t_k - h_k|``, which has the same value.  Initialisation (OpenKE): entities uniform in
    ``+-(gamma + eps) / (2d)``, relations uniform in ``+-(gamma + eps) / d``.

    :param dim: ``d`` (complex coordinates).
    :param margin: ``gamma`` (OpenKE default 6.0; AdaMF-MAT/NativE DB15K use 12.0).
    :param epsilon: ``eps`` (OpenKE 2.0).
    """

    def __init__(self, dim: int, margin: float = 6.0, epsilon: float = 2.0):
        super().__init__(dim)
        self.margin = float(margin)
        self.epsilon = float(epsilon)
        self.entity_dim = 2 * dim
        self.relation_dim = dim
        self.entity_range = (self.margin + self.epsilon) / self.entity_dim
        self.relation_range = (self.margin + self.epsilon) / self.relation_dim
        self._cache = _TransposeCache()

    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Uniform in ``+-(gamma + eps) / (2d)`` (OpenKE ``ent_embedding_range``)."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.uniform_(weight, -self.entity_range, self.entity_range)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Uniform in ``+-(gamma + eps) / d`` (OpenKE ``rel_embedding_range``)."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.uniform_(weight, -self.relation_range, self.relation_range)

    def rotation(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos theta, sin theta)`` of relation embeddings ``r [..., d]``, each ``[..., d]``."""
        phase = r / (self.relation_range / math.pi)
        return torch.cos(phase), torch.sin(phase)

    def _rotate(self, h: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, s = self.rotation(r)
        h_re, h_im = _halves(h)
        return h_re * c - h_im * s, h_re * s + h_im * c

    def _score_hrt(self, h, r, t):
        rot_re, rot_im = self._rotate(h, r)
        t_re, t_im = _halves(t)
        # Zero subgradient where the difference vanishes, as OpenKE's stack + norm over the re/im axis.
        return self.margin - complex_modulus(rot_re - t_re, rot_im - t_im).sum(-1)

    def tail_query(self, h, r):
        return torch.cat(self._rotate(h, r), -1)  # h * e^{i theta}

    def head_query(self, r, t):
        c, s = self.rotation(r)
        t_re, t_im = _halves(t)
        return torch.cat([t_re * c + t_im * s, t_im * c - t_re * s], -1)  # conj(e^{i theta}) * t

    def match(self, q, e):
        return self.margin - complex_l1_distance(q, e)

    def match_gathered(self, queries, query_index, entities, entity_index):
        return self.margin - gathered_l1_distance(queries, query_index, entities, entity_index, True)

    def match_gathered_mixture(self, queries, query_index, mixtures, weights, entity_index):
        return self.margin - gathered_mixture_l1_distance(queries, query_index, mixtures, weights, entity_index, True)

    def _score_t(self, h, r, t_all):
        return pairwise_complex_l1_distance(self.tail_query(h, r), t_all, self.margin, self._cache)

    def _score_h(self, h_all, r, t):
        return pairwise_complex_l1_distance(self.head_query(r, t), h_all, self.margin, self._cache)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", margin={self.margin}, epsilon={self.epsilon}"


class TuckER(Scorer):
    """TuckER (Balažević et al., EMNLP 2019) with batch norms and dropouts in the order of the IMVIA / MoMoK / IMF
    decoders (methods.md section 4.2)::

        x = Dropout_in(BN_0(h))                       # [..., De]
        W_r = Dropout_hid1(reshape(r W, [De, De]))     # core W [Dr, De, De] contracted with r
        q = Dropout_hid2(BN_1(x W_r))                  # tail query [..., De]
        score(h, r, t) = q . t                         # a logit; IMVIA applies a sigmoid for probabilities

    :param dim: entity width ``De``.
    :param relation_dim: relation width ``Dr`` (default ``dim``); the core has ``Dr * De * De`` parameters
        (16.8M for 256/256).
    :param input_dropout, hidden_dropout1, hidden_dropout2: the published 0.3 / 0.4 / 0.5.
    :param batch_norm: use ``BN_0`` and ``BN_1`` (published: yes).

    Batch norm and dropout make the score depend on the batch in training mode, so scores are pointwise
    functions of ``(h, r, t)`` only in eval mode.  The scorer is meant for 1-N training with reciprocal relations
    (head queries are ``(t, r + R, ?)``): :meth:`score_h` (all heads natively) is exact in eval mode through the
    factorisation ``score = a_0 (.) h . W_r (a_1 (.) t) + c_0 . W_r (a_1 (.) t) + c_1 . t`` of the two eval-mode
    batch norms ``BN(z) = a (.) z + c``, and raises in training mode.

    Shapes: ``score_hrt``: ``h [..., De], r [..., Dr], t [..., De] -> [...]``; ``score_t``:
    ``h [B, De], r [B, Dr], t_all [N, De] -> [B, N]``.
    """

    supports_head_mode = False

    def __init__(self, dim: int, relation_dim: int | None = None, input_dropout: float = 0.3,
                 hidden_dropout1: float = 0.4, hidden_dropout2: float = 0.5, batch_norm: bool = True):
        super().__init__(dim)
        rdim = dim if relation_dim is None else relation_dim
        if isinstance(rdim, bool) or not isinstance(rdim, int) or rdim <= 0:
            raise ConfigError(f"scorer 'tucker': relation_dim must be a positive integer, got {relation_dim!r}")
        for key, p in (("input_dropout", input_dropout), ("hidden_dropout1", hidden_dropout1),
                       ("hidden_dropout2", hidden_dropout2)):
            if not 0.0 <= float(p) < 1.0:
                raise ConfigError(f"scorer 'tucker': {key} must be in [0, 1), got {p!r}")
        self.relation_dim = rdim
        self.core = nn.Parameter(torch.empty(rdim, dim, dim))
        nn.init.xavier_uniform_(self.core)  # as the published decoders (fan computed on [Dr, De, De])
        self.input_dropout = nn.Dropout(input_dropout)
        self.hidden_dropout1 = nn.Dropout(hidden_dropout1)
        self.hidden_dropout2 = nn.Dropout(hidden_dropout2)
        self.bn0 = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.bn1 = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()

    def init_entity_(self, weight: torch.Tensor) -> torch.Tensor:
        """Xavier normal, as the published TuckER/IMVIA tables."""
        self._check_width(weight, self.entity_dim, "entity table")
        with torch.no_grad():
            return nn.init.xavier_normal_(weight)

    def init_relation_(self, weight: torch.Tensor) -> torch.Tensor:
        """Xavier normal, as the published TuckER/IMVIA tables."""
        self._check_width(weight, self.relation_dim, "relation table")
        with torch.no_grad():
            return nn.init.xavier_normal_(weight)

    def _rows(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Apply a batch norm to ``x [..., D]``: over the flattened leading dimensions in training mode, as the
        per-coordinate affine map of its running statistics in eval mode (any dtype)."""
        if isinstance(module, nn.Identity):
            return x
        if not self.training:
            a, c = self._affine(module, self.dim, x)
            return x * a + c
        return module(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def tail_query_vectors(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The query ``q [..., De]`` of ``(h, r, ?)`` (``h`` and ``r`` broadcast); ``score = q . t``."""
        shape = torch.broadcast_shapes(h.shape[:-1], r.shape[:-1])
        h = h.expand(*shape, h.shape[-1])
        r = r.expand(*shape, r.shape[-1])
        x = self.input_dropout(self._rows(self.bn0, h))
        w = (r @ self.core.reshape(self.relation_dim, -1).to(r.dtype)).reshape(*shape, self.dim, self.dim)
        w = self.hidden_dropout1(w)
        z = (x.unsqueeze(-2) @ w).squeeze(-2)
        return self.hidden_dropout2(self._rows(self.bn1, z))

    def _score_hrt(self, h, r, t):
        return (self.tail_query_vectors(h, r) * t).sum(-1)

    def _score_t(self, h, r, t_all):
        return self.tail_query_vectors(h, r) @ t_all.T

    @staticmethod
    def _affine(bn: nn.Module, dim: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, c)`` with ``bn(z) == a * z + c`` for an eval-mode batch norm (or the identity)."""
        if isinstance(bn, nn.Identity):
            return torch.ones(dim, dtype=like.dtype, device=like.device), torch.zeros(dim, dtype=like.dtype,
                                                                                        device=like.device)
        inv = torch.rsqrt(bn.running_var.to(like.dtype) + bn.eps)
        a = bn.weight.to(like.dtype) * inv
        return a, bn.bias.to(like.dtype) - bn.running_mean.to(like.dtype) * a

    def _score_h(self, h_all, r, t):
        if self.training:
            raise ValueError("TuckER scores all candidate heads only in eval mode (batch norm uses batch statistics "
                             "in training); train with reciprocal relations (model.reciprocal: true)")
        a0, c0 = self._affine(self.bn0, self.dim, t)
        a1, c1 = self._affine(self.bn1, self.dim, t)
        w = (r @ self.core.reshape(self.relation_dim, -1).to(t.dtype)).reshape(-1, self.dim, self.dim)
        v = (w @ (a1 * t).unsqueeze(-1)).squeeze(-1)  # W_r (a_1 * t): [B, De]
        bias = v @ c0 + t @ c1  # [B]
        return (v * a0) @ h_all.T + bias.unsqueeze(-1)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", batch_norm={not isinstance(self.bn0, nn.Identity)}"


#: Every public :class:`Scorer` subclass of mmkgc by lower-cased class name (``transe``, ``distmult``, ``complex``,
#: ``rotate``, ``tucker``); default RotatE.  Add an outside scorer with ``scorer_resolver.register(cls)``.
scorer_resolver: ClassResolver[Scorer] = ClassResolver.from_subclasses(
    Scorer, default=RotatE, location="mmkgc.nn.scorers.scorer_resolver"
)


def build_scorer(name: str, dim: int, **options) -> Scorer:
    """Create a registered scorer.

    :param name: a name in :data:`scorer_resolver` (case-insensitive): ``transe``, ``distmult``, ``complex``,
        ``rotate``, ``tucker``, or a registered one.
    :param dim: the rank ``d``.
    :param options: constructor options of that scorer (e.g. ``margin``, ``epsilon`` for RotatE).
    :raises UnknownNameError: for an unknown scorer name.
    :raises ConfigError: for an option the scorer does not accept or an invalid value.
    """
    key = str(name).lower()
    try:
        cls = scorer_resolver.lookup(key)
    except (KeyError, ValueError):
        known = ", ".join(sorted(scorer_resolver.lookup_dict))
        raise UnknownNameError(f"unknown scorer {name!r}; known scorers: {known}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dim")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"scorer {key!r}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted) or 'none'}"
        )
    return cls(dim, **options)
