"""Scores, losses and gradients of every model kind, captured by one version of the code and compared with another.

The proof behind "same numbers" of the single representation stack (issue 13 item 6): run ``capture`` once with
the old code on ``PYTHONPATH`` and once with the new code, then ``compare`` the two files::

    git archive 3fcfa62 src | tar -x -C /tmp/base
    PYTHONPATH=/tmp/base/src python benchmarks/representation_parity.py capture /tmp/old.pt
    PYTHONPATH=$PWD/src      python benchmarks/representation_parity.py capture /tmp/new.pt
    python benchmarks/representation_parity.py compare /tmp/old.pt /tmp/new.pt

(``MMKGC_NO_COMPILE=1`` captures the PyTorch fallback instead of the compiled CPU kernels.)  Every kind is built
from a small synthetic graph with the same seed; per kind the file holds the positive/negative scores of one
negative-sampling batch, the main loss of ``negative_sampling_loss`` (adversarial terms included) plus the L2 term,
the gradient of that loss for every parameter, ``score_hrt``, all-entity tail and head scores of the test queries
(the evaluator's ``score_fn``), sampled-candidate scores, and the 1-N loss with its gradients.  ``compare`` prints
the largest absolute and relative difference per kind and quantity, and exits 1 when one exceeds ``--atol``.
Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torch.nn.functional as F

BASE = {
    "dataset": {"synthetic": {"num_entities": 80, "num_relations": 5, "seed": 1, "missing_text": 0.3,
                              "missing_visual": 0.4, "unseen_entity_share": 0.1}},
    "model": {"scorer": "rotate", "dim": 6, "scorer_options": {"margin": 6.0}},
    "training": {"epochs": 1, "batch_size": 16, "num_negatives": 3},
}
MODS = [{"name": "text"}, {"name": "visual"}]
FUSED = {"representation": "fused", "modalities": MODS}
ATT = {"kind": "attention"}
#: kind -> (model section overrides, training section overrides)
KINDS = {
    "rotate": ({}, {}),
    "transe_l1": ({"scorer": "transe", "scorer_options": {"p": 1, "margin": 6.0}}, {}),
    "distmult": ({"scorer": "distmult", "scorer_options": {}}, {}),
    "complex_reciprocal": ({"scorer": "complex", "scorer_options": {}, "reciprocal": True}, {}),
    "concat": ({"representation": "concat", "modalities": MODS}, {}),
    "concat_mlp": ({"representation": "concat", "modalities": MODS, "adapter": "mlp"}, {}),
    "concat_unseen": ({"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality",
                                                                                    "align_weight": 0.5}}, {}),
    "adamf": ({**FUSED, "trainable_features": True, "fusion": ATT}, {}),
    "adamf_distmult": ({**FUSED, "trainable_features": True, "fusion": ATT, "scorer": "distmult",
                        "scorer_options": {}}, {}),
    "native": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True}}, {}),
    "native_transe": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True},
                       "scorer": "transe", "scorer_options": {"p": 1, "margin": 6.0}}, {}),
    "native_distmult": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True},
                         "scorer": "distmult", "scorer_options": {}}, {}),
    "native_unseen": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True},
                       "unseen": {"mode": "modality"}}, {}),
    "afme": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True, "confidence": "l2",
                                                      "relation_gate": True}}, {}),
    "afme_low_rank": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True,
                                                               "confidence": "l2", "relation_gate": True,
                                                               "gate_rank": 3}}, {}),
    "adamf_mat": ({**FUSED, "trainable_features": True, "fusion": ATT},
                  {"adversarial": {"kind": "mat", "mu": 0.1}}),
    "native_wgan_gp": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True}},
                       {"adversarial": {"kind": "wgan_gp", "mu": 0.1, "gp_target": "modality"}}),
    "afme_moien": ({**FUSED, "adapter": "mlp", "fusion": {**ATT, "relation_temperature": True, "confidence": "l2",
                                                            "relation_gate": True}},
                   {"adversarial": {"kind": "moien", "mu": 0.1}}),
    "rgcn": ({"representation": "rgcn", "scorer": "distmult", "scorer_options": {}, "gnn": {"hidden_dims": [8]}},
             {}),
    "imvia": ({"method": "imvia", "reciprocal": True, "modalities": [{"name": "text"}], "dim": 8,
               "imvia": {"num_experts": 2}, "scorer": "tucker", "scorer_options": {}},
              {"loop": "one_to_n", "loss": "bce"}),
}


def build(kind: str):
    from mmkgc.config import parse_config
    from mmkgc.pipeline import build_model, load_data

    model, training = KINDS[kind]
    d = copy.deepcopy(BASE)
    d["model"].update(copy.deepcopy(model))
    d["training"].update(copy.deepcopy(training))
    if kind == "imvia":
        for key in ("scorer", "scorer_options"):
            d["model"].pop(key)
    cfg = parse_config(d)
    data = load_data(cfg)
    torch.manual_seed(0)
    m = build_model(cfg, data)
    with torch.no_grad():  # move gates / temperatures / zero-initialised layers away from their start
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return cfg, data, m


def grads(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def capture_kind(kind: str) -> dict[str, torch.Tensor]:
    from mmkgc.training.losses import SelfAdversarialSigmoidLoss

    _, data, model = build(kind)
    out: dict[str, torch.Tensor] = {}
    triples = data.triples
    g = torch.Generator().manual_seed(3)
    b, k = 12, 4
    pos = triples.train[torch.randperm(triples.train.shape[0], generator=g)[:b]]
    neg = torch.randint(0, triples.num_entities, (b, k), generator=g)
    neg[0, 0] = pos[0, 2]
    tail = torch.rand(b, k, generator=g) < 0.5
    model.train()
    if kind != "imvia":
        torch.manual_seed(11)
        p, n = model.score_positives_and_negatives(pos, neg, tail)
        out["pos"], out["neg"] = p.detach(), n.detach()
        torch.manual_seed(11)
        loss, _ = model.negative_sampling_loss(pos, neg, tail, SelfAdversarialSigmoidLoss(1.0))
        loss = loss + 0.01 * model.l2_regularization(pos, neg, tail)
        out["ns_loss"] = loss.detach()
        for name, grad in grads(model, loss).items():
            out[f"ns_grad.{name}"] = grad
        torch.manual_seed(11)
        h, _, t = model.embed(pos)
        out["embed"] = torch.cat([h, t], 1).detach()
        out["score_hrt"] = model.score_hrt(pos).detach()
    # 1-N loss (mixed head and tail queries) and its gradients
    predict_tail = torch.rand(b, generator=g) < 0.5
    queries = pos.clone()
    labels = (torch.rand(b, triples.num_entities, generator=g) < 0.05).float()
    torch.manual_seed(11)
    loss, _, ents = model.one_to_n_loss(queries, predict_tail, labels,
                                        lambda x, y: F.binary_cross_entropy_with_logits(x, y))
    loss = loss + 0.01 * ents.float().pow(2).mean()
    out["1n_loss"] = loss.detach()
    for name, grad in grads(model, loss).items():
        out[f"1n_grad.{name}"] = grad
    model.eval()
    with torch.no_grad():
        fn = model.score_fn()
        test = triples.test[:40]
        out["eval_tail"] = fn(test, "tail").float()
        out["eval_head"] = fn(test, "head").float()
        if hasattr(fn, "score_sides"):
            both = fn.score_sides(test, ("head", "tail"))
            out["eval_sides_head"], out["eval_sides_tail"] = both["head"], both["tail"]
        if hasattr(fn, "score_candidates"):
            cand = torch.randint(0, triples.num_entities, (test.shape[0], 7), generator=g)
            out["cand_tail"] = fn.score_candidates(test, "tail", cand).float()
            out["cand_head"] = fn.score_candidates(test, "head", cand).float()
        if kind != "imvia":
            out["entities_all"] = model.entities(None).float() if not getattr(model.entities, "relation_aware",
                                                                                 False) else torch.zeros(1)
    return out


def capture(path: str, kinds: list[str]) -> None:
    torch.set_num_threads(1)
    result = {}
    for kind in kinds:
        for name, value in capture_kind(kind).items():
            result[f"{kind}/{name}"] = value.detach().cpu().contiguous()
    torch.save(result, path)
    print(f"captured {len(kinds)} kinds, {len(result)} tensors -> {path}")


def compare(a_path: str, b_path: str, atol: float) -> int:
    a = torch.load(a_path, weights_only=True)
    b = torch.load(b_path, weights_only=True)
    worst = 0.0
    missing = sorted(set(a) ^ set(b))
    for key in missing:
        print(f"only in {'first' if key in a else 'second'}: {key}")
    rows: dict[str, list[float]] = {}
    for key in sorted(set(a) & set(b)):
        x, y = a[key].double(), b[key].double()
        if x.shape != y.shape:
            print(f"shape differs: {key} {tuple(x.shape)} vs {tuple(y.shape)}")
            worst = float("inf")
            continue
        diff = float((x - y).abs().max()) if x.numel() else 0.0
        scale = float(x.abs().max()) if x.numel() else 0.0
        kind, name = key.split("/", 1)
        group = name.split(".")[0]
        row = rows.setdefault(f"{kind}/{group}", [0.0, 0.0, 0, 0])
        row[0] = max(row[0], diff)
        row[1] = max(row[1], diff / scale if scale else 0.0)
        row[2] += 1
        row[3] += int(torch.equal(x, y))
        worst = max(worst, diff)
    print(f"{'kind/quantity':40s} {'tensors':>7s} {'identical':>9s} {'max |diff|':>11s} {'max rel':>9s}")
    for key, (diff, rel, count, same) in rows.items():
        print(f"{key:40s} {count:7d} {same:9d} {diff:11.3g} {rel:9.3g}")
    print(f"largest absolute difference: {worst:.3g}")
    return 1 if worst > atol or missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="write the numbers of the code on PYTHONPATH")
    cap.add_argument("output")
    cap.add_argument("--kinds", nargs="*", default=list(KINDS))
    cmp_ = sub.add_parser("compare", help="compare two captures")
    cmp_.add_argument("first")
    cmp_.add_argument("second")
    cmp_.add_argument("--atol", type=float, default=1e-5)
    args = parser.parse_args(argv)
    if args.command == "capture":
        capture(args.output, args.kinds)
        return 0
    return compare(args.first, args.second, args.atol)


if __name__ == "__main__":
    sys.exit(main())
