"""One template test class per registered fusion operator (the shared checks live in ``fusion_cases.py``), and the
meta-test that fails when an operator in ``fusion_resolver`` has none."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from fusion_cases import FusionTestCase, all_test_classes
from torch import nn

from mmkgc.nn.fusion import (
    ConcatFusion,
    ModalitySelfAttention,
    TanhAttentionFusion,
    fusion_resolver,
)
from mmkgc.nn.fusion.low_rank import LowRankFusion


def direct_masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``exp(l_m) / Σ_{present} exp(l_k)`` on present entries, 0 elsewhere (written without ``masked_fill``)."""
    e = torch.exp(logits - logits.max(-1, keepdim=True).values) * present
    return e / e.sum(-1, keepdim=True)


class TestConcatFusion(FusionTestCase):
    cls = ConcatFusion

    def expected(self, fusion, x, present, relation):
        flat = torch.cat([x[:, m] for m in range(self.num_modalities)], -1)  # [x_1; ...; x_M]
        return flat @ fusion.projection.weight.t() + fusion.projection.bias, None


class TestConcatFusionResidual(TestConcatFusion):
    kwargs: ClassVar[dict] = {"residual_slot": 0}

    def test_starts_as_the_identity_on_the_residual_slot(self):
        torch.manual_seed(0)
        fusion = ConcatFusion(num_modalities=2, dim=4, residual_slot=0, other_scale=0.0)
        x = torch.randn(3, 2, 4)
        torch.testing.assert_close(fusion(x)[0], x[:, 0])


class TestConcatFusionFixedResidual(TestConcatFusion):
    """``y = x_r + W' [x_m]_{m != r} + b``: the residual slot (here the middle one) enters as it is."""

    kwargs: ClassVar[dict] = {"residual_slot": 1, "fixed_residual": True}

    def expected(self, fusion, x, present, relation):
        others = torch.cat([x[:, 0], x[:, 2]], -1)  # slots 0 and 2, in order
        return x[:, 1] + others @ fusion.projection.weight.t() + fusion.projection.bias, None

    def test_no_weights_for_the_fixed_slot(self):
        fusion = ConcatFusion(num_modalities=3, dim=4, residual_slot=1, fixed_residual=True, other_scale=0.0)
        assert tuple(fusion.projection.weight.shape) == (4, 8)  # two learned blocks, not three
        x = torch.randn(5, 3, 4)
        torch.testing.assert_close(fusion(x)[0], x[:, 1])  # starts as the residual slot, exactly
        assert fusion.block(1) is None
        assert fusion.block(0).data_ptr() == fusion.projection.weight.data_ptr()
        torch.testing.assert_close(fusion.block(2), fusion.projection.weight[:, 4:])

    def test_needs_a_residual_slot(self):
        with pytest.raises(ValueError, match="fixed_residual needs a residual_slot"):
            ConcatFusion(num_modalities=2, dim=4, fixed_residual=True)


class TestTanhAttentionFusion(FusionTestCase):
    """AdaMF: ``β = softmax(wᵀ tanh(x_m))`` over present modalities, ``y = Σ β_m x_m``."""

    cls = TanhAttentionFusion

    def expected(self, fusion, x, present, relation):
        logits = (torch.tanh(x) * fusion.w).sum(-1)
        if fusion.confidence == "l2":
            logits = logits * x.pow(2).sum(-1).sqrt()
        if fusion.relation_temperature:
            logits = logits / (1.0 / (1.0 + torch.exp(-fusion.g[relation]))).unsqueeze(-1)
        w = direct_masked_softmax(logits, present)
        return torch.einsum("bm,bmd->bd", w, x), w


class TestTanhAttentionFusionNativE(TestTanhAttentionFusion):
    """NativE: relation temperature ``τ_r = σ(g_r)``."""

    kwargs: ClassVar[dict] = {"relation_temperature": True, "num_relations": FusionTestCase.num_relations, "init_range": 2.0}


