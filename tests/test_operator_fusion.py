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


def _model(replace: bool = False, **fusion):
    """The model of ``RAW`` with ``fusion`` keys added to its ``model.fusion`` (``replace``: instead of it)."""
    raw = {**RAW, "model": {**RAW["model"], "fusion": fusion if replace else {**RAW["model"]["fusion"], **fusion}}}
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


def test_residual_concat_from_the_config_adds_the_structural_row_as_it_is():
    """``fusion: {kind: concat, residual_slot: 0, fixed_residual: true}`` (configs/db15k/rotate_text_residual.yaml):
    ``y = s + W [A_text(t); A_visual(v)] + b``, computed here from the stacked vectors, not by the folded path."""
    from mmkgc.nn.fusion import ConcatFusion

    cfg, model = _model(replace=True, kind="concat", residual_slot=0, fixed_residual=True)
    op = model.entities.fusion
    assert isinstance(op, ConcatFusion) and op.fixed_residual
    width = model.scorer.entity_dim
    assert tuple(op.projection.weight.shape) == (width, 2 * width)  # no block for the structural slot
    with torch.no_grad():  # away from the zero bias and the scaled initial weights
        op.projection.bias.add_(0.5)
        op.projection.weight.mul_(7.0)
    ids = torch.tensor([0, 5, 17, 42, 89, 5])
    x, present = stack_modalities(model.entities.structure, model.entities.inputs, ids)
    assert not bool(present.all())
    expected = x[:, 0] + torch.cat([x[:, 1], x[:, 2]], -1) @ op.projection.weight.t() + op.projection.bias
    torch.testing.assert_close(model.entities(ids), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.entities(None)[ids], expected, rtol=1e-5, atol=1e-6)


def test_fixed_residual_without_a_residual_slot_names_the_field():
    with pytest.raises(ConfigError, match=r"model\.fusion: fusion 'concat': fixed_residual needs a residual_slot"):
        _model(replace=True, kind="concat", fixed_residual=True)
