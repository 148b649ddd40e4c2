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
naive broadcast computes at about 10 s per 256 DB15K queries on two CPU cores; they run through
:mod:`mmkgc.nn.distances` (compiled CPU kernels with PyTorch fallbacks of equal value; ``MMKGC_NO_COMPILE=1`` forces
the PyTorch paths).  The distance functions are re-exported here under their old names.
"""

from __future__ import annotations

import abc
import inspect
import math
from typing import ClassVar, Literal

import torch
from class_resolver import ClassResolver
from torch import nn

from mmkgc.errors import ConfigError, UnknownNameError
from mmkgc.nn import distances
from mmkgc.nn.distances import (
    _TransposeCache,
    complex_l1_distance,
    complex_modulus,
    gathered_l1_distance,
    gathered_mixture_l1_distance,
    mixture_table_transposed,
    pairwise_complex_l1_distance,
    pairwise_l1_distance,
    scorer_kernel_available,
)

__all__ = [
    "ComplEx",
    "DistMult",
    "MLPLink",
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



# ====================================================================================== scorers
class Scorer(nn.Module, abc.ABC):
    """Base class of interaction functions over embeddings; higher scores mean more plausible triples.

    :param dim: the rank hyper-parameter ``d`` (for complex models, the number of complex coordinates).
    :raises ConfigError: if ``dim`` is not a positive integer.

    A new scorer needs only its score function: subclass, implement :meth:`_score_hrt` (``h [..., De],
    r [..., Dr], t [..., De] -> [...]``, broadcasting), and set :attr:`entity_dim` / :attr:`relation_dim` in
    ``__init__`` if they differ from ``dim``.  The base class derives 1-N scoring (:meth:`score_t`,
    :meth:`score_h`) by broadcasting :meth:`_score_hrt` over chunks of candidates (temporaries bounded by
    :data:`mmkgc.nn.distances.EAGER_CHUNK_ELEMENTS`), input validation and the registry entry: every public subclass defined in
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

    def match_all(self, queries: torch.Tensor, candidates: torch.Tensor, out: torch.Tensor | None = None,
                  out_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Every query vector against every candidate: ``queries [Q, De], candidates [N, De] -> [Q, N]`` with
        ``out[q, n] == match(queries[q], candidates[n])`` (queries from :meth:`tail_query` / :meth:`head_query`).

        With ``out [R, N]`` and ``out_rows`` int64 ``[Q]`` the scores of query ``q`` go into row ``out_rows[q]`` of
        ``out`` (the distance kernels write there directly), and ``out`` is returned.  The default broadcasts
        :meth:`match` over chunks of candidates; scorers with an all-entity kernel override it.
        """
        self._check_width(queries, self.entity_dim, "query vectors")
        self._check_width(candidates, self.entity_dim, "candidate embeddings")
        scores = self._broadcast_all(lambda c: self.match(queries[:, None], c[None]), queries.shape[0], candidates)
        if out is None:
            return scores
        return out.index_copy_(0, out_rows.to(device=out.device, dtype=torch.long), scores.to(out.dtype))

    @property
    def stacks_queries(self) -> bool:
        """Whether :meth:`match_all` of :meth:`tail_query` / :meth:`head_query` vectors equals :meth:`score_t` /
        :meth:`score_h` bit for bit whatever other queries share the call, so that a caller may score the queries
        of both sides in one call (the evaluation of relation-conditioned fusion does: one pass over each relation's
        table).  ``False`` unless a subclass says so (a matrix product's rounding may depend on the batch)."""
        return False

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
        ``[B, n, De]`` temporaries hold at most :data:`~mmkgc.nn.distances.EAGER_CHUNK_ELEMENTS` (CPU) or
        :data:`~mmkgc.nn.distances.EAGER_CHUNK_ELEMENTS_ACCELERATOR` elements."""
        accel = candidates.device.type != "cpu"
        budget = distances.EAGER_CHUNK_ELEMENTS_ACCELERATOR if accel else distances.EAGER_CHUNK_ELEMENTS
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

    def match_all(self, queries, candidates, out=None, out_rows=None):
        if self.p != 1:
            return super().match_all(queries, candidates, out, out_rows)
        self._check_width(queries, self.entity_dim, "query vectors")
        return pairwise_l1_distance(queries, self._norm(candidates), self._bias(),
                                    None if self.normalize else self._cache, out, out_rows)

    @property
    def stacks_queries(self) -> bool:
        """True for ``p = 1`` (the compiled L1 kernel, the same arithmetic as :meth:`score_t` in any batch)."""
        return self.p == 1

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

    def match_all(self, queries, candidates, out=None, out_rows=None):
        self._check_width(queries, self.entity_dim, "query vectors")
        return pairwise_complex_l1_distance(queries, candidates, self.margin, self._cache, out, out_rows)

    #: :meth:`match_all` is the kernel of :meth:`score_t` / :meth:`score_h`, whose scores do not depend on the batch
    stacks_queries = True

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


class MLPLink(Scorer):
    """VEMP's relation-agnostic link decoder as a scorer (Sela et al.; methods.md 2.4):
    ``score(h, r, t) = w_2ᵀ Dropout(ReLU(W_1 [h; t] + b_1)) + b_2`` (a logit; ``r`` is ignored), the
    :class:`~mmkgc.nn.gnn.MLPLinkPredictor` module.  Config name ``mlp_link`` (or ``mlplink``).

    :param dim: entity width ``De`` (the R-GCN output width; VEMP 128).
    :param hidden: hidden width (VEMP 128).
    :param dropout: dropout after the hidden ReLU (VEMP 0.3).

    The relation table the model builds for it has width 1 and gets no gradient.  The score does not factorise
    into a query and a match, so negatives are scored pointwise and all-entity scoring broadcasts over chunks of
    candidates.  Shapes as :meth:`Scorer.score_hrt`.
    """

    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.3):
        super().__init__(dim)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden <= 0:
            raise ConfigError(f"scorer 'mlplink': hidden must be a positive integer, got {hidden!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"scorer 'mlplink': dropout must be in [0, 1), got {dropout!r}")
        from mmkgc.nn.gnn import MLPLinkPredictor

        self.relation_dim = 1
        self.decoder = MLPLinkPredictor(dim, hidden, dropout)

    def _score_hrt(self, h, r, t):
        return self.decoder(h, t)


#: Every public :class:`Scorer` subclass of mmkgc by lower-cased class name (``transe``, ``distmult``, ``complex``,
#: ``rotate``, ``tucker``, ``mlplink`` = ``mlp_link``); default RotatE.  Add an outside scorer with
#: ``scorer_resolver.register(cls)``.
scorer_resolver: ClassResolver[Scorer] = ClassResolver.from_subclasses(
    Scorer, default=RotatE, location="mmkgc.nn.scorers.scorer_resolver"
)


def build_scorer(name: str, dim: int, **options) -> Scorer:
    """Create a registered scorer.

    :param name: a name in :data:`scorer_resolver` (case-insensitive, ``_`` ignored): ``transe``, ``distmult``,
        ``complex``, ``rotate``, ``tucker``, ``mlp_link``, or a registered one.
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