class TestTanhAttentionFusionAFME(TestTanhAttentionFusion):
    """AFME: temperature and ``α_m = ‖x_m‖₂`` confidence."""

    kwargs: ClassVar[dict] = {"relation_temperature": True, "num_relations": FusionTestCase.num_relations, "confidence": "l2"}


class TestModalitySelfAttention(FusionTestCase):
    """Per layer ``H ← LayerNorm(H + MHA(H, H, H))`` with absent keys masked, mean over present output tokens; the
    reference runs :class:`torch.nn.MultiheadAttention`'s own forward (the operator uses a packed re-implementation)."""

    cls = ModalitySelfAttention
    kwargs: ClassVar[dict] = {"layers": 2, "heads": 2}

    def expected(self, fusion, x, present, relation):
        h, received = x, torch.zeros(present.shape, dtype=x.dtype)
        for attn, norm in zip(fusion.attention, fusion.norms):
            out, w = attn(h, h, h, key_padding_mask=~present, need_weights=True, average_attn_weights=True)
            h = norm(h + out)
            q = present.to(w.dtype)
            received = received + torch.einsum("bq,bqk->bk", q, w) / q.sum(-1, keepdim=True)
        p = present.to(h.dtype)
        return torch.einsum("bm,bmd->bd", p, h) / p.sum(-1, keepdim=True), received / len(fusion.attention)


def test_every_registered_fusion_has_a_test_class():
    tested = {c.cls for c in all_test_classes()}
    missing = sorted(c.__name__ for c in set(fusion_resolver.lookup_dict.values()) - tested)
    assert not missing, f"fusion operators without a FusionTestCase subclass: {missing}"


def test_meta_test_detects_an_operator_without_a_test_class():
    class Untested(nn.Module):
        pass

    tested = {c.cls for c in all_test_classes()}
    assert ConcatFusion in tested and Untested not in tested


def test_resolver_builds_every_operator_from_the_same_keywords():
    for name in sorted(fusion_resolver.lookup_dict):
        cls = fusion_resolver.lookup(name)
        extra = {"num_relations": 3} if cls is TanhAttentionFusion else {}
        op = fusion_resolver.make(name, dim=8, num_modalities=2, **extra)
        fused, _ = op(torch.randn(4, 2, 8), torch.ones(4, 2, dtype=torch.bool), torch.zeros(4, dtype=torch.long))
        assert fused.shape == (4, 8)
    assert fusion_resolver.lookup("attention") is TanhAttentionFusion
    assert fusion_resolver.lookup("self_attention") is ModalitySelfAttention


class TestLowRankFusion(FusionTestCase):
    """LMF (Liu et al., ACL 2018): ``y = Σ_i λ_i ∏_{m present} (W_m^(i) [x_m; 1]) + b``, by loops over rows, ranks
    and modalities."""

    cls = LowRankFusion
    kwargs: ClassVar[dict] = {"rank": 3}

    def expected(self, fusion, x, present, relation):
        out = []
        for b in range(self.batch):
            y = fusion.bias.clone()
            for i in range(fusion.rank):
                term = torch.ones(self.dim, dtype=x.dtype)
                for m in range(self.num_modalities):
                    if present[b, m]:
                        term = term * (torch.cat([x[b, m], torch.ones(1, dtype=x.dtype)]) @ fusion.factors[m, i])
                y = y + fusion.rank_weights[0, i] * term
            out.append(y)
        return torch.stack(out), None

    def test_a_single_present_modality_is_an_affine_map_of_it(self):
        fusion = self.make()
        x, _, relation = self.inputs()
        present = torch.zeros(self.batch, self.num_modalities, dtype=torch.bool)
        present[:, 0] = True
        w = torch.einsum("r,rkd->kd", fusion.rank_weights[0], fusion.factors[0])  # Σ_i λ_i W_0^(i): [D + 1, D]
        want = x[:, 0] @ w[:-1] + w[-1] + fusion.bias
        torch.testing.assert_close(fusion(x, present, relation)[0], want)
