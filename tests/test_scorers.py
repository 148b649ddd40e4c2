"""Scorers: template tests (all-entity scoring equals per-triple scoring on both sides, for the compiled and the
eager paths), hand-computed values, initialisation ranges, registry and gradient behaviour."""

from __future__ import annotations

import cmath
import math
import warnings

import pytest
import torch

from mmkgc.errors import ConfigError, UnknownNameError
from mmkgc.nn import kernels
from mmkgc.nn import scorers as S
from mmkgc.nn.scorers import ComplEx, DistMult, RotatE, TransE, build_scorer

SPECS = [
    ("transe", {"p": 1}),
    ("transe", {"p": 2}),
    ("transe", {"p": 1, "margin": 3.0, "normalize": True}),
    ("distmult", {}),
    ("complex", {}),
    ("rotate", {"margin": 6.0, "epsilon": 2.0}),
    ("rotate", {"margin": 12.0}),
    ("tucker", {}),
    ("tucker", {"relation_dim": 3, "batch_norm": False}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in SPECS]


def _tables(scorer, n, r, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    ent = (torch.rand(n, scorer.entity_dim, generator=g) * 2 - 1) * scale
    rel = (torch.rand(r, scorer.relation_dim, generator=g) * 2 - 1) * scale
    return ent, rel


def _reference(scorer, h, r, cand, side):
    """score_hrt over every (query, candidate) pair, in float64."""
    h, r, cand = h.double(), r.double(), cand.double()
    if side == "tail":
        return scorer.score_hrt(h[:, None], r[:, None], cand[None])
    return scorer.score_hrt(cand[None], r[:, None], h[:, None])


@pytest.fixture(params=["compiled", "eager"])
def path(request, monkeypatch):
    if request.param == "eager":
        monkeypatch.setenv("MMKGC_NO_COMPILE", "1")
    else:
        monkeypatch.delenv("MMKGC_NO_COMPILE", raising=False)
    return request.param


@pytest.mark.parametrize("name,options", SPECS, ids=IDS)
@pytest.mark.parametrize("shape", [(7, 37, 5), (9, 300, 33)])  # (B, N, dim): partial and full kernel blocks
def test_all_entity_scoring_equals_score_hrt(name, options, shape, path):
    batch, n, dim = shape
    scorer = build_scorer(name, dim, **options).eval()  # eval: TuckER's batch norms and dropouts are per-batch
    ent, rel = _tables(scorer, n, 4)
    g = torch.Generator().manual_seed(1)
    q = ent[torch.randint(n, (batch,), generator=g)]
    r = rel[torch.randint(4, (batch,), generator=g)]
    with torch.no_grad():
        for side in ("tail", "head"):
            got = scorer.score_t(q, r, ent) if side == "tail" else scorer.score_h(ent, r, q)
            assert got.shape == (batch, n) and got.dtype == torch.float32
            ref = _reference(scorer, q, r, ent, side)
            torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-4)
            # score_all dispatches to the same thing
            torch.testing.assert_close(scorer.score_all(q, r, ent, side), got)


@pytest.mark.parametrize("name,options", [s for s in SPECS if s[0] in ("transe", "rotate")],
                         ids=[i for s, i in zip(SPECS, IDS) if s[0] in ("transe", "rotate")])
def test_compiled_kernel_matches_naive_expression(name, options):
    if not S.scorer_kernel_available():
        pytest.skip("no C compiler: the compiled kernel is not available here")
    scorer = build_scorer(name, 50, **options)
    ent, rel = _tables(scorer, 517, 3, seed=5)
    q, r = ent[:13], rel[torch.arange(13) % 3]
    with torch.no_grad():
        for side in ("tail", "head"):
            got = scorer.score_all(q, r, ent, side)
            ref = _reference(scorer, q, r, ent, side)
            rel_err = ((got.double() - ref).abs() / ref.abs().clamp_min(1e-3)).max()
            assert rel_err < 1e-4


def test_transposed_cache_follows_in_place_updates():
    scorer = RotatE(8, margin=6.0)
    ent, rel = _tables(scorer, 40, 2)
    q, r = ent[:3], rel[:1].expand(3, -1)
    with torch.no_grad():
        first = scorer.score_t(q, r, ent)
        ent.mul_(0.5)  # bumps the tensor version: the cached transpose must not be reused
        second = scorer.score_t(q * 0.5, r, ent)
    ref = _reference(scorer, q * 0.5, r, ent, "tail")
    torch.testing.assert_close(second.double(), ref, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(first, second)


def test_float64_and_gradients_use_eager_path():
    scorer = RotatE(6, margin=6.0)
    ent, rel = _tables(scorer, 20, 2)
    ent = ent.double().requires_grad_(True)
    out = scorer.score_t(ent[:4], rel[:2].double().repeat(2, 1), ent)
    assert out.dtype == torch.float64
    out.sum().backward()
    ent_grad = ent.grad.clone()
    ent.grad = None
    ref = scorer.score_hrt(ent[:4, None], rel[:2].double().repeat(2, 1)[:, None], ent[None])
    ref.sum().backward()
    torch.testing.assert_close(ent_grad, ent.grad)


def test_transe_known_values():
    h = torch.tensor([[1.0, 2.0]])
    r = torch.tensor([[0.5, -1.0]])
    t = torch.tensor([[0.0, 0.0]])
    # h + r - t = (1.5, 1.0)
    assert TransE(2, p=1).score_hrt(h, r, t).item() == pytest.approx(-2.5)
    assert TransE(2, p=2).score_hrt(h, r, t).item() == pytest.approx(-math.sqrt(3.25))
    assert TransE(2, p=1, margin=4.0).score_hrt(h, r, t).item() == pytest.approx(1.5)
    with pytest.raises(ConfigError):
        TransE(2, p=3)


def test_distmult_and_complex_known_values():
    h, r, t = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0]), torch.tensor([0.5, 4.0])
    assert DistMult(2).score_hrt(h, r, t).item() == pytest.approx(1.5 - 8.0)
    hc, rc, tc = [1 + 2j, -0.5 + 1j], [0.3 - 1j, 2 + 0.5j], [1 - 1j, 0.25 + 2j]
    expected = sum(a * b * c.conjugate() for a, b, c in zip(hc, rc, tc)).real

    def pack(z):
        return torch.tensor([x.real for x in z] + [x.imag for x in z])

    got = ComplEx(2).score_hrt(pack(hc), pack(rc), pack(tc)).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_rotate_known_values():
    scorer = RotatE(2, margin=6.0, epsilon=2.0)
    # relation embedding value x maps to the angle x / (((6 + 2) / 2) / pi)
    angles = [math.pi / 2, math.pi]
    r = torch.tensor([a * scorer.relation_range / math.pi for a in angles])
    hc, tc = [1 + 0j, 0.5 + 0.5j], [0 + 1j, 0 + 0j]
    expected = 6.0 - sum(abs(h * cmath.exp(1j * a) - t) for h, a, t in zip(hc, angles, tc))
    h = torch.tensor([z.real for z in hc] + [z.imag for z in hc])
    t = torch.tensor([z.real for z in tc] + [z.imag for z in tc])
    assert scorer.score_hrt(h, r, t).item() == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(6.0 - math.sqrt(0.5), abs=1e-9)


