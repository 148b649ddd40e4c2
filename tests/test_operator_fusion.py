"""``representation: fused`` with any fusion operator of the resolver (not only attention): the config route that
lets a new operator file be used without touching the config or the builders (issue 16's demonstration)."""

import pytest
import torch

from mmkgc.config import parse_config
from mmkgc.errors import ConfigError
from mmkgc.models.kge import KGEModel, stack_modalities
from mmkgc.nn.fusion.low_rank import LowRankFusion
from mmkgc.pipeline import build_model, load_data

RAW = {
    "seed": 3,
    "dataset": {"synthetic": {"num_entities": 90, "num_relations": 3, "seed": 0, "missing_text": 0.3}},
    "model": {"scorer": "rotate", "dim": 6, "representation": "fused", "scorer_options": {"margin": 6.0},
              "modalities": [{"name": "text"}, {"name": "visual"}], "fusion": {"kind": "lowrank", "rank": 3}},
    "training": {"epochs": 1, "batch_size": 64, "num_negatives": 4},
}


def _model(**fusion):
    raw = {**RAW, "model": {**RAW["model"], "fusion": {**RAW["model"]["fusion"], **fusion}}}
    cfg = parse_config(raw)
    return cfg, build_model(cfg, load_data(cfg))


def test_a_resolver_operator_fuses_structure_and_modalities():
    cfg, model = _model()
    assert type(model) is KGEModel
    op = model.entities.fusion
    assert isinstance(op, LowRankFusion) and op.rank == 3 and op.num_modalities == 3  # the extra key reached it
    ids = torch.tensor([0, 5, 17, 42, 89])
    x, present = stack_modalities(model.entities.structure, model.entities.inputs, ids)
    assert not bool(present.all())  # some entities miss a modality: the operator's masking is exercised
    expected, _ = op(x, present)
    torch.testing.assert_close(model.entities(ids), expected, rtol=0, atol=0)
    # the scores are the scorer's on those vectors (one relation-agnostic representation)
    h, t, r = ids[:2], ids[2:4], torch.tensor([1, 2])
    direct = model.scorer.score_hrt(model.entities(h), model.relations(r), model.entities(t))
    torch.testing.assert_close(model.score_hrt(torch.stack([h, r, t], 1)), direct, rtol=1e-6, atol=1e-6)


def test_operator_options_and_method_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"model\.fusion\.ranks"):
        _model(ranks=2)
    with pytest.raises(ConfigError, match="need fusion kind 'attention'"):
        _model(relation_gate=True)
    raw = {**RAW, "training": {**RAW["training"], "adversarial": {"kind": "mat", "mu": 0.1}}}
    cfg = parse_config(raw)
    with pytest.raises(ConfigError, match=r"training\.adversarial: the adversarial methods need model\.fusion\.kind"):
        build_model(cfg, load_data(cfg))
