"""Modality substitutes for entities without training triples (``model.unseen``, :mod:`mmkgc.models.inductive`):
values of the substitution, the per-step sample, the alignment term, gradients, evaluation and checkpoints."""

from pathlib import Path

import pytest
import torch
import yaml

from mmkgc.config import load_config, parse_config
from mmkgc.errors import ConfigError
from mmkgc.models.fused import FusedKGEModel, FusedRepresentation
from mmkgc.features.store import FeatureTable
from mmkgc.models.inductive import (ModalityStructure, alignment_error, attach_modality_structure, pop_auxiliary_losses,
                                    sparsest_cut, training_degree)
from mmkgc.models.kge import KGEModel, MultimodalRepresentation
from mmkgc.nn.scorers import build_scorer

N, D = 6, 4
SEEN = torch.tensor([True, True, True, True, False, False])  # entity 4: unseen with text; 5: unseen, no modality


def _features() -> list[FeatureTable]:
    g = torch.Generator().manual_seed(0)
    text = torch.randn(N, 3, generator=g)
    present = torch.tensor([True, True, False, True, True, False])
    return [FeatureTable(text, "text", present)]


def _concat(share: float = 0.5, dropout: bool = True, align_weight: float = 0.0, seed: int = 0):
    torch.manual_seed(0)
    rep = MultimodalRepresentation(N, D, _features(), with_structure=True)
    structure = attach_modality_structure(rep, SEEN, share=share, dropout=dropout, align_weight=align_weight,
                                          seed=seed, projection="linear")
    with torch.no_grad():
        structure.projection.weight.copy_(torch.arange(D * D, dtype=torch.float32).reshape(D, D) / 10 - 0.7)
        structure.projection.bias.copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
    return rep, structure


def _by_hand(rep, e: int) -> torch.Tensor:
    """``W a(e) + b`` with the adapter written out: ``a = A x + c`` (present) or the learned fill (absent)."""
    m = rep.inputs[0]
    lin = m.adapter.linear
    a = lin.weight @ m.values[e] + lin.bias if bool(m.present[e]) else m.missing
    s = rep.structure.projection
    return s.weight @ a + s.bias


def test_eval_rows_seen_use_their_row_unseen_use_the_projection_of_their_features():
    rep, structure = _concat()
    rep.eval()
    rows = structure(None)
    table = structure.embedding.weight
    for e in range(4):  # seen: their own structural row, exactly
        assert torch.equal(rows[e], table[e])
    assert torch.allclose(rows[4], _by_hand(rep, 4), atol=1e-6)  # unseen with text: W a(4) + b
    assert not torch.allclose(rows[4], table[4])
    assert torch.equal(rows[5], table[5])  # unseen without any modality keeps its row
    assert torch.allclose(structure(torch.tensor([4, 0, 4])), rows[[4, 0, 4]], atol=1e-6)
    # the fused concat vector of the unseen entity is computed from the substitute (folded path), by hand:
    # P [s~; a] + b
    P = rep.fusion.projection
    m = rep.inputs[0]
    a = m.adapter.linear.weight @ m.values[4] + m.adapter.linear.bias
    expected = P.weight @ torch.cat([_by_hand(rep, 4), a]) + P.bias
    assert torch.allclose(rep(torch.tensor([4]))[0], expected, atol=1e-5)
    assert torch.allclose(rep(None)[4], expected, atol=1e-5)


def test_zero_initialised_projection_and_untouched_init():
    torch.manual_seed(0)
    plain = MultimodalRepresentation(N, D, _features())
    torch.manual_seed(0)
    rep = MultimodalRepresentation(N, D, _features())
    state = torch.get_rng_state()
    s = attach_modality_structure(rep, SEEN)
    assert torch.equal(torch.get_rng_state(), state)  # attaching draws no random numbers
    assert torch.equal(s.embedding.weight, plain.structure.embedding.weight)
    last = s.projection[2]
    assert float(last.weight.abs().sum()) == 0.0 and float(last.bias.abs().sum()) == 0.0
    assert torch.equal(s.eval()(torch.tensor([4])), torch.zeros(1, D))  # an unseen entity starts at zero
    # state-dict keys of the model without the option are kept (the structural table is the same parameter)
    assert set(plain.state_dict()) <= set(rep.state_dict())
    assert set(rep.state_dict()) - set(plain.state_dict()) == {
        "structure.projection.0.weight", "structure.projection.0.bias", "structure.projection.2.weight",
        "structure.projection.2.bias", "structure.seen", "structure.draws"}


