"""A seeded synthetic multi-modal knowledge graph for demos, tests and sanity checks.

The generator builds a graph whose links are *caused* by hidden entity properties, and two feature tables
that are noisy views of the same properties, so that a model which reads the features can predict links a
structure-only model cannot:

1. **Entities.**  Every entity gets a type ``c_e`` (one of ``num_types`` clusters) and a latent vector
   ``z_e = mu_{c_e} + sigma * eps`` (float, ``latent_dim``).
2. **Relations** follow the classic patterns used to motivate KGE models (TransE, Bordes et al. 2013;
   RotatE, Sun et al. 2019), each with its own domain and range types and its own map
   ``g_r(z) = Q_r z + v_r`` (``Q_r`` random orthogonal):

   * ``symmetric``: ``(a, r, b)`` for the ``k`` nearest ``b`` under a relation-specific projection, and always
     also ``(b, r, a)``;
   * ``inverse`` pairs: ``r`` links ``h`` to the ``k`` range entities nearest to ``g_r(z_h)``; its partner
     ``r'`` holds exactly the reversed triples;
   * ``composition`` triples ``r1, r2, r3``: ``r1`` and ``r2`` are functional (one tail per head, nearest to
     ``g(z_h)``), and ``r3(h) = r2(r1(h))`` exactly;
   * ``one_to_many`` (hierarchy): a few "parent" entities, each child linked from the parent nearest to
     ``g_r(z_child)`` — a 1-N relation;
   * ``many_to_one``: every head linked to the one "hub" nearest to ``g_r(z_h)`` — an N-1 relation;
   * ``many_to_many``: ``k`` nearest range entities of ``g_r(z_h)``, no partner.

3. **Sparse entities.**  A share ``sparse_fraction`` of the entities keeps only a handful of its facts
   (``sparse_degree`` facts, one of which is usually held out for valid/test), so that structure alone says
   little about them.  Facts between two sparse entities are dropped.  Hubs and parents are never sparse.
4. **Splits.**  A "fact" is a triple together with its reversed partner (symmetric relations, inverse pairs);
   a fact goes to one split as a whole, so the reverse of a test triple is never a training triple.  Held-out
   facts are mostly those of sparse entities plus a small share ``dense_heldout_fraction`` of the other facts,
   split evenly into valid and test.  Every entity and relation of valid/test occurs in train (but see 6).
5. **Features.**  ``text`` and ``visual`` tables are different random two-layer ``tanh`` maps of the latent
   (the text view also carries a type signal), plus Gaussian noise, standardised per column (float32).
   A random share ``missing_text`` / ``missing_visual`` of the entities lacks each modality: its row is all
   zeros and its presence mask is ``False``.
6. **Inductive split** (``unseen_entity_share > 0``).  That share of all entities, drawn among the sparse ones from
   a separate stream, is kept out of train: every fact with one such end moves to valid or test (evenly, by fact),
   facts between two of them are dropped, and a moved fact whose other end or relation no longer occurs in train is
   dropped too (an ordinary held-out fact in that situation returns to train).  The remaining train triples and the
   features are those of the same arguments with share 0, minus the moved facts.  ``SyntheticMMKG.unseen`` marks
   the entities kept out.  Their features are the same noisy views of the latent as everyone's, so their links can
   be predicted from modalities alone (the ground truth for ``model.unseen``).

Everything is drawn from one :func:`numpy.random.default_rng` stream, so the output is a deterministic
function of the arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mmkgc.data.triples import TripleSet

__all__ = ["PATTERNS", "SyntheticMMKG", "make_synthetic_mmkg"]

#: Relation patterns in the order the generator cycles through them (block sizes in brackets):
#: symmetric (1), inverse pair (2), composition (3), one_to_many (1), many_to_one (1), many_to_many (1).
PATTERNS = ("symmetric", "inverse", "composition", "one_to_many", "many_to_one", "many_to_many")
_BLOCK_SIZE = {"symmetric": 1, "inverse": 2, "composition": 3, "one_to_many": 1, "many_to_one": 1,
               "many_to_many": 1}


@dataclass
class SyntheticMMKG:
    """Output of :func:`make_synthetic_mmkg`.

    :param triples: the graph (int64 (h, r, t) splits; labels ``entity_0000``..., ``r00_symmetric``...).
    :param features: modality name (``"text"``, ``"visual"``) -> float32 ``[N, d_m]``; rows of entities that
        lack the modality are zeros.
    :param present: modality name -> bool ``[N]``, ``True`` where the entity has that modality.
    :param entity_types: int64 ``[N]``, the hidden cluster of each entity.
    :param latent: float32 ``[N, latent_dim]``, the hidden vector every link and feature derives from.
    :param sparse: bool ``[N]``, entities that kept only a few facts.
    :param relation_patterns: pattern name of each relation (``[R]``), one of :data:`PATTERNS` (the two
        members of an inverse pair are both ``"inverse"``; the three of a composition ``"composition"``).
    :param inverse_of: relation id -> id of its exact inverse (both directions listed).
    :param compositions: ``(r1, r2, r3)`` with ``r3(h) = r2(r1(h))`` for every head of ``r1``.
    :param params: the generator arguments (for provenance).
    """

    triples: TripleSet
    features: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    entity_types: np.ndarray
    latent: np.ndarray
    sparse: np.ndarray
    relation_patterns: list[str]
    inverse_of: dict[int, int] = field(default_factory=dict)
    compositions: list[tuple[int, int, int]] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    #: bool ``[N]``, entities kept out of train by ``unseen_entity_share`` (their triples are in valid/test only)
    unseen: np.ndarray | None = None

    @property
    def modalities(self) -> list[str]:
        """Names of the feature tables."""
        return list(self.features)


# ---------------------------------------------------------------------------------------------- helpers
def _orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _nearest(queries: np.ndarray, candidates: np.ndarray, k: int, exclude: np.ndarray | None = None,
             query_ids: np.ndarray | None = None) -> np.ndarray:
    """Indices (into ``candidates``) of the ``k`` nearest candidates of every query, int64 ``[Q, k]``.

    ``exclude``/``query_ids``: candidate entity ids and query entity ids; a query never selects itself.
    """
    d2 = (queries**2).sum(1)[:, None] - 2.0 * queries @ candidates.T + (candidates**2).sum(1)[None, :]
    if exclude is not None and query_ids is not None:
        d2[query_ids[:, None] == exclude[None, :]] = np.inf
    k = min(k, candidates.shape[0] - (1 if exclude is not None else 0))
    if k < d2.shape[1]:
        part = np.sort(np.argpartition(d2, k - 1, axis=1)[:, :k], axis=1)
    else:
        part = np.broadcast_to(np.arange(d2.shape[1]), d2.shape).copy()
    order = np.argsort(np.take_along_axis(d2, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class _Builder:
    """Accumulates triples with their fact-group ids."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.groups: list[np.ndarray] = []
        self.next_group = 0

    def add(self, h: np.ndarray, r: int, t: np.ndarray, reverse_relation: int | None = None) -> None:
        """Add facts ``(h, r, t)``; with ``reverse_relation``, also ``(t, r', h)`` in the same fact."""
        h = np.asarray(h, dtype=np.int64)
        t = np.asarray(t, dtype=np.int64)
        n = h.shape[0]
        g = np.arange(self.next_group, self.next_group + n, dtype=np.int64)
        self.next_group += n
        self.rows.append(np.stack([h, np.full(n, r, dtype=np.int64), t], 1))
        self.groups.append(g)
        if reverse_relation is not None:
            self.rows.append(np.stack([t, np.full(n, reverse_relation, dtype=np.int64), h], 1))
            self.groups.append(g)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        triples = np.concatenate(self.rows, 0)
        groups = np.concatenate(self.groups, 0)
        # Remove duplicate triples (e.g. a symmetric pair found from both ends), keeping the first fact.
        _, first = np.unique(triples, axis=0, return_index=True)
        first = np.sort(first)
        return triples[first], groups[first]


