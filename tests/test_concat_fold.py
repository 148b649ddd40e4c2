"""The concat representation's folded projection equals stacking and projecting, values and gradients."""

import pytest
import torch

from mmkgc.features.store import FeatureTable
from mmkgc.models.kge import MultimodalRepresentation
from mmkgc.nn.fusion import ConcatFusion


def _unfolded(rep: MultimodalRepresentation, ids):
    x, present = rep.stacked(ids)
    if rep.fusion is None:
        return x[..., 0, :]
    return rep.fusion(x, present)[0]


@pytest.mark.parametrize("fixed_slot", [None, 0, 1])
@pytest.mark.parametrize("adapter", ["linear", "mlp"])
@pytest.mark.parametrize("with_structure", [True, False])
def test_folded_concat_equals_stack_and_project(adapter, with_structure, fixed_slot):
    """``fixed_slot``: the slot kept as the identity (``ConcatFusion(fixed_residual=True)``), 0 = the structural
    table (or the text table without structure), 1 = a modality."""
    torch.manual_seed(0)
    n, dim = 7, 6
    mods = [FeatureTable(torch.randn(n, 5), "text", torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)),
            FeatureTable(torch.randn(n, 3), "visual", torch.tensor([0, 1, 1, 1, 1, 1, 0], dtype=torch.bool))]
    fusion = None
    if fixed_slot is not None:
        fusion = ConcatFusion(len(mods) + with_structure, dim, residual_slot=fixed_slot, fixed_residual=True)
    rep = MultimodalRepresentation(n, dim, mods, with_structure=with_structure, adapter=adapter, fusion=fusion,
                                   missing={"text": "learned", "visual": "zeros"}).double()
    with torch.no_grad():  # move every parameter off its special initial value (identity block, zero fill)
        for p in rep.parameters():
            p.add_(0.3 * torch.randn_like(p))
    for ids in (None, torch.tensor([4, 0, 2, 2, 6])):
        folded = rep(ids)
        direct = _unfolded(rep, ids)
        torch.testing.assert_close(folded, direct, rtol=1e-12, atol=1e-12)
        weights = torch.randn_like(direct)
        g_folded = torch.autograd.grad((folded * weights).sum(), list(rep.parameters()))
        g_direct = torch.autograd.grad((_unfolded(rep, ids) * weights).sum(), list(rep.parameters()))
        for (name, _), a, b in zip(rep.named_parameters(), g_folded, g_direct):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
    # an absent row is the projection of its fill vector: change the feature row of an absent entity, and the
    # representation of that entity does not move
    before = rep(torch.tensor([2])).detach()
    rep.inputs[0].values[2] += 10.0
    torch.testing.assert_close(rep(torch.tensor([2])), before)


def test_single_modality_without_structure_is_its_adapter_output():
    torch.manual_seed(1)
    mods = [FeatureTable(torch.randn(4, 3), "text", torch.ones(4, dtype=torch.bool))]
    rep = MultimodalRepresentation(4, 2, mods, with_structure=False, missing="zeros")
    torch.testing.assert_close(rep(None), rep.inputs[0].adapter(rep.inputs[0].values))