def test_sample_share_determinism_and_restriction():
    big = 20000
    from mmkgc.models.kge import EmbeddingRepresentation

    feats = [FeatureTable(torch.zeros(big, 2), "text", torch.ones(big, dtype=torch.bool))]
    inputs = torch.nn.ModuleList([__import__("mmkgc.models.kge", fromlist=["ModalityInput"]).ModalityInput(f, 3)
                                  for f in feats])
    s = ModalityStructure(EmbeddingRepresentation(big, 3), inputs, torch.ones(big, dtype=torch.bool), share=0.15,
                          seed=7)
    masks = [s.sample_mask(d) for d in range(3)]
    for m in masks:  # Bernoulli(0.15) over 20,000 entities: 3000 +- 50 (sd); 5 sd tolerance
        assert abs(int(m.sum()) - 3000) < 5 * 50.5
    assert not torch.equal(masks[0], masks[1])  # a new sample every draw
    again = ModalityStructure(EmbeddingRepresentation(big, 3), inputs, torch.ones(big, dtype=torch.bool), share=0.15,
                              seed=7)
    assert all(torch.equal(a, again.sample_mask(d)) for d, a in enumerate(masks))  # same seed, same samples
    other = ModalityStructure(EmbeddingRepresentation(big, 3), inputs, torch.ones(big, dtype=torch.bool),
                              share=0.15, seed=8)
    assert not torch.equal(masks[0], other.sample_mask(0))

    # in training: the counter advances per forward pass, the sample only hits seen entities with a modality
    rep, structure = _concat(share=0.5)
    rep.train()
    table = structure.embedding.weight
    for draw in range(6):
        assert int(structure.draws) == draw
        mask = structure.sample_mask(draw) & SEEN & structure.has_modality
        rows = structure(None)
        for e in range(N):  # in training the unseen entity 4 (only ever a negative there) keeps its row
            expect = _by_hand(rep, e) if bool(mask[e]) else table[e]
            assert torch.allclose(rows[e], expect, atol=1e-6), (draw, e)
    rep.eval()
    structure(None)
    assert int(structure.draws) == 6  # evaluation draws nothing


def test_training_degree_and_the_sparsest_cut_by_hand():
    # (h, r, t) rows: entity 0 in 3 triples, 1 in 2, 2 in 1, 3 in 2 (one self-loop, counted twice), 4 and 5 in none
    train = torch.tensor([[0, 0, 1], [0, 1, 2], [1, 0, 0], [3, 2, 3]])
    assert training_degree(train, 6).tolist() == [3, 2, 1, 2, 0, 0]
    assert training_degree(torch.zeros(0, 3, dtype=torch.long), 3).tolist() == [0, 0, 0]
    degrees = torch.tensor([8, 1, 5, 2, 1, 3])  # sorted: 1 1 2 3 5 8
    assert sparsest_cut(degrees, 0.5) == 2  # ceil(3.0) = 3 smallest -> the third, 2
    assert sparsest_cut(degrees, 0.51) == 3  # ceil(3.06) = 4 -> 3
    assert sparsest_cut(degrees, 0.1) == 1  # at least one entity: ceil(0.6) = 1 -> 1 (both entities of degree 1)
    assert sparsest_cut(degrees, 1.0) == 8
    assert sparsest_cut(torch.tensor([], dtype=torch.long), 0.5) == 0


