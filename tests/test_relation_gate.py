"""AFME's relation gate (MoIFu, methods.md §5.2): ``γ_m = σ(W_g (x_m ⊙ c_r) + b_g)``, ``x̃_m = γ_m ⊙ x_m``, checked
against a hand computation with fixed weights."""

from __future__ import annotations

import math

import pytest
import torch

from mmkgc.nn.fusion import RelationGate


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_relation_gate_matches_the_formula_by_hand():
    gate = RelationGate(dim=2, num_relations=2)
    w = [[0.5, -1.0], [2.0, 0.25]]
    b = [0.1, -0.3]
    c = [[1.0, 2.0], [-0.5, 3.0]]
    with torch.no_grad():
        gate.linear.weight.copy_(torch.tensor(w))
        gate.linear.bias.copy_(torch.tensor(b))
        gate.context.copy_(torch.tensor(c))
    # two entities (relations 1 and 0), M = 2 tokens each, D = 2
    x = [[[1.0, -2.0], [0.5, 0.5]], [[-1.0, 0.0], [2.0, 1.0]]]
    relation = [1, 0]
    out, mean_gate = gate(torch.tensor(x), torch.ones(2, 2, dtype=torch.bool), torch.tensor(relation))
    for e in range(2):
        cr = c[relation[e]]
        for m in range(2):
            xc = [x[e][m][k] * cr[k] for k in range(2)]
            g = [_sigmoid(sum(w[i][k] * xc[k] for k in range(2)) + b[i]) for i in range(2)]
            for i in range(2):
                assert out[e, m, i].item() == pytest.approx(g[i] * x[e][m][i], rel=1e-6)
            assert mean_gate[e, m].item() == pytest.approx(sum(g) / 2, rel=1e-6)


def test_relation_gate_low_rank_is_u_times_v():
    torch.manual_seed(0)
    gate = RelationGate(dim=3, num_relations=1, rank=1)
    v, u = gate.linear[0], gate.linear[1]
    x = torch.randn(4, 2, 3)
    out, _ = gate(x, None, torch.zeros(4, dtype=torch.long))
    xc = x * gate.context[0]
    expected = torch.sigmoid(xc @ (u.weight @ v.weight).T + u.bias) * x
    assert torch.allclose(out, expected, atol=1e-6)


def test_relation_gate_needs_the_relation():
    with pytest.raises(ValueError, match="relation"):
        RelationGate(dim=2, num_relations=1)(torch.zeros(1, 2, 2))
