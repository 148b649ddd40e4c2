"""The nn layer's resolvers, and a scorer added by writing only its score function."""

from __future__ import annotations

import pytest
import torch

from mmkgc.errors import UnknownNameError
from mmkgc.nn import distances
from mmkgc.nn.adapters import LinearAdapter, MLPAdapter, adapter_resolver, build_adapter
from mmkgc.nn.adversarial import (
    ModalityGenerator,
    MoIEnGenerator,
    SharedModalityGenerator,
    generator_resolver,
    make_generator,
)
from mmkgc.nn.fusion import ConcatFusion, TanhAttentionFusion, fusion_resolver
from mmkgc.nn.scorers import (
    RotatE,
    Scorer,
    TransE,
    TuckER,
    build_scorer,
    scorer_resolver,
)


class SquaredTransE(Scorer):
    """TransE with the squared Euclidean dissimilarity, ``f(h, r, t) = -‖h + r - t‖₂²`` (Bordes et al., NeurIPS 2013,
    the L2 variant of the energy) -- written as a user would: only the score function."""

    def _score_hrt(self, h, r, t):
        return -(h + r - t).pow(2).sum(-1)


@pytest.fixture
def registered():
    scorer_resolver.register(SquaredTransE)
    yield
    scorer_resolver.lookup_dict.pop("squaredtranse")


def test_the_built_in_names():
    assert sorted(scorer_resolver.lookup_dict) == ["complex", "distmult", "mlplink", "rotate", "transe", "tucker"]
    assert scorer_resolver.lookup(None) is RotatE and scorer_resolver.lookup("TuckER") is TuckER
    assert sorted(adapter_resolver.lookup_dict) == ["linear", "mlp"]
    assert adapter_resolver.lookup("mlp") is MLPAdapter and isinstance(build_adapter("linear", 3, 2), LinearAdapter)
    # the generators answer to their method's ``training.adversarial.generator`` kind
    assert [generator_resolver.lookup(k) for k in ("mat", "wgan_gp", "moien")] == [
        ModalityGenerator, SharedModalityGenerator, MoIEnGenerator]
    assert [generator_resolver.lookup(k) for k in ("per_modality", "shared")] == [
        ModalityGenerator, SharedModalityGenerator]
    assert fusion_resolver.lookup("concat") is ConcatFusion and fusion_resolver.lookup("attention") is TanhAttentionFusion


def test_unknown_names_raise_the_library_error():
    with pytest.raises(UnknownNameError, match="known scorers: complex, distmult, mlplink, rotate, transe, tucker"):
        build_scorer("transh", 4)
    with pytest.raises(UnknownNameError, match="known: linear, mlp"):
        build_adapter("gru", 3, 2)


def test_a_new_scorer_needs_only_its_score_function(registered, monkeypatch):
    scorer = build_scorer("SquaredTransE", 3)
    assert isinstance(scorer, SquaredTransE) and not scorer.factorises
    g = torch.Generator().manual_seed(0)
    h, r = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    cand = torch.randn(11, 3, generator=g)
    # hand-computed: one triple
    assert scorer.score_hrt(torch.tensor([1.0, 0, 0]), torch.tensor([0, 2.0, 0]), torch.tensor([0, 0, 3.0])) == -14
    want_t = torch.tensor([[-sum((h[b, k] + r[b, k] - cand[n, k]) ** 2 for k in range(3)) for n in range(11)]
                           for b in range(4)])
    want_h = torch.tensor([[-sum((cand[n, k] + r[b, k] - h[b, k]) ** 2 for k in range(3)) for n in range(11)]
                           for b in range(4)])
    monkeypatch.setattr(distances, "EAGER_CHUNK_ELEMENTS", 4 * 3 * 2)  # 1-N scoring in chunks of two candidates
    torch.testing.assert_close(scorer.score_t(h, r, cand), want_t)
    torch.testing.assert_close(scorer.score_h(cand, r, h), want_h)
    torch.testing.assert_close(scorer.score_all(h, r, cand, "tail"), want_t)
    assert scorer.score_t(h, r, cand[:0]).shape == (4, 0)
    with pytest.raises(ValueError, match="last dimension 3"):
        scorer.score_t(h, r, torch.randn(5, 4))


def test_default_one_to_n_scoring_matches_the_built_in_overrides():
    """The base class's broadcast 1-N scoring equals TransE's own (kernel / GEMM) paths."""
    for p in (1, 2):
        scorer = TransE(5, p=p, margin=2.0)
        g = torch.Generator().manual_seed(p)
        h, r, cand = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g), torch.randn(9, 5, generator=g)
        torch.testing.assert_close(Scorer._score_t(scorer, h, r, cand), scorer.score_t(h, r, cand),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(Scorer._score_h(scorer, cand, r, h), scorer.score_h(cand, r, h),
                                   rtol=1e-5, atol=1e-5)


def test_make_generator_passes_each_class_only_its_options():
    """One adversarial section builds any generator: the MLP generators take ``hidden_dim`` (and ignore
    ``layers`` / ``heads``), MoIEn takes ``layers`` / ``heads`` (and ignores ``hidden_dim``); the sizes of the built
    parameters show which options arrived."""
    opts = dict(noise_dim=3, hidden_dim=7, layers=1, heads=2)
    per = make_generator("per_modality", 4, 3, **opts)
    assert isinstance(per, ModalityGenerator) and len(per.nets) == 2
    assert per.nets[0][0].weight.shape == (7, 3 + 4)          # Linear(noise + D -> hidden)
    shared = make_generator("shared", 4, 3, **opts)
    assert shared.net[0].weight.shape == (7, 3 + 3 * 4)       # Linear(noise + M D -> hidden)
    assert shared.net[2].weight.shape == (2 * 4, 7)           # -> (M - 1) D
    moien = make_generator("moien", 4, 3, **opts)
    assert moien.condition.weight.shape == (4, 4 + 3)         # W_e [e_s; z]
    assert len(moien.attention.attention) == 1 and moien.attention.attention[0].num_heads == 2
    with pytest.raises(KeyError):
        make_generator("gan", 4, 3)


@pytest.mark.parametrize("where", [
    "mmkgc.nn.scorers:scorer_resolver", "mmkgc.nn.fusion:fusion_resolver", "mmkgc.nn.adapters:adapter_resolver",
    "mmkgc.nn.adversarial:generator_resolver", "mmkgc.losses:loss_resolver", "mmkgc.training.loops:loop_resolver",
    "mmkgc.training.tracking:tracker_resolver"])
def test_every_declared_synonym_resolves_to_its_class(where):
    """class-resolver matches a synonym only in its normalised spelling (``bce_label_smoothing`` once silently
    never matched): every spelling a class declares in ``synonyms``, and its normalised form, must find that
    class, in every family."""
    import importlib

    from class_resolver import normalize_string

    module, name = where.split(":")
    resolver = getattr(importlib.import_module(module), name)
    declared = [(synonym, cls) for cls in resolver for synonym in getattr(cls, "synonyms", None) or ()]
    declared += list((resolver.synonyms or {}).items())       # synonyms given to the resolver itself
    for synonym, cls in declared:
        assert resolver.lookup(synonym) is cls, (where, synonym)
        assert resolver.lookup(normalize_string(synonym)) is cls, (where, synonym)
        assert resolver.lookup(synonym.upper()) is cls, (where, synonym)