def test_sparsest_restricts_the_draw_to_the_sparse_seen_entities():
    # degrees of the 6 entities: 0 and 1 sparse (1, 2), 2 sparse but without a modality, 3 frequent, 4-5 unseen
    degree = torch.tensor([1, 2, 1, 9, 0, 0])
    torch.manual_seed(0)
    rep = MultimodalRepresentation(N, D, _features(), with_structure=True)
    structure = attach_modality_structure(rep, SEEN, share=0.5, seed=0, projection="linear", degree=degree,
                                          sparsest=0.5)
    # seen with a modality: entities 0, 1, 3 with degrees 1, 2, 9 -> ceil(1.5) = 2 smallest -> cut 2 -> {0, 1}
    assert structure.eligible.tolist() == [True, True, False, False, False, False]
    assert "eligible" not in structure.state_dict()  # derived from the training triples, not saved
    rep.train()
    table = structure.embedding.weight
    hit = set()
    for draw in range(8):
        mask = structure.sample_mask(draw)
        rows = structure(None)
        for e in range(N):
            substituted = not torch.equal(rows[e], table[e])
            assert substituted == (bool(mask[e]) and e in (0, 1)), (draw, e)
            if substituted:
                hit.add(e)
    assert hit == {0, 1}
    # sparsest 1 (the default): every seen entity with a modality, as before the option existed
    every = attach_modality_structure(MultimodalRepresentation(N, D, _features()), SEEN, degree=degree)
    assert every.eligible.tolist() == (SEEN & every.has_modality).tolist() == [True, True, False, True, False, False]
    with pytest.raises(ValueError, match="training degrees"):
        attach_modality_structure(MultimodalRepresentation(N, D, _features()), SEEN, sparsest=0.5)
    with pytest.raises(ValueError, match="sparsest must lie"):
        attach_modality_structure(MultimodalRepresentation(N, D, _features()), SEEN, degree=degree, sparsest=0.0)
    with pytest.raises(ValueError, match="degree has 3 entries"):
        attach_modality_structure(MultimodalRepresentation(N, D, _features()), SEEN, degree=degree[:3],
                                  sparsest=0.5)


def test_alignment_value_only_trains_the_projection():
    rep, structure = _concat(share=0.5, dropout=False, align_weight=2.0)
    rep.train()
    mask = structure.sample_mask(0) & SEEN & structure.has_modality
    assert bool(mask.any())
    rows = structure(None)
    table = structure.embedding.weight
    # without dropout the seen rows are the table's (the unseen one is still substituted)
    assert torch.equal(rows[:4], table[:4])
    picked = mask.nonzero(as_tuple=True)[0].tolist()
    pred = torch.stack([_by_hand(rep, e) for e in picked])
    target = table[picked]
    expected = float(((pred - target) ** 2).sum().detach() / (target ** 2).sum().detach())
    total, terms = pop_auxiliary_losses([structure])
    assert float(terms["unseen_align"]) == pytest.approx(expected, rel=1e-5)
    assert float(total) == pytest.approx(2.0 * expected, rel=1e-5)
    total.backward()
    assert structure.projection.weight.grad is not None and float(structure.projection.weight.grad.abs().sum()) > 0
    assert structure.embedding.weight.grad is None  # the target is detached
    assert rep.inputs[0].adapter.linear.weight.grad is None  # so are the modality vectors
    assert pop_auxiliary_losses([structure]) == (None, {})  # popped once
    assert alignment_error(torch.zeros(2, 3), torch.ones(2, 3)) == pytest.approx(1.0)


def test_gradients_reach_the_projection_through_the_kgc_score():
    rep, structure = _concat(share=0.5)
    model = KGEModel(N, 2, build_scorer("distmult", D), rep)
    model.train()
    dropped = (structure.sample_mask(0) & SEEN & structure.has_modality).nonzero(as_tuple=True)[0].tolist()
    kept = [e for e in range(4) if e not in dropped]
    assert dropped and kept
    e, other = dropped[0], kept[0]
    score = model.score_hrt(torch.tensor([[other, 1, e]]))  # tail e is dropped: its substitute enters the score
    score.sum().backward()
    assert float(structure.projection.weight.grad.abs().sum()) > 0
    assert float(rep.inputs[0].adapter.linear.weight.grad.abs().sum()) > 0
    assert float(structure.embedding.weight.grad[e].abs().sum()) == 0.0  # the replaced row gets nothing
    assert float(structure.embedding.weight.grad[other].abs().sum()) > 0.0


