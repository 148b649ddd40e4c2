"""The parts of ``benchmarks/parity.py`` that run without the official code: the ``.pth`` feature-table writer,
the stand-in tables, the settings mapping to both sides, the merging of results, the relation-category
comparison, the argument errors, and the launcher's loss/test recording (against a fake "official" package)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mmkgc.config import parse_config

from benchmark_modules import BENCH, load_benchmark as _load


parity = _load("parity")


# ------------------------------------------------------------------------------------------- feature tables


def test_pth_writer_layout_is_what_torch_load_returns(tmp_path):
    values = torch.arange(12, dtype=torch.float64).reshape(4, 3).t().contiguous().t()  # non-contiguous, float64
    path = parity.write_openke_feature_pth(values, tmp_path / "emb" / "DB15K-visual.pth")
    loaded = torch.load(path, weights_only=True)  # the official code does torch.load(path)
    assert isinstance(loaded, torch.Tensor)
    assert loaded.dtype == torch.float32 and loaded.is_contiguous() and tuple(loaded.shape) == (4, 3)
    assert torch.equal(loaded, torch.tensor([[0.0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]))
    assert sorted(p.name for p in path.parent.iterdir()) == ["DB15K-visual.pth"]  # no temporary left behind


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(0, 4), torch.tensor([[1.0, float("nan")]])])
def test_pth_writer_refuses_bad_tables_and_writes_nothing(tmp_path, bad):
    with pytest.raises(ValueError):
        parity.write_openke_feature_pth(bad, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_stand_in_tables():
    text = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = parity.stand_in_tables("adamf_mat", text, "text")
    assert torch.equal(t["visual"], text) and torch.equal(t["textual"], text)
    z = parity.stand_in_tables("native", text, "zeros")
    assert torch.equal(z["visual"], torch.zeros(2, 2)) and torch.equal(z["textual"], text)
    i = parity.stand_in_tables("imvia", text, "zeros")
    assert torch.equal(i["textual"], torch.tensor([[1.0, 2, 1, 2], [3, 4, 3, 4]]))  # [x; x]
    assert tuple(i["visual"].shape) == (2, 4096) and not i["visual"].any()
    it = parity.stand_in_tables("imvia", text, "text")
    assert tuple(it["visual"].shape) == (2, 4096) and torch.equal(it["visual"][0, :6], torch.tensor([1.0, 2, 1, 2, 1, 2]))
    with pytest.raises(parity.ParityError, match="--visual"):
        parity.stand_in_tables("adamf_mat", text, "images")


def test_imvia_dataset_layout(tmp_path):
    triples = SimpleNamespace(num_entities=3, num_relations=2, train=torch.tensor([[0, 1, 2]]),
                              valid=torch.tensor([[1, 0, 2]]), test=torch.tensor([[2, 1, 0], [0, 0, 1]]))
    tables = {"visual": torch.zeros(3, 4096), "textual": torch.ones(3, 768)}
    parity.write_imvia_dataset(triples, tables, tmp_path)
    assert (tmp_path / "entity2id.txt").read_text() == "e0 0\ne1 1\ne2 2\n"
    assert (tmp_path / "relation2id.txt").read_text() == "r0 0\nr1 1\n"
    assert (tmp_path / "train.txt").read_text() == "e0 r1 e2\n"  # h r t names
    assert (tmp_path / "test.txt").read_text() == "e2 r1 e0\ne0 r0 e1\n"
    assert torch.equal(torch.load(tmp_path / "text_features.pth", weights_only=True), torch.ones(3, 768))


# ------------------------------------------------------------------------------------------- settings mapping


def _parsed(method, **overrides):
    settings = parity.merge_settings(method, overrides)
    cfg = parity.mmkgc_config(method, settings, 7, Path("/data/v.pth"), Path("/data/t.pth"))
    return settings, parse_config(cfg)


def test_adamf_mat_mapping_matches_the_official_script():
    s, cfg = _parsed("adamf_mat", epochs=15, lr=1e-3)
    assert (s["dim"], s["margin"], s["num_negatives"], s["mu"], s["lrg"], s["adv_temp"]) == (250, 12.0, 128, 0.0,
                                                                                           1e-4, 2.0)
    m, t, e = cfg.model, cfg.training, cfg.evaluation
    assert (m.scorer, m.dim, m.adapter, m.trainable_features, m.fusion.kind, m.fusion.relation_temperature) == (
        "rotate", 250, "linear", True, "attention", False)
    assert m.scorer_options == {"margin": 12.0, "epsilon": 2.0}
    assert [x.name for x in m.modalities] == ["visual", "textual"]
    assert (t.epochs, t.lr, t.num_negatives, t.sampler, t.positives, t.loss, t.adversarial_temperature) == (
        15, 1e-3, 128, "bernoulli", "with_replacement", "nssa", 2.0)
    assert t.filtered_negatives and t.regularizer == "none"
    assert (t.adversarial.kind, t.adversarial.mu, t.adversarial.generator_lr, t.adversarial.fake_weighting) == (
        "mat", 0.0, 1e-4, "across_batch")
    assert (e.every, e.patience, e.tie_policy) == (15, None, "optimistic")  # final-epoch model, OpenKE ties
    assert cfg.seed == 7
    argv = parity.reference_argv("adamf_mat", s, 7, "cpu", Path("/x/ck"))
    assert {"-epoch=15", "-learning_rate=0.001", "-dim=250", "-neg_num=128", "-mu=0.0", "-lrg=0.0001",
            "-seed=7", "-margin=12.0", "-batch_size=1024", "-adv_temp=2.0"} <= set(argv)


def test_native_mapping_matches_the_official_two_modality_entry_point():
    s, cfg = _parsed("native", epochs=3)
    m, t = cfg.model, cfg.training
    assert (m.adapter, m.trainable_features, m.fusion.relation_temperature) == ("mlp", False, True)
    assert (t.adversarial.kind, t.adversarial.mu, t.adversarial.gp_weight, t.adversarial.generator_lr) == (
        "wgan_gp", 1e-4, 0.1, 1e-4)
    assert (t.regularizer, t.regularizer_weight, t.lr) == ("l2", 1e-5, 1e-4)


def test_imvia_mapping_uses_the_published_switches():
    s, cfg = _parsed("imvia", epochs=2)
    im = cfg.model.imvia
    assert cfg.model.method == "imvia" and cfg.model.reciprocal and cfg.model.dim == 256
    assert (im.modality_input, im.pooling, im.club_legacy_indexing, im.club_include_logvar) == (
        "table", "imvia_256", True, False)
    assert im.align_min_temperature is None and im.mi_weight == 1e-4 and im.label_smoothing_variant == "imvia"
    assert (im.align_temperature_parameterization, im.align_head) == ("raw", "shared")  # ClipLoss, one conv/bn head
    assert cfg.training.loop == "one_to_n" and cfg.evaluation.tie_policy == "random"
    argv = parity.reference_argv("imvia", s, 3, "cuda", Path("/x"))
    assert argv[argv.index("--eval_freq") + 1] == "2" and argv[argv.index("--cuda") + 1] == "0"
    assert parity.reference_argv("imvia", s, 3, "cpu", Path("/x"))[-3] == "-1"


def test_settings_errors():
    with pytest.raises(parity.ParityError, match="num_negatives"):
        parity.merge_settings("imvia", {"num_negatives": 4})
    with pytest.raises(parity.ParityError, match="--epochs"):
        parity.merge_settings("adamf_mat", {"epochs": 0})
    with pytest.raises(parity.ParityError, match="unknown method"):
        parity.default_settings("transe")


# ------------------------------------------------------------------------------------------- results file


def _entry(seeds, mm, ref, lr=1e-3):
    return {"settings": {"lr": lr}, "visual_stand_in": "text", "device": "cuda", "seeds": seeds, "mmkgc": mm,
            "reference": ref, "loss_curves": [{"seed": s} for s in seeds], "test_metrics": [{} for _ in seeds],
            "seconds": [{} for _ in seeds], "command": f"run {seeds}"}


def test_results_of_separate_seeds_are_merged_and_other_settings_replace(tmp_path):
    path = tmp_path / "parity.json"
    parity.update_results(path, "native", _entry([42], [0.30], [0.32]))
    merged = parity.update_results(path, "native", _entry([43], [0.31], [0.33]))
    assert merged["seeds"] == [42, 43] and merged["mmkgc"] == [0.30, 0.31] and merged["reference"] == [0.32, 0.33]
    assert merged["command"] == ["run [42]", "run [43]"]
    assert merged["mean_abs_gap_points"] == pytest.approx(2.0)
    assert json.loads(path.read_text())["native"]["seeds"] == [42, 43]
    again = parity.update_results(path, "native", _entry([43], [0.5], [0.5]))  # same seed again: replaces
    assert again["seeds"] == [43]
    other = parity.update_results(path, "native", _entry([44], [0.5], [0.5], lr=1e-4))  # other settings
    assert other["seeds"] == [44]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(parity.ParityError, match="JSON object"):
        parity.update_results(tmp_path / "bad.json", "native", _entry([1], [], []))


def _side_entry(seed, side, mrr, losses):
    """An entry as ``--side reference`` / ``--side mmkgc`` writes it: one seed, one side."""
    other = "reference" if side == "mmkgc" else "mmkgc"
    return {"settings": {"lr": 1e-2}, "visual_stand_in": "zeros", "device": "cuda", "seeds": [seed],
            side: [mrr], other: [],
            "loss_curves": [{"seed": seed, side: losses, other: None}],
            "test_metrics": [{"seed": seed, side: {"mrr": mrr, "hits@1": mrr / 2}, other: None}],
            "seconds": [{"seed": seed, side: 10.0, other: None}], "command": f"{side} {seed}"}


def test_the_two_sides_of_a_seed_run_separately_are_combined(tmp_path):
    path = tmp_path / "parity.json"
    parity.update_results(path, "imvia", _side_entry(42, "reference", 0.05, [5.0, 0.3]))
    parity.update_results(path, "imvia", _side_entry(43, "mmkgc", 0.06, [4.0, 0.2]))
    parity.update_results(path, "imvia", _side_entry(42, "mmkgc", 0.07, [4.5, 0.25]))
    merged = parity.update_results(path, "imvia", _side_entry(43, "reference", 0.04, [5.5, 0.35]))
    assert merged["seeds"] == [42, 43]
    assert merged["mmkgc"] == [0.07, 0.06] and merged["reference"] == [0.05, 0.04]  # in seed order
    assert merged["loss_curves"] == [{"seed": 42, "reference": [5.0, 0.3], "mmkgc": [4.5, 0.25]},
                                     {"seed": 43, "mmkgc": [4.0, 0.2], "reference": [5.5, 0.35]}]
    assert merged["test_metrics"][1] == {"seed": 43, "mmkgc": {"mrr": 0.06, "hits@1": 0.03},
                                         "reference": {"mrr": 0.04, "hits@1": 0.02}}
    assert merged["seconds"][0] == {"seed": 42, "reference": 10.0, "mmkgc": 10.0}
    assert merged["mean_abs_gap_points"] == pytest.approx(100 * abs(0.065 - 0.045))
    assert merged["command"] == ["reference 42", "mmkgc 43", "mmkgc 42", "reference 43"]
    # the same side of a seed measured again replaces the whole entry
    again = parity.update_results(path, "imvia", _side_entry(42, "mmkgc", 0.09, [1.0]))
    assert again["seeds"] == [42] and again["mmkgc"] == [0.09] and again["reference"] == []


def test_merge_option_folds_files_into_the_results_file(tmp_path, capsys):
    files = []
    for i, (seed, side, mrr) in enumerate([(42, "reference", 0.05), (42, "mmkgc", 0.06)]):
        files.append(tmp_path / f"part{i}.json")
        files[-1].write_text(json.dumps({"imvia": _side_entry(seed, side, mrr, [1.0])}))
    target = tmp_path / "parity.json"
    target.write_text(json.dumps({"native": {"kept": True}, "imvia": {"settings": {"lr": 1e-3}, "seeds": [42]}}))
    assert parity.main(["--method", "imvia", "--merge", *map(str, files), "--json", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["native"] == {"kept": True}  # other methods untouched; the 1e-3 imvia entry replaced
    assert data["imvia"]["mmkgc"] == [0.06] and data["imvia"]["reference"] == [0.05]
    assert "gap 1.00 points" in capsys.readouterr().out
    assert parity.main(["--method", "imvia", "--merge", str(files[0])]) == 2
    assert "--merge needs --json" in capsys.readouterr().err
    assert parity.main(["--method", "native", "--merge", str(files[0]), "--json", str(target)]) == 2
    assert "has no 'native' entry" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- categories


def test_category_file_parsing_and_comparison(tmp_path):
    f = tmp_path / "test2id_all.txt"
    f.write_text("4\n0\t1 2 0\n1\t0 3 1\n3\t4 5 2\n3\t6 7 2\n")
    rows = parity.read_category_file(f)
    assert rows == [(0, 1, 2, 0), (1, 0, 3, 1), (3, 4, 5, 2), (3, 6, 7, 2)]
    rep = parity.compare_categories([0, 1, 2], rows)  # relation 2: official N-N, ours N-1
    assert rep["test_triples"] == 4 and rep["mismatched_triples"] == 2
    assert rep["mismatched_relations"] == [{"relation": 2, "official": "N-N", "mmkgc": "N-1"}]
    assert rep["official_counts"] == {"1-1": 1, "1-N": 1, "N-1": 0, "N-N": 2}
    assert rep["mmkgc_counts"] == {"1-1": 1, "1-N": 1, "N-1": 2, "N-N": 0}
    f.write_text("2\n0\t1 2 0\n")
    with pytest.raises(parity.ParityError, match="header says 2"):
        parity.read_category_file(f)
    f.write_text("1\n0\t1 2\n")
    with pytest.raises(parity.ParityError, match=r"test2id_all.txt:2"):
        parity.read_category_file(f)


def test_mmkgc_categories_follow_the_openke_rule_on_a_hand_computed_graph():
    from mmkgc.data.triples import TripleSet

    # relation 0: 1-1; 1: one head, three tails (tph 3) -> 1-N; 2: three heads, one tail -> N-1;
    # 3: two heads x two tails (tph = hpt = 2) -> N-N; 4: (0, 4, 1) three times (train, valid, test) + (2, 4, 3):
    # n-n.py counts the repeated rows, tph = hpt = 4 / 2 = 2 -> N-N (1-1 if repeats were dropped).
    train = torch.tensor([[0, 0, 1], [0, 1, 2], [0, 1, 3], [5, 2, 9], [6, 2, 9], [1, 3, 2], [1, 3, 3], [0, 4, 1],
                          [2, 4, 3]])
    valid = torch.tensor([[2, 0, 3], [0, 1, 4], [7, 2, 9], [0, 4, 1]])
    test = torch.tensor([[4, 0, 5], [2, 3, 2], [2, 3, 3], [0, 4, 1]])
    triples = TripleSet(train, valid, test, [f"e{i}" for i in range(10)], [f"r{j}" for j in range(5)])
    assert parity.mmkgc_relation_categories(triples).tolist() == [0, 1, 2, 3, 3]


# ------------------------------------------------------------------------------------------- argument errors


def test_reference_errors(tmp_path, capsys):
    assert parity.main(["--method", "adamf_mat", "--reference", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "run_adamf_mat.py").write_text("")
    assert parity.main(["--method", "adamf_mat", "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a checkout of zjukg/AdaMF-MAT" in err and "mmkgc/base/Base.cpp" in err
    assert "Traceback" not in err
    assert parity.main(["--reference", str(tmp_path)]) == 2
    assert "--method is required" in capsys.readouterr().err
    assert parity.main(["--check-categories", "--reference", str(tmp_path)]) == 2
    assert "no benchmarks/ directory" in capsys.readouterr().err
    assert parity.main(["--check-sampler", "--reference", str(tmp_path)]) == 2
    assert "--check-sampler needs --method" in capsys.readouterr().err
    for name in parity.METHODS["imvia"].markers:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert parity.main(["--check-sampler", "--method", "imvia", "--reference", str(tmp_path)]) == 2
    assert "does not use OpenKE's sampler" in capsys.readouterr().err
    assert parity.main(["--method", "imvia"]) == 2
    assert "--reference is required" in capsys.readouterr().err
    assert parity.main(["--method", "native", "--reference", str(tmp_path), "--imvia-skip-branch-tests"]) == 2
    assert "only IMVIA's train.py" in capsys.readouterr().err


def test_split_check_refuses_a_different_split(tmp_path):
    ours, theirs = tmp_path / "data" / "DB15K", tmp_path / "ref" / "benchmarks" / "DB15K"
    for d in (ours, theirs):
        d.mkdir(parents=True)
        for name in parity.OPENKE_FILES:
            (d / name).write_text("1\n0 1 0\n")
    parity.check_split(tmp_path / "ref", tmp_path / "data")
    (theirs / "test2id.txt").write_text("1\n1 0 0\n")
    with pytest.raises(parity.ParityError, match="test2id.txt differs"):
        parity.check_split(tmp_path / "ref", tmp_path / "data")


# ------------------------------------------------------------------------------------------- launcher

FAKE_CONFIG = """
class FakeTrainer:
    def train_one_step(self, data):
        return float(data), 2.0 * data

