"""``benchmarks/parity_imvia_step.py`` without the official code: the weight mapping (layout checked against a
hand-written official-style forward), its inverse, the batch conversion, the shared randomness, the comparison
helpers (a planted difference is flagged) and the argument errors.  The end-to-end run against the official
checkout is skipped when ``/work/ext/ICASSP2025_IMVIA_Code`` (or ``$MMKGC_IMVIA_REFERENCE``) is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmkgc.config import ImviaConfig
from mmkgc.features.store import FeatureTable
from mmkgc.models.imvia import IMVIAModel
from mmkgc.nn.adapters import MoEAdapter

from benchmark_modules import BENCH, load_benchmark

step = load_benchmark("parity_imvia_step")

N, R, D = 10, 3, 8
REPO = Path(__file__).resolve().parents[1]


def _model(seed: int = 0, **options) -> IMVIAModel:
    """An IMVIA model with the parity switches (three branches, trainable tables of width D)."""
    torch.manual_seed(seed)
    feats = [FeatureTable(torch.randn(N, D), "visual", torch.ones(N, dtype=torch.bool)),
             FeatureTable(torch.randn(N, D), "textual", torch.ones(N, dtype=torch.bool))]
    opts = ImviaConfig(modality_input="table", relation_dim=D, club_legacy_indexing=True, club_include_logvar=False,
                       align_min_temperature=None, **options)
    return IMVIAModel(N, R, D, feats, opts)


def _official_state(model: IMVIAModel) -> tuple[dict, dict]:
    """A state in the official layout with shapes as RelMoE's (built from a model, then perturbed so that no value
    is left at its default)."""
    torch.manual_seed(1)
    off = {k: v.clone() + (0.1 * torch.randn_like(v) if v.is_floating_point() else 0)
           for k, v in step.official_view(model).items()}
    off["cliploss.temp"] = torch.tensor(0.05)
    for k in [k for k in off if k.endswith("running_var")]:
        off[k] = off[k].abs() + 0.5
    est = {k: torch.randn_like(v) for k, v in step.official_view(model, estimators=True).items()
           if k.split(".")[0].endswith("estimator")}
    return off, est


def test_weight_map_covers_every_trained_parameter_once():
    model = _model()
    mapped = {step.mmkgc_key(model, k) for _, k, _ in step.weight_map()}
    bases = {k.split("[")[0] for k in mapped}
    expected = {n for n in model.state_dict() if not n.startswith(("estimators", "align_heads.1", "align_heads.2"))}
    assert bases == expected  # every parameter and batch-norm buffer (heads 1, 2 are copies of head 0)
    assert len(mapped) == len(step.weight_map())  # no entry mapped twice
    est = {m for _, m in step.estimator_map()}
    assert est == {n for n, _ in model.named_parameters() if n.startswith("estimators")}


def test_copy_then_inverse_round_trips_and_uses_the_official_layout():
    model = _model(seed=3)
    off, est = _official_state(model)
    step.copy_official_weights(model, off, est)
    back = step.official_view(model, estimators=True)
    for k, v in {**off, **est}.items():
        torch.testing.assert_close(back[k].to(v.dtype), v, msg=k)
    # layout: official expert k is Linear(in, out) applied to (x - bias); mmkgc's view k must equal it
    x = torch.randn(4, D)
    _, views, _ = model.adapters[1](x)
    for k in range(3):
        ref = torch.nn.functional.linear(x - off[f"visual_moe.experts.{k}.bias"],
                                         off[f"visual_moe.experts.{k}.lin.weight"])
        torch.testing.assert_close(views[:, k], ref)
    # the single official Conv1x1 head went into every alignment head; log tau holds log(temp)
    for head in model.align_heads:
        torch.testing.assert_close(head[0].weight, off["conv.weight"].reshape(D, D))
    torch.testing.assert_close(model.align_loss.log_temperature.exp(), torch.tensor(0.05))


def test_copied_model_scores_as_a_hand_written_official_structure_branch():
    """The structure branch's eval-mode probability from the official formulas (RelMoE.forward + TuckERLayer),
    written out here with plain tensor operations on the official-layout weights."""
    model = _model(seed=4)
    off, est = _official_state(model)
    step.copy_official_weights(model, off, est)
    model.eval()
    h, r = torch.tensor([2, 7]), torch.tensor([1, 4])  # r = 4: the reciprocal of relation 1

    def moe(x, temp=None):
        views = torch.stack([torch.nn.functional.linear(x - off[f"structure_moe.experts.{k}.bias"],
                                                        off[f"structure_moe.experts.{k}.lin.weight"])
                             for k in range(3)], 1)
        logits = x @ off["structure_moe.w_gate"]
        gates = torch.softmax(logits / torch.sigmoid(temp) if temp is not None else logits, -1)
        return (gates.unsqueeze(-1) * views).sum(1)

    def bn(x, name):
        return ((x - off[f"{name}.running_mean"]) / torch.sqrt(off[f"{name}.running_var"] + 1e-5)
                * off[f"{name}.weight"] + off[f"{name}.bias"])

    ent = off["entity_embeddings.weight"]
    q = moe(ent[h], off["rel_gate.weight"][r])
    w = (off["relation_embeddings.weight"][r] @ off["TuckER_S.W"].reshape(D, -1)).reshape(-1, D, D)
    x = torch.bmm(bn(q, "TuckER_S.bn0").unsqueeze(1), w).squeeze(1)
    expected = torch.sigmoid(bn(x, "TuckER_S.bn1") @ moe(ent).T)
    queries = torch.tensor([[2, 1, 2], [7, 1, 7]])
    got = torch.cat([model.branch_score_fn(0)(queries[:1], "tail"), model.branch_score_fn(0)(queries[1:], "head")])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_inverse_view_sums_untied_head_gradients_and_converts_the_log_temperature_gradient():
    model = _model()
    for i, head in enumerate(model.align_heads):
        head[0].weight.grad = torch.full((D, D), float(i + 1))
    model.align_loss.log_temperature.grad = torch.tensor(0.5)
    grads = step.official_view(model, grads=True)
    torch.testing.assert_close(grads["conv.weight"], torch.full((D, D, 1, 1), 6.0))  # 1 + 2 + 3
    tau = float(model.align_loss.log_temperature.detach().exp())
    torch.testing.assert_close(grads["cliploss.temp"], torch.tensor(0.5 / tau))  # dL/dtau = dL/dlog tau / tau
    shared = _model(align_head="shared")  # the published single head: its gradient is the official one as is
    assert len(shared.align_heads) == 1
    shared.align_heads[0][0].weight.grad = torch.full((D, D), 4.0)
    shared.align_loss.log_temperature.grad = torch.tensor(0.5)
    torch.testing.assert_close(step.official_view(shared, grads=True)["conv.weight"], torch.full((D, D, 1, 1), 4.0))


def test_batch_conversion_to_one_to_n_inputs():
    idx = torch.tensor([[5, 1, -1], [7, 4, -1]])  # (7, 4): the reciprocal of relation 1, a head query
    e, r, tail, labels = step.official_batch_to_one_to_n(idx, torch.tensor([0, 1, 1]), torch.tensor([3, 0, 9]), N, R)
    assert e.tolist() == [5, 7] and r.tolist() == [1, 1] and tail.tolist() == [True, False]
    expected = torch.zeros(2, N)
    expected[0, 3] = expected[1, 0] = expected[1, 9] = 1.0
    assert torch.equal(labels, expected)
    q = torch.stack([e, r, e], 1)
    ents, rels = IMVIAModel._as_tail_queries(q, tail, R)  # what the model scores: (7, 1 + R, ?)
    assert ents.tolist() == [5, 7] and rels.tolist() == [1, 4]
    with pytest.raises(ValueError, match="relations"):
        step.official_batch_to_one_to_n(torch.tensor([[0, 6, -1]]), torch.tensor([0]), torch.tensor([0]), N, R)
    with pytest.raises(ValueError, match="label"):
        step.official_batch_to_one_to_n(idx, torch.tensor([2]), torch.tensor([0]), N, R)


def test_shared_randomness_injects_the_same_noise_and_club_draws():
    torch.manual_seed(0)
    moe = MoEAdapter(4, 4, 3).train()
    with torch.no_grad():
        moe.gate.normal_()
    rng = step.SharedRandomness(seed=7)
    rng.attach([moe])
    x = torch.randn(5, 4)
    rng.set_phase(2, "bound")
    with rng.active():
        _, _, gates = moe(x)
        perms = [torch.randperm(3).tolist() for _ in range(3)]
        assert torch.randperm(5).shape == (5,)  # other sizes fall through to the real draw
    eps = step.gate_noise(7, 2, 0, 5, 3)
    std = torch.nn.functional.softplus(x @ moe.noise) + 0.01
    torch.testing.assert_close(gates, torch.softmax(x @ moe.gate + eps * std, -1))
    pair, expected_perms = step.club_draws(7, 2, "bound")
    assert perms == expected_perms and rng.pair() == pair and pair[0] != pair[1]
    assert rng.noise_calls == 1 and rng.perm_calls == 3
    assert not torch.equal(step.gate_noise(7, 2, 0, 5, 3), step.gate_noise(7, 3, 0, 5, 3))
    assert torch.randperm is step._RANDPERM and torch.randn_like is not None  # restored


def test_comparison_helpers_flag_a_planted_difference():
    a = {"w": torch.linspace(-1, 1, 50), "b": torch.ones(3)}
    same = step.compare_dicts(a, {k: v.clone() for k, v in a.items()})
    assert step.worst(same)["max_abs"] == 0.0 and step.worst(same)["within_noise"]
    planted = {k: v.clone() for k, v in a.items()}
    planted["w"][17] += 2e-3
    res = step.compare_dicts(a, planted)
    assert res["w"]["max_abs"] == pytest.approx(2e-3, rel=1e-3) and not step.within_noise(res["w"])
    assert step.worst(res)["key"] == "w" and not step.worst(res)["within_noise"]
    assert step.within_noise(step.diff(1000.0, 1000.0 + 5e-2))  # relative to the quantity's size
    with pytest.raises(ValueError, match="shapes differ"):
        step.diff(torch.zeros(2), torch.zeros(3))
    with pytest.raises(KeyError):
        step.compare_dicts(a, {"w": a["w"]})


def test_adam_sign_noise_and_the_exact_verdict():
    off = {"w": torch.zeros(4)}
    ours = {"w": torch.tensor([0.0, 1e-3, 0.0, 0.0])}
    grads = {"w": torch.tensor([0.5, 3e-9, 0.1, 0.0])}
    noise = step.adam_sign_noise(off, ours, grads)
    assert noise == {"w": {"entries": 1, "of": 4, "max_abs_grad_there": pytest.approx(3e-9)}}
    ok = {"loss": step.diff(2.0, 2.0), "after1_adam_sign_noise": step.adam_sign_noise(off, ours, grads),
          "losses": {"official": [2.0, 1.9], "mmkgc": [2.0, 1.9000001], "max_abs": 1e-7}}
    assert step.exact_verdict(ok) == []
    bad = {**ok, "grad": {"conv.weight": step.diff(torch.ones(2), torch.tensor([1.0, 1.01]))},
           "after1_adam_sign_noise": step.adam_sign_noise(off, ours, {"w": torch.tensor([0, 0.2, 0, 0])}),
           "losses": {"official": [2.0, 1.9], "mmkgc": [2.0, 1.95], "max_abs": 0.05}}
    assert step.exact_verdict(bad) == ["grad", "after1", "losses"]


@pytest.mark.parametrize("argv, needle", [
    ([], "--reference is required"),
    (["--reference", "{tmp}"], "is not a checkout of kernelLZ/ICASSP2025_IMVIA_Code"),
    (["--reference", "{tmp}/missing"], "is not a directory"),
    (["--reference", "{tmp}", "--steps", "0"], "--steps: must be at least 1"),
    (["--reference", "{tmp}", "--data-dir", "{tmp}"], "--data-dir:"),
    (["--reference", "{tmp}", "--text-table", "{tmp}/none.safetensors"], "--text-table:"),
    (["--reference", "{tmp}", "--json", "{tmp}/no/dir/out.json"], "--json:"),
    (["--reference", "{tmp}", "--json-key", "x"], "--json-key needs --json"),
    (["--reference", "{tmp}", "--json", "{tmp}/list.json", "--json-key", "x"], "does not hold a JSON object"),
])
def test_argument_errors_give_one_message_and_exit_2(tmp_path, capsys, argv, needle):
    data = REPO.parent / "shared" / "datasets"
    (tmp_path / "list.json").write_text("[1, 2]")
    args = [a.format(tmp=tmp_path) for a in argv]
    if "--data-dir" not in args:
        args += ["--data-dir", str(data if (data / "DB15K" / "train2id.txt").is_file() else tmp_path)]
        if not (data / "DB15K" / "train2id.txt").is_file() and needle not in ("--reference is required",
                                                                               "--steps: must be at least 1",
                                                                               "--json-key needs --json"):
            needle = "--data-dir:"
    assert step.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert (tmp_path / "list.json").read_text() == "[1, 2]"  # a user's file is never overwritten


def test_script_exit_code_2_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / "parity_imvia_step.py"), "--reference", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stderr.startswith("parity_imvia_step.py: error: --")
    assert "Traceback" not in proc.stderr and not (tmp_path / "job").exists()


REFERENCE = Path(os.environ.get("MMKGC_IMVIA_REFERENCE", "/work/ext/ICASSP2025_IMVIA_Code"))
TEXT = Path(os.environ.get("MMKGC_DB15K_TEXT_TABLE", "/work/main/.gpu/db15k_name_text.safetensors"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_one_step_against_the_official_checkout(tmp_path):
    """The exact variant on one small batch against the official code (skipped without a checkout)."""
    data = REPO.parent / "shared" / "datasets"
    if not (REFERENCE / "models" / "RelMoE.py").is_file() or not TEXT.is_file():
        pytest.skip("the official IMVIA checkout or the DB15K name-text table is not available")
    if not (data / "DB15K" / "train2id.txt").is_file():
        pytest.skip("../shared/datasets is not available")
    out = tmp_path / "report.json"
    rc = step.main(["--reference", str(REFERENCE), "--data-dir", str(data), "--text-table", str(TEXT),
                    "--steps", "2", "--batch-size", "16", "--variants", "exact", "--out", str(tmp_path / "w"),
                    "--json", str(out)])
    import json

    report = json.loads(out.read_text())
    assert rc == 0 and report["exact_within_noise"], report["exact_beyond_noise"]
    s = report["variants"]["exact"]["summary"]
    assert s["loss"]["max_abs"] <= 1e-5 and s["grad"]["within_noise"]


def test_parity_config_uses_the_published_raw_temperature_and_the_variants_set_it_explicitly(tmp_path):
    parity = load_benchmark("parity")
    settings = parity.merge_settings("imvia", {"epochs": 1, "lr": 1e-3})
    im = parity.mmkgc_config("imvia", settings, 0, tmp_path / "v.pth", tmp_path / "t.pth")["model"]["imvia"]
    assert im["align_temperature_parameterization"] == "raw" and im["align_min_temperature"] is None
    assert step.VARIANTS == {"exact": (True, True), "per_branch_heads": (True, False),
                             "log_temperature": (False, True), "parity_config": (False, False)}