def test_mlp_projection_values():
    torch.manual_seed(0)
    rep = MultimodalRepresentation(N, D, _features())
    structure = attach_modality_structure(rep, SEEN, projection="mlp")
    first, last = structure.projection[0], structure.projection[2]
    assert float(last.weight.abs().sum()) == 0.0  # starts at zero
    with torch.no_grad():
        last.weight.normal_()
        last.bias.normal_()
    rep.eval()
    m = rep.inputs[0]
    a = m.adapter.linear.weight @ m.values[4] + m.adapter.linear.bias
    expected = last.weight @ torch.relu(first.weight @ a + first.bias) + last.bias
    assert torch.allclose(structure(torch.tensor([4]))[0], expected, atol=1e-5)


def test_evaluation_scores_use_the_substitute_automatically():
    rep, structure = _concat()
    model = KGEModel(N, 2, build_scorer("distmult", D), rep).eval()
    scores = model.score_fn()(torch.tensor([[0, 1, 0]]), "tail")[0]
    # independent: rebuild the fused vectors by hand with the substitute in place of row 4
    with torch.no_grad():
        P = rep.fusion.projection
        m = rep.inputs[0]
        ents = []
        for e in range(N):
            s = _by_hand(rep, e) if e == 4 else structure.embedding.weight[e]
            a = m.adapter.linear.weight @ m.values[e] + m.adapter.linear.bias if bool(m.present[e]) else m.missing
            ents.append(P.weight @ torch.cat([s, a]) + P.bias)
        ents = torch.stack(ents)
        expected = (ents[0] * model.relations.weight[1]) @ ents.T
    assert torch.allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("gate", [False, True])
def test_fused_representations_take_the_substitute_in_the_structural_slot(gate):
    torch.manual_seed(0)
    rep = FusedRepresentation(N, D, _features(), num_relations=2, adapter="mlp", relation_temperature=gate,
                              relation_gate=gate, confidence="l2" if gate else "none")
    structure = attach_modality_structure(rep, SEEN, share=0.5)
    with torch.no_grad():
        structure.projection[2].weight.normal_()
    rep.eval()
    x, _ = rep.raw_components(torch.arange(N))
    assert torch.allclose(x[4, 0], structure.projection(rep.inputs[0](torch.tensor([4]))[0])[0], atol=1e-6)
    assert torch.equal(x[:4, 0], structure.embedding.weight[:4])
    model = FusedKGEModel(N, 2, build_scorer("rotate", D // 2), rep).eval()
    q = torch.tensor([[0, 1, 4], [4, 0, 2]])
    fn = model.score_fn()
    # all-entity evaluation tables agree with pointwise scoring of the same triples (both use the substitute)
    assert torch.allclose(fn(q, "tail")[torch.arange(2), q[:, 2]], model.score_hrt(q), atol=1e-4)


def test_checkpoint_round_trip_restores_the_seen_set_and_the_counter(tmp_path: Path):
    from mmkgc.training.checkpoint import load_checkpoint, save_checkpoint

    rep, structure = _concat()
    rep.train()
    structure(None)
    structure(None)
    model = KGEModel(N, 2, build_scorer("distmult", D), rep)
    save_checkpoint(tmp_path / "ck", model, {"epoch": 1})
    torch.manual_seed(5)
    other_rep = MultimodalRepresentation(N, D, _features())
    other = attach_modality_structure(other_rep, torch.ones(N, dtype=torch.bool), projection="linear")  # other seen
    load_checkpoint(tmp_path / "ck", KGEModel(N, 2, build_scorer("distmult", D), other_rep))
    assert torch.equal(other.seen, SEEN) and int(other.draws) == 2
    rep.eval()
    other_rep.eval()
    assert torch.equal(other_rep(None), rep(None))


# ------------------------------------------------------------------------------------------------ config / runs
def _raw(**model) -> dict:
    return {"name": "t", "seed": 3, "dataset": {"synthetic": {"seed": 1, "num_entities": 240, "num_relations": 6,
                                                              "num_types": 6, "unseen_entity_share": 0.1}},
            "model": {"scorer": "rotate", "dim": 16, "scorer_options": {"margin": 6.0}, **model},
            "training": {"epochs": 4, "batch_size": 256, "num_negatives": 8, "lr": 0.01},
            "evaluation": {"every": 2, "patience": None, "batch_size": 64}}


MODS = [{"name": "text"}, {"name": "visual"}]


@pytest.mark.parametrize("model, message", [
    ({}, "representation 'structure' has no modalities"),
    ({"representation": "modality_only", "modalities": MODS}, "already computes every entity"),
    ({"representation": "rgcn"}, "rgcn"),
    ({"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality", "dropout": False}},
     "nothing would train"),
    ({"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality", "sparsest": 0}},
     "sparsest"),
])
def test_config_rejects_the_option_where_it_cannot_apply(model, message):
    model = {"unseen": {"mode": "modality"}, **model}
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**model))