def _relation_plan(num_relations: int) -> list[str]:
    """Pattern of every relation id, filling blocks in :data:`PATTERNS` order and skipping blocks too big."""
    plan: list[str] = []
    i = 0
    while len(plan) < num_relations:
        pattern = PATTERNS[i % len(PATTERNS)]
        i += 1
        if _BLOCK_SIZE[pattern] <= num_relations - len(plan):
            plan += [pattern] * _BLOCK_SIZE[pattern]
    return plan


def _feature_view(rng: np.random.Generator, latent: np.ndarray, dim: int, hidden: int, noise: float,
                  type_signal: np.ndarray | None) -> np.ndarray:
    d = latent.shape[1]
    w1 = rng.standard_normal((d, hidden)) / np.sqrt(d)
    b1 = rng.standard_normal(hidden) * 0.5
    w2 = rng.standard_normal((hidden, dim)) / np.sqrt(hidden)
    x = np.tanh(1.5 * latent @ w1 + b1) @ w2
    if type_signal is not None:
        x = x + type_signal
    x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    x = x + noise * rng.standard_normal(x.shape)
    return ((x - x.mean(0)) / (x.std(0) + 1e-8)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- generator
def make_synthetic_mmkg(
    num_entities: int = 2000,
    num_relations: int = 20,
    *,
    seed: int = 0,
    num_types: int = 8,
    latent_dim: int = 16,
    types_per_relation: int = 4,
    neighbours: int = 4,
    sparse_fraction: float = 0.3,
    sparse_degree: tuple[int, int] = (2, 4),
    sparse_heldout_probability: float = 0.9,
    dense_heldout_fraction: float = 0.03,
    text_dim: int = 64,
    visual_dim: int = 64,
    text_noise: float = 0.5,
    visual_noise: float = 0.7,
    missing_text: float = 0.1,
    missing_visual: float = 0.2,
    unseen_entity_share: float = 0.0,
    name: str = "synthetic",
) -> SyntheticMMKG:
    """Generate a synthetic multi-modal knowledge graph (see the module docstring for the model).

    With the defaults (seed 0): 2,000 entities, 20 relations, 28,264 train, 811 valid and 806 test triples,
    about half of the held-out ones involving a sparse entity (600 entities with 1-8 train triples); text
    ``[2000, 64]`` and visual ``[2000, 64]`` float32 tables with 10% / 20% of the rows missing.

    :param num_entities: ``N`` (at least ``4 * num_types``).
    :param num_relations: ``R`` (at least 1); patterns are assigned in blocks, see :data:`PATTERNS`.
    :param seed: seed of the single random stream; equal arguments give identical output.
    :param num_types: number of hidden entity clusters.
    :param latent_dim: size of the hidden vector.
    :param types_per_relation: how many types form the domain (and, separately, the range) of a relation.
    :param neighbours: ``k`` tails per head for ``symmetric``, ``inverse`` and ``many_to_many`` relations.
    :param sparse_fraction: share of entities that keep only ``sparse_degree`` facts, in ``[0, 1)``.
    :param sparse_degree: inclusive range of the number of facts a sparse entity keeps.
    :param sparse_heldout_probability: probability that one of a sparse entity's facts is held out (it always
        keeps at least one train fact).
    :param dense_heldout_fraction: share of the facts between non-sparse entities that is held out.
    :param text_dim, visual_dim: feature sizes ``d_m``.
    :param text_noise, visual_noise: standard deviation of the Gaussian noise added to the standardised views.
    :param missing_text, missing_visual: share of entities without the modality.
    :param unseen_entity_share: share of all entities kept out of train (the inductive split, step 6 of the module
        docstring), drawn among the sparse entities, so at most ``sparse_fraction``.
    :param name: dataset name of the TripleSet.
    :returns: a :class:`SyntheticMMKG`.
    :raises ValueError: an argument outside its range.
    """
    params = dict(locals())
    if num_types < 1 or num_entities < 4 * num_types:
        raise ValueError(f"num_entities ({num_entities}) must be at least 4 * num_types ({num_types})")
    if num_relations < 1:
        raise ValueError(f"num_relations must be >= 1, got {num_relations}")
    if not 0.0 <= sparse_fraction < 1.0:
        raise ValueError(f"sparse_fraction must lie in [0, 1), got {sparse_fraction}")
    for key in ("sparse_heldout_probability", "dense_heldout_fraction",
                "missing_text", "missing_visual"):
        if not 0.0 <= params[key] <= 1.0:
            raise ValueError(f"{key} must lie in [0, 1], got {params[key]}")
    if not 0.0 <= unseen_entity_share <= sparse_fraction:
        raise ValueError(f"unseen_entity_share must lie in [0, sparse_fraction = {sparse_fraction}] (unseen entities "
                         f"are drawn among the sparse ones), got {unseen_entity_share}")
    if not 1 <= sparse_degree[0] <= sparse_degree[1]:
        raise ValueError(f"sparse_degree must be (lo, hi) with 1 <= lo <= hi, got {sparse_degree}")
    if neighbours < 1 or latent_dim < 2 or text_dim < 1 or visual_dim < 1:
        raise ValueError("neighbours, text_dim and visual_dim must be >= 1 and latent_dim >= 2")
    params["sparse_degree"] = list(sparse_degree)

    rng = np.random.default_rng(seed)
    N, R, T = num_entities, num_relations, num_types
    types_per_relation = max(1, min(types_per_relation, T))

    # 1. entities -------------------------------------------------------------------------------------
    types = rng.permutation(np.arange(N) % T).astype(np.int64)
    centers = rng.standard_normal((T, latent_dim)) * 1.5
    latent = centers[types] + rng.standard_normal((N, latent_dim))
    members = [np.flatnonzero(types == c) for c in range(T)]
    order = rng.permutation(N)
    sparse = np.zeros(N, dtype=bool)
    sparse[order[: int(round(sparse_fraction * N))]] = True

    def pick_types() -> np.ndarray:
        chosen = rng.choice(T, size=types_per_relation, replace=False)
        return np.sort(np.concatenate([members[c] for c in chosen]))

    def relation_map() -> tuple[np.ndarray, np.ndarray]:
        return _orthogonal(rng, latent_dim), rng.standard_normal(latent_dim) * 0.5

    def mapped(ids: np.ndarray, q: np.ndarray, v: np.ndarray) -> np.ndarray:
        return latent[ids] @ q.T + v

    # 2. relations ------------------------------------------------------------------------------------
    plan = _relation_plan(R)
    builder = _Builder()
    inverse_of: dict[int, int] = {}
    compositions: list[tuple[int, int, int]] = []
    r = 0
    while r < R:
        pattern = plan[r]
        if pattern == "symmetric":
            ents = pick_types()
            proj = rng.standard_normal((latent_dim, max(2, latent_dim // 2)))
            x = latent[ents] @ proj
            nn = _nearest(x, x, neighbours, exclude=ents, query_ids=ents)
            heads = np.repeat(ents, nn.shape[1])
            tails = ents[nn.reshape(-1)]
            a, b = np.minimum(heads, tails), np.maximum(heads, tails)
            pairs = np.unique(np.stack([a, b], 1), axis=0)
            builder.add(pairs[:, 0], r, pairs[:, 1], reverse_relation=r)
            r += 1
        elif pattern == "inverse":
            dom, ran = pick_types(), pick_types()
            q, v = relation_map()
            nn = _nearest(mapped(dom, q, v), latent[ran], neighbours, exclude=ran, query_ids=dom)
            builder.add(np.repeat(dom, nn.shape[1]), r, ran[nn.reshape(-1)], reverse_relation=r + 1)
            inverse_of[r], inverse_of[r + 1] = r + 1, r
            r += 2
        elif pattern == "composition":
            dom, mid, ran = pick_types(), pick_types(), pick_types()
            q1, v1 = relation_map()
            q2, v2 = relation_map()
            first = mid[_nearest(mapped(dom, q1, v1), latent[mid], 1, exclude=mid, query_ids=dom)[:, 0]]
            second = ran[_nearest(mapped(mid, q2, v2), latent[ran], 1, exclude=ran, query_ids=mid)[:, 0]]
            lookup = dict(zip(mid.tolist(), second.tolist()))
            builder.add(dom, r, first)
            builder.add(mid, r + 1, second)
            composed = np.array([lookup[m] for m in first.tolist()], dtype=np.int64)
            builder.add(dom, r + 2, composed)
            compositions.append((r, r + 1, r + 2))
            r += 3
        elif pattern in ("one_to_many", "many_to_one"):
            dom, ran = pick_types(), pick_types()
            q, v = relation_map()
            if pattern == "one_to_many":
                # parents (dense, from the domain) -> children (the range): child picks nearest parent.
                pool = dom[~sparse[dom]] if (~sparse[dom]).any() else dom
                parents = rng.choice(pool, size=min(len(pool), max(2, len(ran) // 25)), replace=False)
                children = np.setdiff1d(ran, parents)
                nn = _nearest(mapped(children, q, v), latent[parents], 1)[:, 0]
                builder.add(parents[nn], r, children)
            else:
                pool = ran[~sparse[ran]] if (~sparse[ran]).any() else ran
                hubs = rng.choice(pool, size=min(len(pool), max(2, len(ran) // 60)), replace=False)
                heads = np.setdiff1d(dom, hubs)
                nn = _nearest(mapped(heads, q, v), latent[hubs], 1)[:, 0]
                builder.add(heads, r, hubs[nn])
            r += 1
        else:  # many_to_many
            dom, ran = pick_types(), pick_types()
            q, v = relation_map()
            nn = _nearest(mapped(dom, q, v), latent[ran], neighbours, exclude=ran, query_ids=dom)
            builder.add(np.repeat(dom, nn.shape[1]), r, ran[nn.reshape(-1)])
            r += 1
    triples, groups = builder.result()
    # Self-loops can arise from a composition; drop them.
    keep = triples[:, 0] != triples[:, 2]
    triples, groups = triples[keep], groups[keep]

    # 3. sparse entities keep a few facts ----------------------------------------------------------------
    ends_sparse = sparse[triples[:, 0]] | sparse[triples[:, 2]]
    both_sparse = sparse[triples[:, 0]] & sparse[triples[:, 2]]
    group_ids = np.unique(groups)
    # Facts are identified by their group; a fact is "sparse" when one of its ends is sparse.
    drop_group = np.zeros(builder.next_group, dtype=bool)
    drop_group[groups[both_sparse]] = True
    owner = np.full(builder.next_group, -1, dtype=np.int64)  # the sparse end of each sparse fact
    single = ends_sparse & ~both_sparse
    owner[groups[single]] = np.where(sparse[triples[single, 0]], triples[single, 0], triples[single, 2])
    heldout_group = np.zeros(builder.next_group, dtype=bool)
    candidate = np.flatnonzero((owner >= 0) & ~drop_group)
    by_owner: dict[int, list[int]] = {}
    for g in candidate.tolist():
        by_owner.setdefault(int(owner[g]), []).append(g)
    for s in np.flatnonzero(sparse).tolist():
        facts = by_owner.get(s, [])
        if not facts:
            continue
        facts = rng.permutation(np.asarray(facts, dtype=np.int64))
        keep_n = int(rng.integers(sparse_degree[0], sparse_degree[1] + 1))
        kept, dropped = facts[:keep_n], facts[keep_n:]
        drop_group[dropped] = True
        if len(kept) >= 2 and rng.random() < sparse_heldout_probability:
            heldout_group[kept[0]] = True
    dense_facts = np.setdiff1d(group_ids, np.flatnonzero(owner >= 0))
    dense_facts = dense_facts[~drop_group[dense_facts]]
    n_dense_out = int(round(dense_heldout_fraction * len(dense_facts)))
    heldout_group[rng.choice(dense_facts, size=n_dense_out, replace=False)] = True

    alive = ~drop_group[groups]
    triples, groups = triples[alive], groups[alive]
    held = heldout_group[groups]

    # Every entity and relation of a held-out fact must occur in train; otherwise the fact returns to train.
    for _ in range(3):
        train = triples[~held]
        seen_e = np.zeros(N, dtype=bool)
        seen_e[train[:, 0]] = True
        seen_e[train[:, 2]] = True
        seen_r = np.zeros(R, dtype=bool)
        seen_r[train[:, 1]] = True
        bad = held & ~(seen_e[triples[:, 0]] & seen_e[triples[:, 2]] & seen_r[triples[:, 1]])
        if not bad.any():
            break
        heldout_group[groups[bad]] = False
        held = heldout_group[groups]

    # 4. valid / test: held-out facts split evenly, by fact ---------------------------------------------
    out_groups = np.unique(groups[held])
    out_groups = rng.permutation(out_groups)
    test_groups = np.zeros(builder.next_group, dtype=bool)
    test_groups[out_groups[: len(out_groups) // 2]] = True
    is_test = held & test_groups[groups]
    is_valid = held & ~test_groups[groups]

    unseen = np.zeros(N, dtype=bool)
    if unseen_entity_share > 0:
        triples, groups, is_valid, is_test, unseen = _inductive_split(
            triples, groups, is_valid, is_test, sparse, unseen_entity_share, N, R, seed)
    held = is_valid | is_test

    def split(mask: np.ndarray) -> torch.Tensor:
        x = triples[mask]
        x = x[np.lexsort((x[:, 2], x[:, 1], x[:, 0]))]
        return torch.from_numpy(np.ascontiguousarray(x))

    triple_set = TripleSet(
        train=split(~held),
        valid=split(is_valid),
        test=split(is_test),
        entity_labels=[f"entity_{i:05d}" for i in range(N)],
        relation_labels=[f"r{i:02d}_{p}" for i, p in enumerate(plan)],
        name=name,
        metadata={"format": "synthetic", "generator": "mmkgc.data.synthetic.make_synthetic_mmkg",
                  "params": params},
    )

    # 5. features ----------------------------------------------------------------------------------------
    type_text = rng.standard_normal((T, text_dim)) * 0.5
    features = {
        "text": _feature_view(rng, latent, text_dim, 2 * text_dim, text_noise, type_text[types]),
        "visual": _feature_view(rng, latent, visual_dim, 2 * visual_dim, visual_noise, None),
    }
    present = {
        "text": rng.random(N) >= missing_text,
        "visual": rng.random(N) >= missing_visual,
    }
    for m in features:
        features[m][~present[m]] = 0.0

    return SyntheticMMKG(
        triples=triple_set,
        features=features,
        present=present,
        entity_types=types,
        latent=latent.astype(np.float32),
        sparse=sparse,
        relation_patterns=plan,
        inverse_of=inverse_of,
        compositions=compositions,
        params=params,
        unseen=unseen,
    )


def _inductive_split(triples: np.ndarray, groups: np.ndarray, is_valid: np.ndarray, is_test: np.ndarray,
                     sparse: np.ndarray, share: float, num_entities: int, num_relations: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep ``round(share * N)`` sparse entities out of train (step 6 of the module docstring).

    Draws from its own stream (seeded by ``(seed, 1)``), so the rest of the dataset (and the features) equals the
    one generated with ``unseen_entity_share = 0``.

    :returns: ``(triples, groups, is_valid, is_test, unseen [N] bool)`` after the move.
    :raises ValueError: more unseen entities requested than there are sparse entities.
    """
    rng = np.random.default_rng([seed, 1])
    pool = np.flatnonzero(sparse)
    count = int(round(share * num_entities))
    if count > pool.shape[0]:
        raise ValueError(f"unseen_entity_share {share} needs {count} sparse entities, there are {pool.shape[0]}")
    unseen = np.zeros(num_entities, dtype=bool)
    unseen[rng.choice(pool, size=count, replace=False)] = True
    ends = unseen[triples[:, 0]].astype(np.int64) + unseen[triples[:, 2]]
    keep = ends < 2  # a fact between two unseen entities has no seen end to ask from: dropped
    triples, groups, is_valid, is_test, ends = triples[keep], groups[keep], is_valid[keep], is_test[keep], ends[keep]
    moved = ends == 1
    held = is_valid | is_test
    alive = np.ones(triples.shape[0], dtype=bool)
    for _ in range(10):  # a seen entity or relation may have had all its train triples with unseen entities
        train = alive & ~held & ~moved
        seen_e = np.zeros(num_entities, dtype=bool)
        seen_e[triples[train, 0]] = True
        seen_e[triples[train, 2]] = True
        seen_r = np.zeros(num_relations, dtype=bool)
        seen_r[triples[train, 1]] = True
        ok = (seen_e[triples[:, 0]] | unseen[triples[:, 0]]) & (seen_e[triples[:, 2]] | unseen[triples[:, 2]]) \
            & seen_r[triples[:, 1]]
        bad_moved = alive & moved & ~ok  # the other end (or the relation) is not in train: the fact is dropped
        bad_held = alive & held & ~moved & ~ok  # an ordinary held-out fact that lost its train support: back to train
        if not (bad_moved.any() or bad_held.any()):
            break
        alive[np.isin(groups, groups[bad_moved])] = False
        back = np.isin(groups, groups[bad_held])
        held = held & ~back
        is_valid, is_test = is_valid & ~back, is_test & ~back
    # the moved facts: valid or test by fact (a fact and its reverse stay together), evenly
    moved_groups = rng.permutation(np.unique(groups[alive & moved]))
    to_test = np.isin(groups, moved_groups[: len(moved_groups) // 2])
    is_test = (is_test & ~moved) | (moved & to_test)
    is_valid = (is_valid & ~moved) | (moved & ~to_test)
    return triples[alive], groups[alive], is_valid[alive], is_test[alive], unseen
