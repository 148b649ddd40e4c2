"""Modality-driven structural rows for entities without training triples (``model.unseen.mode: modality``).

An entity that never occurs in a training triple keeps an untrained structural embedding, so a multimodal model
ranks it with noise in the structural slot however informative its text or image is.  This module replaces the
structural row of such entities by a *substitute* computed from the entity's modalities alone::

    s~_e = g([a_1(e); ...; a_M(e)])        (a_m: the representation's adapted modality vectors [D], absent = fill)

with ``g`` a one-hidden-layer ReLU MLP (default) or a linear map, whose last layer is zero-initialised (a substitute
starts as the zero vector: "no structural information"), and trains ``g`` in two ways, both
on a per-step random sample of the *seen* entities that have at least one modality (share ``share``):

* **structure dropout** (``dropout: true``): the sampled entities' structural rows are replaced by their substitute
  in the training forward pass, so the KGC loss trains the projection *and* teaches the fusion / scorer to work
  with a structural slot computed from modalities (gradients reach the adapters and the fusion too);
* **alignment** (``align_weight > 0``): the relative squared error
  ``Σ_e ||g(a(e)) - s_e||² / Σ_e ||s_e||²`` over the sample, with ``a(e)`` and ``s_e`` detached, added to the
  loss with that weight; it trains only the projection (a regression into the structural space), so on its own it
  leaves the training of every other parameter unchanged.

Entities without training triples that have a modality use their substitute always -- in training (where they only
occur as negatives), evaluation and prediction; entities without any modality keep their structural row.

Everything goes through one place, :class:`ModalityStructure`, which takes the place of the representation's
``structure`` table (:class:`~mmkgc.models.kge.EmbeddingRepresentation`; the same ``embedding`` parameter, so
state-dict keys and the initial rows are those of the model without the option).  Both multimodal representations
read their structural rows only through ``self.structure(ids)``: the concat path (including its folded form) of
:class:`~mmkgc.models.kge.MultimodalRepresentation` and the attention fusions of
:class:`~mmkgc.models.fused.FusedRepresentation` (AdaMF, NativE, AFME's gate and completer included).

Determinism: the sample of a training forward pass is drawn from a generator seeded by ``(seed, draw counter)``;
the counter is a persistent buffer (checkpointed), so a resumed run draws the same samples, and the draws use no
global random state.  The set of seen entities is a persistent buffer too: a reloaded model substitutes the same
entities as the trained one.

This is the inductive setting of DKRL (Xie et al., AAAI 2016) and IKRL (Xie et al., IJCAI 2017), where an entity's
description or image encoder stands in for its structural embedding; the dropout form follows the "modality
dropout" idea of training a network to work with a missing input.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mmkgc.models.kge import EmbeddingRepresentation, EntityRepresentation

__all__ = ["ModalityStructure", "attach_modality_structure", "modality_structures", "pop_auxiliary_losses",
           "sparsest_cut", "training_degree"]


#: alignment values kept between two :meth:`ModalityStructure.pop_losses` calls (a trainer step makes one or two)
_MAX_PENDING = 16


def _draw_seed(seed: int, draw: int) -> int:
    """A 63-bit generator seed for draw ``draw`` of a run seeded ``seed`` (numpy's SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(draw), 0x5EE4]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class ModalityStructure(EntityRepresentation):
    """The structural table of a multimodal representation with modality substitutes (see the module docstring).

    :param base: the representation's structural table (its ``embedding`` is reused: same parameter, same rows).
    :param inputs: the representation's modality inputs (:class:`~mmkgc.models.kge.ModalityInput`, each
        ``forward(ids) -> ([B, D], present [B])``); referenced, not owned (their parameters stay where they are).
    :param seen: bool ``[N]``, entities with at least one training triple.
    :param share: share of the seen entities with a modality drawn per training forward pass, in ``[0, 1)``.
    :param dropout: replace the sampled entities' rows by their substitutes in training (structure dropout).
    :param align_weight: weight of the alignment term on the sample (0: none).
    :param seed: seed of the sample draws.
    :param projection: ``mlp`` (``W_2 relu(W_1 a + b_1) + b_2``, hidden width ``D``; the first layer keeps
        PyTorch's default initialisation, drawn from a forked random stream) or ``linear`` (``W a + b``).
    :param degree: int ``[N]``, training triples per entity (:func:`training_degree`); needed for ``sparsest < 1``.
    :param sparsest: draw only among the sparsest share of the seen entities with a modality: those whose
        ``degree`` is at most the cut :func:`sparsest_cut` (``1``: all of them).  The entities a model must
        represent from modalities alone are, like those without training triples, mostly sparse ones; and a sparse
        entity's structural row carries little of the signal the other queries are ranked with, so leaving it out
        of a step costs them less than leaving out a frequent one.

    Shapes: ``forward(ids [B] | None) -> [B, D]`` (``None``: all ``N`` rows); :meth:`substitute` ``[S] -> [S, D]``.
    :raises ValueError: ``seen`` or ``degree`` of the wrong length, a share outside ``[0, 1)``, ``sparsest``
        outside ``(0, 1]`` or below 1 without ``degree``, a negative ``align_weight``, or neither dropout nor
        alignment (nothing would train the projection).
    """

    def __init__(self, base: EmbeddingRepresentation, inputs: nn.ModuleList, seen: torch.Tensor, share: float = 0.15,
                 dropout: bool = True, align_weight: float = 0.0, seed: int = 0, projection: str = "mlp",
                 degree: torch.Tensor | None = None, sparsest: float = 1.0):
        super().__init__()
        seen = torch.as_tensor(seen, dtype=torch.bool).reshape(-1)
        if seen.shape[0] != base.num_entities:
            raise ValueError(f"seen has {seen.shape[0]} entries but the table has {base.num_entities} rows")
        if not 0.0 <= share < 1.0:
            raise ValueError(f"share must lie in [0, 1), got {share}")
        if align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {align_weight}")
        if not dropout and (align_weight == 0 or share == 0):
            raise ValueError("nothing would train the modality projection: use dropout, or align_weight > 0 with "
                             "share > 0")
        if len(inputs) == 0:
            raise ValueError("a modality substitute needs at least one modality input")
        self.num_entities, self.dim = base.num_entities, base.dim
        self.embedding = base.embedding
        self._inputs = [inputs]  # a plain list: the modules stay owned (and saved) by the representation
        width = len(inputs) * base.dim
        with torch.random.fork_rng(devices=[]):  # the global random stream is left as it was
            if projection == "linear":
                self.projection = nn.Linear(width, base.dim)
                last = self.projection
            elif projection == "mlp":
                self.projection = nn.Sequential(nn.Linear(width, base.dim), nn.ReLU(), nn.Linear(base.dim, base.dim))
                last = self.projection[2]
            else:
                raise ValueError(f"projection must be 'linear' or 'mlp', got {projection!r}")
        with torch.no_grad():  # start at the zero vector: no structural information
            last.weight.zero_()
            last.bias.zero_()
        self.share, self.dropout, self.align_weight, self.seed = float(share), bool(dropout), float(align_weight), seed
        self.register_buffer("seen", seen.clone())
        self.register_buffer("draws", torch.zeros(1, dtype=torch.long))
        has = torch.stack([torch.as_tensor(m.present, dtype=torch.bool) for m in inputs]).any(0)
        self.register_buffer("has_modality", has, persistent=False)
        if not 0.0 < sparsest <= 1.0:
            raise ValueError(f"sparsest must lie in (0, 1], got {sparsest}")
        eligible = self.seen & has
        if sparsest < 1.0:
            if degree is None:
                raise ValueError("sparsest < 1 needs the entities' training degrees")
            degree = torch.as_tensor(degree).reshape(-1).to(self.seen.device)
            if degree.shape[0] != self.num_entities:
                raise ValueError(f"degree has {degree.shape[0]} entries but the table has {self.num_entities} rows")
            eligible = eligible & (degree <= sparsest_cut(degree[eligible], sparsest))
        self.sparsest = float(sparsest)
        #: entities a training draw may pick (seen, with a modality, within the ``sparsest`` cut); derived from the
        #: training triples at construction, so not saved
        self.register_buffer("eligible", eligible, persistent=False)
        #: alignment values recorded by training forward passes since the last :meth:`pop_losses`
        self._pending: list[torch.Tensor] = []

    @property
    def inputs(self) -> nn.ModuleList:
        return self._inputs[0]

    # ------------------------------------------------------------------------------------------ pieces
    def modality_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """The concatenated adapted modality vectors of ``ids [S]`` -> ``[S, M D]`` (absent rows: the fill)."""
        return torch.cat([m(ids)[0] for m in self.inputs], -1)

    def substitute(self, ids: torch.Tensor) -> torch.Tensor:
        """Substitute structural rows of ``ids [S]`` -> ``[S, D]``: ``g([a_1; ...; a_M])``."""
        return self.projection(self.modality_vectors(ids))

    def sample_mask(self, draw: int) -> torch.Tensor:
        """Bool ``[N]``: the entities drawn by training draw ``draw`` (each with probability ``share``, independently;
        the caller keeps only the :attr:`eligible` ones)."""
        g = torch.Generator().manual_seed(_draw_seed(self.seed, draw))
        return (torch.rand(self.num_entities, generator=g) < self.share).to(self.seen.device)

    def substituted(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bool ``[B]`` (``[N]`` for ``None``): rows that use the substitute outside training (no training triple,
        at least one modality)."""
        seen = self.seen if ids is None else self.seen[ids]
        has = self.has_modality if ids is None else self.has_modality[ids]
        return ~seen & has

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.embedding.weight if ids is None else self.embedding(ids)
        sample = None
        if not self.training:
            replace = self.substituted(ids)
        else:
            # in training an entity without training triples only ever occurs as a negative: its substitute would
            # teach the projection that substitutes score low, so it keeps its (unused) row there
            replace = torch.zeros_like(rows[:, 0], dtype=torch.bool)
        if self.training and self.share > 0:
            draw = int(self.draws[0])
            with torch.no_grad():
                self.draws += 1
            mask = self.sample_mask(draw) & self.eligible
            sample = mask if ids is None else mask[ids]
            if self.dropout:
                replace = replace | sample
        align = sample is not None and self.align_weight > 0
        need = replace | sample if align else replace
        idx = need.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return rows
        ents = idx if ids is None else ids[idx]
        vectors = self.modality_vectors(ents)
        out = rows
        chosen = replace[idx]
        if bool(chosen.any()):
            sub = self.projection(vectors[chosen]).to(rows.dtype)
            out = rows.index_put((idx[chosen],), sub)
        if align:
            picked = sample[idx]
            if bool(picked.any()):
                pred = self.projection(vectors[picked].detach()).float()
                target = rows.index_select(0, idx[picked]).detach().float()
                self._pending.append(alignment_error(pred, target))
                del self._pending[:-_MAX_PENDING]  # forward passes outside a trainer step are never popped
        return out

    def pop_losses(self) -> list[torch.Tensor]:
        """The alignment values recorded since the last call (each a scalar tensor), and forget them."""
        out, self._pending = self._pending, []
        return out

    def extra_repr(self) -> str:
        return (f"share={self.share}, dropout={self.dropout}, align_weight={self.align_weight}, "
                f"sparsest={self.sparsest} ({int(self.eligible.sum())} eligible), "
                f"unseen_with_modality={int(self.substituted().sum())}")


def training_degree(train: torch.Tensor, num_entities: int) -> torch.Tensor:
    """Training triples per entity: long ``[N]``, the number of rows of ``train [T, 3]`` (``(h, r, t)``) with the entity
    as head or tail (a self-loop counts twice)."""
    train = torch.as_tensor(train).reshape(-1, 3).long()
    return torch.bincount(train[:, [0, 2]].reshape(-1).cpu(), minlength=num_entities)


def sparsest_cut(degree: torch.Tensor, share: float) -> int:
    """The degree cut of the sparsest ``share`` of entities with degrees ``degree [S]``: the smallest ``d`` with at least
    ``ceil(share · S)`` of the degrees ``<= d`` (entities with a degree equal to the cut all count, so the drawn set
    can exceed the share).  ``S = 0`` gives 0.

    Example: degrees ``[1, 1, 2, 3, 5, 8]`` and share 0.5 -> ``ceil(3) = 3`` smallest -> cut 2."""
    degree = torch.as_tensor(degree).reshape(-1)
    if degree.numel() == 0:
        return 0
    k = max(1, math.ceil(share * degree.numel() - 1e-9))
    return int(torch.sort(degree).values[k - 1])


def alignment_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative squared error ``Σ ||pred - target||² / Σ ||target||²`` of ``pred, target [S, D]`` -> scalar
    (0 = exact, 1 = as far as predicting zeros; the denominator is clamped at 1e-12)."""
    return (pred - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def attach_modality_structure(representation: nn.Module, seen: torch.Tensor, share: float = 0.15,
                              dropout: bool = True, align_weight: float = 0.0, seed: int = 0,
                              projection: str = "mlp", degree: torch.Tensor | None = None,
                              sparsest: float = 1.0) -> ModalityStructure:
    """Give a multimodal representation modality substitutes for its structural rows (in place).

    Works for any representation with ``structure`` (an :class:`~mmkgc.models.kge.EmbeddingRepresentation`) and
    ``inputs`` (its modality inputs): the concat :class:`~mmkgc.models.kge.MultimodalRepresentation` and the
    attention :class:`~mmkgc.models.fused.FusedRepresentation`.

    :returns: the new ``representation.structure``.
    :raises ValueError: the representation has no structural table or no modality, or an option is out of range.
    """
    base = getattr(representation, "structure", None)
    if not isinstance(base, EmbeddingRepresentation):
        raise ValueError("modality substitutes need a representation with a structural embedding table "
                         "(concat or fused)")
    if getattr(base.embedding, "sparse", False):
        raise ValueError("modality substitutes do not support sparse structural tables (training.sparse)")
    inputs = getattr(representation, "inputs", None)
    if not inputs:
        raise ValueError("modality substitutes need at least one modality")
    structure = ModalityStructure(base, inputs, seen, share=share, dropout=dropout, align_weight=align_weight,
                                  seed=seed, projection=projection, degree=degree, sparsest=sparsest)
    device = base.embedding.weight.device
    representation.structure = structure.to(device)
    return structure


def modality_structures(model: nn.Module) -> list[ModalityStructure]:
    """Every :class:`ModalityStructure` inside ``model`` (empty without ``model.unseen``)."""
    return [m for m in model.modules() if isinstance(m, ModalityStructure)]


def pop_auxiliary_losses(structures: list[ModalityStructure]) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The weighted alignment loss recorded by the forward passes of one training step, and the term for the epoch
    log: ``(Σ weight · mean(values) or None, {"unseen_align": mean value})``; clears what was recorded."""
    total, terms = None, {}
    for s in structures:
        values = s.pop_losses()
        if not values or s.align_weight == 0:
            continue
        value = torch.stack(values).mean()
        total = s.align_weight * value if total is None else total + s.align_weight * value
        terms["unseen_align"] = value.detach()
    return total, terms