def test_every_preset_takes_the_option_or_refuses_it_by_name():
    presets = [p for p in sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml"))
               if p.parent.name != "vemp"  # VEMP's pipeline has its own config schema (config_vemp)
               and not p.name.endswith("_space.yaml")]  # search spaces of `mmkgc tune --space`, not experiments
    assert len(presets) > 20
    accepted = 0
    for path in presets:
        try:
            cfg = load_config(path, ["model.unseen.mode=modality"])
        except ConfigError as err:
            assert "unseen.mode 'modality' needs representation 'concat' or 'fused'" in str(err), path
            assert load_config(path).model.representation not in ("concat", "fused")
        else:
            assert cfg.model.unseen.mode == "modality" and cfg.model.representation in ("concat", "fused")
            accepted += 1
    assert accepted >= 15


def test_default_option_leaves_the_config_hash_unchanged():
    from mmkgc.pipeline import build_model, load_data, run_fingerprint

    cfg = parse_config(_raw())
    model = build_model(cfg, load_data(cfg))
    import hashlib
    import json

    # the payload of the code before ``model.unseen`` and ``dataset.pykeen`` existed (test_pipeline pins its value)
    payload = json.dumps({"dataset": {k: v for k, v in cfg.dataset.model_dump(mode="json").items()
                                      if k not in ("pykeen", "random_split")},
                          "model": {k: v for k, v in cfg.model.model_dump(mode="json").items()
                                    if k not in ("unseen", "structure_init")},
                          "seed": cfg.seed}, sort_keys=True)
    assert run_fingerprint(cfg, model)["config"] == hashlib.sha256(payload.encode()).hexdigest()[:16]
    on = parse_config(_raw(representation="concat", modalities=MODS, unseen={"mode": "modality"}))
    off = parse_config(_raw(representation="concat", modalities=MODS))
    assert run_fingerprint(on, build_model(on, load_data(on)))["config"] != \
        run_fingerprint(off, build_model(off, load_data(off)))["config"]
    # ``sparsest`` came later: at 1 (all seen entities, the behaviour before it existed) it leaves the hash of a run
    # with the option as it was
    on = parse_config(_raw(representation="concat", modalities=MODS, unseen={"mode": "modality", "sparsest": 1.0}))
    model = build_model(on, load_data(on))
    before = {k: v for k, v in on.model.model_dump(mode="json").items() if k != "structure_init"}
    before["unseen"] = {k: v for k, v in before["unseen"].items() if k != "sparsest"}
    payload = json.dumps({"dataset": {k: v for k, v in on.dataset.model_dump(mode="json").items()
                                      if k not in ("pykeen", "random_split")},
                          "model": before, "seed": on.seed}, sort_keys=True)
    assert run_fingerprint(on, model)["config"] == hashlib.sha256(payload.encode()).hexdigest()[:16]
    sparse = parse_config(_raw(representation="concat", modalities=MODS, unseen={"mode": "modality", "sparsest": 0.5}))
    assert run_fingerprint(sparse, build_model(sparse, load_data(sparse)))["config"] != \
        run_fingerprint(on, model)["config"]