class Tester:
    def run_link_prediction(self, type_constrain=False):
        return 0.5, 3.0, 0.9, 0.7, 0.25
"""

FAKE_ENTRY = """
import sys, torch
from tqdm import tqdm
from mmkgc.config import FakeTrainer, Tester
assert sys.argv[1:] == ["-epoch=2"], sys.argv
trainer = FakeTrainer()
bar = tqdm(range(2))
for epoch in bar:
    for step in range(3):
        trainer.train_one_step(step)
    bar.set_description("Epoch %d" % epoch)
torch.zeros(2).cuda()          # the official code calls .cuda() unconditionally
torch.nn.Linear(2, 2).cuda()
Tester().run_link_prediction()
"""


def test_launcher_records_epoch_losses_and_test_metrics(tmp_path):
    pkg = tmp_path / "mmkgc" / "config"
    pkg.mkdir(parents=True)
    (tmp_path / "mmkgc" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text(FAKE_CONFIG)
    (tmp_path / "entry.py").write_text(FAKE_ENTRY)
    log = tmp_path / "log.jsonl"
    proc = subprocess.run([sys.executable, str(BENCH / "parity_launcher.py"), "--log", str(log), "--device", "cpu",
                           "--trainer", "FakeTrainer", "--", "entry.py", "-epoch=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    epochs, test = parity.read_launcher_log(log)
    assert [(e["epoch"], e["loss"], e["loss_g"], e["steps"]) for e in epochs] == [(0, 1.0, 2.0, 3), (1, 1.0, 2.0, 3)]
    assert test["test"] == {"mrr": 0.5, "mr": 3.0, "hits@10": 0.9, "hits@3": 0.7, "hits@1": 0.25}


FAKE_IMVIA_LOADER = """
class ConvECorpus:
    def get_batch(self, batch_num):
        return batch_num
    def get_validation_pred(self, model, split="test"):
        return {"MRR": 0.25, "MR": 9.0, "Hits@10": 0.5, "Hits@3": 0.375, "Hits@1": 0.125}, None
    def get_validation_pred_signle(self, model, split="test", index=0):
        raise AssertionError("a single-branch test ran")
