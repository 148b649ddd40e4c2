"""PyKEEN (Ali et al., "PyKEEN 1.0", JMLR 2021) interop: its datasets as mmkgc datasets, mmkgc models as PyKEEN
models.  PyKEEN is optional; every function imports it when called and says how to install it when it is absent.

Export (``mmkgc export RUN --format pykeen``) is offered only where PyKEEN's interaction computes the same score
from the same vectors (checked against PyKEEN 1.11.1's ``pykeen.nn.modules``):

=========  ==========================================  =====================================================
mmkgc      mmkgc score                                 PyKEEN model / interaction
=========  ==========================================  =====================================================
transe     ``-||h + r - t||_p`` (p = 1 or 2)            ``TransE(scoring_fct_norm=p)``: ``-||h + r - t||_p``
distmult   ``sum h r t``                               ``DistMult``: ``sum h r t``
complex    ``Re(sum h r conj(t))``, ``[re | im]``       ``ComplEx``: ``Re(sum h r conj(t))``, complex dtype
=========  ==========================================  =====================================================

Refused: RotatE (mmkgc follows OpenKE, ``gamma - sum_k |h_k r_k - t_k|``, a sum of complex moduli; PyKEEN's is
``-||h * r - t||_2``, the Euclidean norm over all coordinates), TuckER (batch norms and dropouts in another
place), TransE with a ``margin`` (PyKEEN's has no constant), reciprocal models (head queries use relation
``r + R``), and representations whose entity vectors are not one fixed vector per entity (relation-conditioned fusion: NativE, AFME; IMVIA).
The exported entity vectors are the model's final entity representations (``model.entities(None)``, eval mode),
so a concat / modality-only / R-GCN model exports too; TransE's ``normalize`` is applied before export.  PyKEEN's
TransE and DistMult normalise entity vectors to unit length at construction and after each update by default
(``entity_constrainer``); the export switches that off (``entity_constrainer: null``), else PyKEEN would rescale
the exported vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mmkgc.data.triples import TripleSet
from mmkgc.errors import ConfigError, MMKGCError, UnknownNameError

#: mmkgc scorer -> PyKEEN model class name.
PYKEEN_MODELS = {"transe": "TransE", "distmult": "DistMult", "complex": "ComplEx"}
EMBEDDINGS_FILE = "embeddings.safetensors"
MANIFEST = "pykeen_model.json"
#: PyKEEN's split names, in mmkgc's order train / valid / test.
SPLIT_NAMES = {"train": "training", "valid": "validation", "test": "testing"}


def _pykeen(what: str):
    try:
        import pykeen  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what}: PyKEEN is not installed (pip install pykeen)") from None
    return pykeen


def load_pykeen_dataset(name: str) -> TripleSet:
    """A PyKEEN dataset by name (``pykeen.datasets.get_dataset``; PyKEEN downloads and caches it on first use)
    as a :class:`TripleSet`: PyKEEN's ids and labels, training / validation / testing as train / valid / test.

    :raises UnknownNameError: PyKEEN does not know ``name`` (PyKEEN's message lists the valid names).
    :raises ConfigError: PyKEEN is not installed; the splits do not share one entity / relation mapping.
    """
    _pykeen(f"dataset.pykeen: {name}")
    from pykeen.datasets import get_dataset

    try:
        ds = get_dataset(dataset=name)
    except KeyError as err:
        raise UnknownNameError(f"dataset.pykeen: {err.args[0] if err.args else name}") from None
    train = ds.training
    ents, rels = train.entity_to_id, train.relation_to_id
    for split in (ds.validation, ds.testing):
        if split is not None and (split.entity_to_id != ents or split.relation_to_id != rels):
            raise ConfigError(f"dataset.pykeen: {name}: its splits do not share one entity/relation mapping")
    entity_labels = [""] * len(ents)
    for label, i in ents.items():
        entity_labels[i] = label
    relation_labels = [""] * len(rels)
    for label, i in rels.items():
        relation_labels[i] = label
    valid = ds.validation.mapped_triples if ds.validation is not None else None
    return TripleSet(train.mapped_triples, valid, ds.testing.mapped_triples, entity_labels, relation_labels,
                     name=f"pykeen-{name}")


def check_exportable(model: Any) -> str:
    """The PyKEEN model class of a :class:`~mmkgc.saved_model.TrainedModel`, or a clear refusal.

    :raises ConfigError: the interaction or representation has no identical PyKEEN counterpart (why is named).
    """
    from mmkgc.models.kge import KGEModel

    cfg, module = model.config, model.module
    scorer = cfg.model.scorer.lower()
    if cfg.model.method != "kge":
        raise ConfigError(f"export --format pykeen: model.method {cfg.model.method!r} (decision fusion of several "
                          "decoders) has no PyKEEN counterpart")
    if scorer == "rotate":
        raise ConfigError("export --format pykeen: mmkgc's RotatE scores gamma - sum_k |h_k r_k - t_k| (a sum of "
                          "complex moduli, as OpenKE), PyKEEN's RotatE -||h * r - t||_2 (the Euclidean norm); the "
                          "scores and rankings would differ. Exportable scorers: transe, distmult, complex")
    if scorer not in PYKEEN_MODELS:
        raise ConfigError(f"export --format pykeen: scorer {scorer!r} has no identical PyKEEN interaction "
                          "(exportable: transe, distmult, complex)")
    if scorer == "transe" and getattr(module.scorer, "margin", None):
        raise ConfigError(f"export --format pykeen: this TransE adds a margin ({module.scorer.margin}) to every "
                          "score; PyKEEN's TransE has none (scores would differ by that constant)")
    if module.reciprocal:
        raise ConfigError("export --format pykeen: model.reciprocal answers head queries with inverse relations "
                          "(r + R); PyKEEN's model would score them with r")
    plain = all(getattr(type(module), name) is getattr(KGEModel, name)
                for name in ("score_fn", "score_t", "score_h", "scoring_context", "score_hrt"))
    plain = plain and not getattr(module, "relation_aware", False)  # one KGEModel scores every representation
    if not isinstance(module, KGEModel) or not plain:
        raise ConfigError(f"export --format pykeen: model.representation {cfg.model.representation!r} does not give "
                          "one fixed vector per entity (its scoring conditions entities on the relation)")
    return PYKEEN_MODELS[scorer]


@torch.no_grad()
def pykeen_embeddings(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The entity and relation tables in PyKEEN's layout: real ``[N, d]`` / ``[R, d]`` (TransE, DistMult), or
    ``[N, d, 2]`` / ``[R, d, 2]`` (ComplEx: ``torch.view_as_real`` of PyKEEN's complex embeddings; mmkgc stores
    ``[re | im]`` halves).  TransE's ``normalize`` is applied (PyKEEN scores the vectors as they are)."""
    module = model.module
    module.eval()
    ents = module.entities(None).detach().float().cpu()
    rels = module.relations.weight.detach().float().cpu()
    scorer = module.scorer
    if getattr(scorer, "normalize", False):
        ents, rels = scorer._norm(ents), scorer._norm(rels)
    if model.config.model.scorer.lower() == "complex":
        def to_pairs(x: torch.Tensor) -> torch.Tensor:
            re, im = x.chunk(2, dim=-1)
            return torch.stack([re, im], -1).contiguous()

        ents, rels = to_pairs(ents), to_pairs(rels)
    return ents.contiguous(), rels.contiguous()


def triples_factories(triples: TripleSet) -> dict[str, Any]:
    """``{"training": TriplesFactory, "validation": ..., "testing": ...}`` with mmkgc's ids (PyKEEN's
    ``entity_to_id`` / ``relation_to_id`` are mmkgc's label maps).

    :raises ConfigError: PyKEEN is missing; two entities (or relations) share a label (PyKEEN needs unique ones).
    """
    _pykeen("export --format pykeen")
    from pykeen.triples import TriplesFactory

    for what, labels in (("entity", triples.entity_labels), ("relation", triples.relation_labels)):
        if len(set(labels)) != len(labels):
            dup = next(label for label in labels if labels.count(label) > 1)
            raise ConfigError(f"export --format pykeen: the {what} label {dup!r} is shared by several ids; PyKEEN "
                              "maps labels to ids one to one")
    ents = {label: i for i, label in enumerate(triples.entity_labels)}
    rels = {label: i for i, label in enumerate(triples.relation_labels)}
    return {name: TriplesFactory(mapped_triples=triples.split(split).clone(), entity_to_id=ents, relation_to_id=rels)
            for split, name in SPLIT_NAMES.items()}


def export_pykeen(model: Any, directory: str | Path) -> Path:
    """Write a model for PyKEEN into a new directory (atomically: absent or complete)::

        training/ validation/ testing/   TriplesFactory.to_path_binary() directories (PyKEEN's own format)
        embeddings.safetensors           entity / relation tables in PyKEEN's layout (:func:`pykeen_embeddings`)
        pykeen_model.json                the PyKEEN model class and its keyword arguments

    :func:`load_pykeen_model` rebuilds the PyKEEN model from it.

    :raises ConfigError: no identical PyKEEN interaction (:func:`check_exportable`), PyKEEN missing, shared labels,
        ``directory`` exists and is not empty.
    """
    from safetensors.torch import save_file

    from mmkgc.fileio import write_new_directory

    cls = check_exportable(model)
    factories = triples_factories(model.triples)
    ents, rels = pykeen_embeddings(model)
    scorer = model.module.scorer
    kwargs: dict[str, Any] = {"embedding_dim": int(scorer.dim)}
    if cls == "TransE":
        kwargs["scoring_fct_norm"] = int(scorer.p)
    if cls in ("TransE", "DistMult"):
        # PyKEEN constrains these entities to unit L2 norm after every update *and at construction*, which would
        # rescale the exported vectors (and change the scores)
        kwargs["entity_constrainer"] = None

    def write(tmp: Path) -> None:
        for name, factory in factories.items():
            factory.to_path_binary(tmp / name)
        save_file({"entity": ents, "relation": rels}, str(tmp / EMBEDDINGS_FILE))
        manifest = {"pykeen_model": cls, "kwargs": kwargs, "mmkgc_scorer": model.config.model.scorer,
                    "mmkgc_representation": model.config.model.representation, "dataset": model.triples.name,
                    "note": "scores equal mmkgc's score_hrt; load with mmkgc.interop.pykeen.load_pykeen_model"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    return write_new_directory(directory, write, what="PyKEEN export")


def read_triples_factory(directory: str | Path) -> Any:
    """A ``TriplesFactory`` from a ``to_path_binary`` directory, read from its TSV files only (PyKEEN's own
    ``from_path_binary`` unpickles ``base.pth`` with ``weights_only=False``; this never loads a pickle)."""
    _pykeen("read a TriplesFactory")
    import pandas as pd
    from pykeen.triples import TriplesFactory

    directory = Path(directory)
    maps = {}
    for name in ("entity_to_id", "relation_to_id"):
        df = pd.read_csv(directory / f"{name}.tsv.gz", sep="\t", dtype={"label": str, "id": int},
                         keep_default_na=False)
        maps[name] = dict(zip(df["label"], df["id"].astype(int), strict=True))
    mapped = pd.read_csv(directory / "numeric_triples.tsv.gz", sep="\t", dtype=int).values
    return TriplesFactory(mapped_triples=torch.as_tensor(mapped, dtype=torch.long).reshape(-1, 3), **maps)


def load_pykeen_model(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """The PyKEEN model of an :func:`export_pykeen` directory, with the exported embeddings
    (``pykeen.nn.init.PretrainedInitializer``), and its triples factories.

    :returns: ``(model, {"training": ..., "validation": ..., "testing": ...})``; ``model.score_hrt(hrt [B, 3])``
        gives ``[B, 1]`` scores equal to mmkgc's.
    :raises MMKGCError: not an export directory, PyKEEN missing.
    """
    _pykeen("load a PyKEEN export")
    import pykeen.models
    from pykeen.nn.init import PretrainedInitializer
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise MMKGCError(f"{directory}: not a PyKEEN export of mmkgc (no {MANIFEST})")
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    factories = {name: read_triples_factory(directory / name) for name in SPLIT_NAMES.values()}
    tables = load_file(str(directory / EMBEDDINGS_FILE))
    cls = getattr(pykeen.models, manifest["pykeen_model"])
    model = cls(triples_factory=factories["training"], **manifest["kwargs"],
                entity_initializer=PretrainedInitializer(tables["entity"]),
                relation_initializer=PretrainedInitializer(tables["relation"]), random_seed=0)
    model.eval()
    return model, factories