def test_rotate_init_ranges_and_widths():
    scorer = RotatE(250, margin=12.0, epsilon=2.0)
    assert (scorer.entity_dim, scorer.relation_dim) == (500, 250)
    ent, rel = torch.empty(1000, 500), torch.empty(50, 250)
    scorer.init_entity_(ent)
    scorer.init_relation_(rel)
    assert ent.abs().max() <= 14.0 / 500 and ent.abs().max() > 0.9 * 14.0 / 500
    assert rel.abs().max() <= 14.0 / 250 and rel.abs().max() > 0.9 * 14.0 / 250
    with pytest.raises(ValueError, match="entity table"):
        scorer.init_entity_(torch.empty(3, 250))
    assert ComplEx(10).entity_dim == 20 and ComplEx(10).relation_dim == 20
    # every scorer answers head queries natively except TuckER (reciprocal relations; head mode in eval only)
    assert [name for name, cls in sorted(S.scorer_resolver.lookup_dict.items()) if not cls.supports_head_mode] == ["tucker"]


def test_score_hrt_broadcasts_negatives_and_has_finite_gradients():
    scorer = RotatE(4, margin=6.0)
    ent, rel = _tables(scorer, 10, 2)
    h = ent[:3].clone().requires_grad_(True)
    r = rel[torch.tensor([0, 1, 0])].clone().requires_grad_(True)
    t = ent[torch.randint(10, (3, 5), generator=torch.Generator().manual_seed(0))]
    scores = scorer.score_hrt(h[:, None], r[:, None], t)
    assert scores.shape == (3, 5)
    # exact zero difference: h rotated by a zero phase equals h itself
    zero = scorer.score_hrt(h, torch.zeros_like(r), h.detach())
    (scores.sum() + zero.sum()).backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(r.grad).all()
    torch.testing.assert_close(zero.detach(), torch.full((3,), 6.0))