@pytest.mark.parametrize("model", [
    {"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality", "align_weight": 0.5}},
    {"representation": "concat", "modalities": MODS, "unseen": {"mode": "modality", "share": 0.4, "sparsest": 0.3}},
    {"representation": "fused", "modalities": MODS, "adapter": "mlp",
     "fusion": {"kind": "attention", "relation_temperature": True}, "unseen": {"mode": "modality"}},
])
def test_resume_with_the_option_continues_the_same_run(tmp_path: Path, model):
    import json

    from mmkgc.pipeline import load_run, run_experiment

    def losses(run_dir):
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    run_experiment(parse_config(_raw(**model)), tmp_path / "full", device="cpu", log=lambda line: None)
    short = _raw(**model)
    short["training"]["epochs"] = 2
    run_experiment(parse_config(short), tmp_path / "split", device="cpu", log=lambda line: None)
    run_experiment(parse_config(_raw(**model)), tmp_path / "split", resume=True, device="cpu", log=lambda line: None)
    assert losses(tmp_path / "split") == pytest.approx(losses(tmp_path / "full"), rel=1e-6, abs=1e-7)
    log = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    if model["unseen"].get("align_weight"):
        assert all(0.0 < rec["terms"]["unseen_align"] < 10.0 for rec in log)
    # the reloaded model substitutes the entities without training triples, as the trained one did
    _, data, loaded = load_run(tmp_path / "full", device="cpu")
    structure = loaded.entities.structure
    from mmkgc.evaluation.metrics import seen_in_training

    assert isinstance(structure, ModalityStructure)
    assert torch.equal(structure.seen, seen_in_training(data.triples)) and int((~structure.seen).sum()) > 0
    metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    again = __import__("mmkgc.evaluation.metrics", fromlist=["evaluate"]).evaluate(
        loaded.score_fn(), data.triples, split="test")
    assert again.get("mrr", side="both") == pytest.approx(metrics["summary"]["test"]["realistic"]["mrr"], rel=1e-6)


def test_cli_refuses_the_option_on_a_structure_only_preset(tmp_path: Path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "mmkgc", "train", str(root / "configs/db15k/rotate.yaml"),
                           "--run-dir", str(tmp_path / "r"), "--set", "model.unseen.mode=modality"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(root / "src")})
    assert done.returncode == 2, done.stderr
    assert "model" in done.stderr and "unseen.mode 'modality' needs representation" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "r").exists()


def test_yaml_round_trip_of_the_option(tmp_path: Path):
    from mmkgc.config import dump_config

    cfg = parse_config(_raw(representation="concat", modalities=MODS,
                            unseen={"mode": "modality", "share": 0.3, "align_weight": 1.5}))
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again.model.unseen == cfg.model.unseen


@pytest.mark.parametrize("adversarial", [
    {"kind": "mat", "mu": 0.1},
    {"kind": "moien", "heads": 2, "layers": 1, "complete_missing": True},
])
def test_adversarial_fused_methods_train_with_the_option(tmp_path: Path, adversarial):
    import json

    from mmkgc.pipeline import load_run, run_experiment

    model = {"representation": "fused", "modalities": MODS, "adapter": "mlp",
             "fusion": {"kind": "attention", "relation_temperature": True, "confidence": "l2",
                        "relation_gate": adversarial["kind"] == "moien"},
             "unseen": {"mode": "modality", "align_weight": 0.5}}
    raw = _raw(**model)
    raw["training"].update(epochs=1, adversarial=adversarial)
    metrics = run_experiment(parse_config(raw), tmp_path / "r", device="cpu", log=lambda line: None)
    log = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[0])
    assert "unseen_align" in log["terms"] and "generator" in log["terms"]
    assert metrics["summary"]["test_by_seen"]["unseen"]["count"] > 0
    _, _, loaded = load_run(tmp_path / "r", device="cpu")
    structure = loaded.entities.structure
    assert isinstance(structure, ModalityStructure) and int(structure.draws) > 0