"""

FAKE_IMVIA_ENTRY = """
from tqdm import tqdm
from utils.data_loader import ConvECorpus
class Model:
    @staticmethod
    def init_metric_dict():
        return {"MRR": -1}
corpus, model = ConvECorpus(), Model()
bar = tqdm(range(2))
for epoch in bar:
    losses = [corpus.get_batch(b) * 0.5 for b in range(4)]  # 0, 0.5, 1.0, 1.5
    bar.set_postfix(loss="main: {:.5} mi: 0.0".format(sum(losses)))
corpus.get_validation_pred(model, "test")
print("branch", corpus.get_validation_pred_signle(model, "test", 0)[0])
"""


def test_launcher_records_imvia_losses_and_can_skip_the_branch_tests(tmp_path):
    (tmp_path / "utils").mkdir()
    (tmp_path / "utils" / "__init__.py").write_text("")
    (tmp_path / "utils" / "data_loader.py").write_text(FAKE_IMVIA_LOADER)
    (tmp_path / "train.py").write_text(FAKE_IMVIA_ENTRY)
    log = tmp_path / "log.jsonl"
    base = [sys.executable, str(BENCH / "parity_launcher.py"), "--log", str(log), "--imvia"]
    proc = subprocess.run([*base, "--imvia-skip-branch-tests", "--", "train.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "branch {'MRR': -1}" in proc.stdout
    epochs, test = parity.read_launcher_log(log)
    assert [(e["epoch"], e["loss"], e["steps"]) for e in epochs] == [(0, 0.75, 4), (1, 0.75, 4)]
    assert test["test"] == {"mrr": 0.25, "mr": 9.0, "hits@10": 0.5, "hits@3": 0.375, "hits@1": 0.125}
    log.unlink()
    proc = subprocess.run([*base, "--", "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "a single-branch test ran" in proc.stderr  # without the flag they run


def test_launcher_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "parity_launcher.py"), "--log", str(tmp_path / "l")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr


# ------------------------------------------------------------------------------------------- parity_offset
def test_offset_batch_layouts_round_trip_on_a_hand_made_openke_batch():
    """OpenKE's flat layout (negative k of positive p at B (k + 1) + p) <-> mmkgc's (positives, entities, tail)."""
    offset = _load("parity_offset")
    # B = 2 positives (h, r, t) = (0, 5, 1) and (2, 6, 3); K = 2 negatives each
    bh = [0, 2, 0, 9, 7, 2]   # k = 0: (0, 5, 4) tail replaced by 4; (9, 6, 3) head replaced by 9
    bt = [1, 3, 4, 3, 1, 8]   # k = 1: (7, 5, 1) head replaced by 7; (2, 6, 8) tail replaced by 8
    br = [5, 6, 5, 6, 5, 6]
    pos, ent, tail = offset.openke_to_mmkgc(bh, bt, br, 2, 2)
    assert pos.tolist() == [[0, 5, 1], [2, 6, 3]]
    assert ent.tolist() == [[4, 7], [9, 8]]
    assert tail.tolist() == [[True, False], [False, True]]
    h, t, r = offset.mmkgc_to_openke(pos, ent, tail)
    assert (h.tolist(), t.tolist(), r.tolist()) == (bh, bt, br)
    # a self-loop positive (h == t): its corrupted tail still reads as a tail corruption
    pos, ent, tail = offset.openke_to_mmkgc([4, 4], [4, 0], [1, 1], 1, 1)
    assert (ent.tolist(), tail.tolist()) == ([[0]], [[True]])


def test_offset_windows_and_weight_map():
    offset = _load("parity_offset")
    assert offset.windows([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.5, 3.5, 5.0]
    # every official AdvMixRotatE weight maps onto a distinct mmkgc parameter
    assert len(set(offset.WEIGHT_MAP.values())) == len(offset.WEIGHT_MAP) == 9


def test_openke_rounds_the_bernoulli_probability_up_to_thousandths():
    """OpenKE draws randd % 1000 < 1000 p: p is rounded up to k / 1000, so p > 0.999 never corrupts a head."""
    offset = _load("parity_offset")
    p = torch.tensor([0.5, 0.9991, 0.0004, 0.25, 1.0, 0.99904, 0.7123])
    assert offset.openke_tail_probability(p).tolist() == pytest.approx([0.5, 1.0, 0.001, 0.25, 1.0, 1.0, 0.713])