def test_registry_and_shape_errors():
    assert isinstance(build_scorer("RotatE", 8, margin=12.0), RotatE)
    with pytest.raises(UnknownNameError, match="known scorers"):
        build_scorer("tucker-x", 8)
    with pytest.raises(ConfigError, match="unknown option"):
        build_scorer("distmult", 8, margin=1.0)
    with pytest.raises(ConfigError):
        build_scorer("distmult", 0)
    scorer = RotatE(4)
    with pytest.raises(ValueError, match="relation embeddings"):
        scorer.score_hrt(torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="expected"):
        scorer.score_t(torch.zeros(2, 8), torch.zeros(3, 4), torch.zeros(5, 8))
    with pytest.raises(ValueError, match="side"):
        scorer.score_all(torch.zeros(2, 8), torch.zeros(2, 4), torch.zeros(5, 8), "middle")


@pytest.mark.parametrize("name", ["rotate", "transe"])
def test_all_entity_scoring_exact_zero_and_nan_propagation(name, path):
    scorer = build_scorer(name, 16, margin=6.0)
    ent, _ = _tables(scorer, 48, 1)
    rel = torch.zeros(8, scorer.relation_dim)  # identity rotation / zero translation
    q = ent[:8].clone()
    ent[40, 3] = float("nan")
    with torch.no_grad():
        for side in ("tail", "head"):
            out = scorer.score_all(q, rel, ent, side)
            assert torch.isnan(out[:, 40]).all()
            assert torch.isfinite(torch.cat([out[:, :40], out[:, 41:]], 1)).all()
            assert torch.equal(out[torch.arange(8), torch.arange(8)], torch.full((8,), 6.0))


def test_scorer_base_is_abstract():
    with pytest.raises(TypeError):
        S.Scorer(4)


def test_rotate_gradients_and_second_order_gradients():
    scorer = RotatE(3, margin=2.0)
    g = torch.Generator().manual_seed(0)
    h = torch.rand(2, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    r = torch.rand(2, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    t = torch.rand(2, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(scorer.score_hrt, (h, r, t))
    assert torch.autograd.gradgradcheck(scorer.score_hrt, (h, r, t))
    re = torch.zeros(3, requires_grad=True)
    S.complex_modulus(re, torch.zeros(3)).sum().backward()
    assert torch.equal(re.grad, torch.zeros(3))


def test_kernel_build_failure_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.delenv("MMKGC_NO_COMPILE", raising=False)
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # "compilers" that always fail: both build routes fail
    monkeypatch.setenv("CC", "false")
    monkeypatch.setattr(kernels, "_state", dict(kernels._state))
    kernels._reset()
    with pytest.warns(RuntimeWarning, match="could not compile"):
        available = S.scorer_kernel_available()
    assert not available
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second build attempt, no second warning
        assert not S.scorer_kernel_available()
    scorer = RotatE(4)
    ent, rel = _tables(scorer, 20, 1)
    with torch.no_grad():
        out = scorer.score_t(ent[:3], rel.expand(3, -1), ent)
    torch.testing.assert_close(out.double(), _reference(scorer, ent[:3], rel.expand(3, -1), ent, "tail"),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["rotate", "transe", "complex"])
def test_all_entity_scoring_under_inference_mode(name, path):
    scorer = build_scorer(name, 8)
    ent, rel = _tables(scorer, 40, 2)
    with torch.no_grad():
        expected = scorer.score_t(ent[:5], rel[torch.arange(5) % 2], ent)
    with torch.inference_mode():
        fused = ent * 1.0  # an inference tensor, like entity vectors fused at evaluation time
        for _ in range(2):
            got = scorer.score_t(fused[:5], rel[torch.arange(5) % 2], fused)
            torch.testing.assert_close(got, expected)
