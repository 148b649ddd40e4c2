"""Template test case of the :class:`~mmkgc.nn.fusion.Fusion` contract: every fusion operator's test class inherits
:class:`FusionTestCase`, sets :attr:`~FusionTestCase.cls` (and :attr:`~FusionTestCase.kwargs`) and supplies
:meth:`~FusionTestCase.expected`, a direct computation of the operator's formula that does not call the operator's
forward.  ``tests/test_fusion_operators.py`` has a meta-test that fails when an operator registered in
``mmkgc.nn.fusion.fusion_resolver`` has no such test class.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from mmkgc.nn.fusion import Fusion, fusion_resolver


class FusionTestCase:
    """Shared checks of the fusion contract (pytest collects the ``Test*`` subclasses, not this base)."""

    #: The operator under test.
    cls: ClassVar[type[Fusion]]
    #: Extra constructor keywords (``dim`` and ``num_modalities`` are always passed).
    kwargs: ClassVar[dict] = {}
    dim: ClassVar[int] = 8
    num_modalities: ClassVar[int] = 3
    num_relations: ClassVar[int] = 5
    batch: ClassVar[int] = 9

    # ------------------------------------------------------------------ what subclasses supply
    def expected(self, fusion: Fusion, x: torch.Tensor, present: torch.Tensor, relation: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(fused [B, D], weights [B, M] or None)`` computed directly from the formula and ``fusion``'s
        parameters (float64 inputs)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def make(self) -> Fusion:
        torch.manual_seed(0)
        fusion = self.cls(dim=self.dim, num_modalities=self.num_modalities, **self.kwargs)
        with torch.no_grad():  # move every parameter away from its (often special) initial value
            for p in fusion.parameters():
                p.add_(0.3 * torch.randn_like(p))
        return fusion.double().eval()

    def inputs(self, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch, self.num_modalities, self.dim, generator=g, dtype=torch.float64)
        present = torch.rand(self.batch, self.num_modalities, generator=g) > 0.4
        present[:, 0] = True  # the structural slot is always present
        present[0] = True  # one complete row
        present[1, 1:] = False  # one row with structure only
        relation = torch.randint(0, self.num_relations, (self.batch,), generator=g)
        return x, present, relation

    # ------------------------------------------------------------------ shared checks
    def test_value_matches_the_direct_computation(self):
        fusion = self.make()
        x, present, relation = self.inputs()
        fused, weights = fusion(x, present, relation)
        want_fused, want_weights = self.expected(fusion, x, present, relation)
        assert fused.shape == (self.batch, self.dim)
        torch.testing.assert_close(fused, want_fused, rtol=1e-9, atol=1e-9)
        if self.cls.has_weights:
            torch.testing.assert_close(weights, want_weights, rtol=1e-9, atol=1e-9)
        else:
            assert weights is None

    def test_weights_sum_to_one_over_present_modalities(self):
        if not self.cls.has_weights:
            pytest.skip(f"{self.cls.__name__} has no weights")
        fusion = self.make()
        x, present, relation = self.inputs()
        _, weights = fusion(x, present, relation)
        assert weights.shape == (self.batch, self.num_modalities)
        torch.testing.assert_close(weights.sum(-1), torch.ones(self.batch, dtype=weights.dtype))
        assert torch.all(weights[~present] == 0)
        assert torch.all(weights[1, 1:] == 0) and weights[1, 0] == 1

    def test_absent_modality_has_no_influence_and_no_gradient(self):
        if not self.cls.masks_absent:
            pytest.skip(f"{self.cls.__name__} uses the filled vectors of absent modalities")
        fusion = self.make()
        x, present, relation = self.inputs()
        x = x.requires_grad_(True)
        fused, _ = fusion(x, present, relation)
        (fused * torch.randn_like(fused)).sum().backward()
        assert torch.all(x.grad[~present] == 0)
        assert torch.any(x.grad[present] != 0)
        moved = x.detach().clone()
        moved[~present] = 1e3
        torch.testing.assert_close(fusion(moved, present, relation)[0], fused.detach())

    def test_permuting_the_batch_permutes_the_output(self):
        fusion = self.make()
        x, present, relation = self.inputs()
        perm = torch.randperm(self.batch, generator=torch.Generator().manual_seed(3))
        fused, weights = fusion(x, present, relation)
        fused_p, weights_p = fusion(x[perm], present[perm], relation[perm])
        torch.testing.assert_close(fused_p, fused[perm])
        if weights is not None:
            torch.testing.assert_close(weights_p, weights[perm])

    def test_wrong_number_of_modalities_is_refused(self):
        fusion = self.make()
        x, present, relation = self.inputs()
        with pytest.raises(ValueError, match="modalities"):
            fusion(x[:, :-1], present[:, :-1], relation)

    def test_registered_in_the_resolver(self):
        assert fusion_resolver.lookup(self.cls.__name__) is self.cls
        assert fusion_resolver.lookup(fusion_resolver.normalize_cls(self.cls)) is self.cls


def all_test_classes(base: type = FusionTestCase) -> list[type]:
    """Every (transitive) subclass of ``base`` that names an operator (``cls`` set)."""
    out, todo = [], list(base.__subclasses__())
    while todo:
        c = todo.pop()
        todo.extend(c.__subclasses__())
        if "cls" in vars(c) or any("cls" in vars(b) for b in c.__mro__[1:] if b is not base):
            out.append(c)
    return out
