"""Bad input at the command line, as a new user meets it: every case exits with the documented status (0 ok,
1 a check found a problem, 2 usage or user error, 130 interrupted), prints one ``error:`` line that names the
file, line, option or config field, never a traceback, and never damages a user's files.

A few cases run the console script as a real subprocess without a terminal (stdin from /dev/null, output piped,
no COLUMNS), as CI and cron jobs do: that is where typer's usage errors, hard-wrapped messages and signals
differ.  The rest call :func:`mmkgc.cli.run` in-process (same code path below the process boundary, ~2-4 s of
import time saved per case).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmkgc import cli
from mmkgc.pipeline import RunLock

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "seed": 3,
    "dataset": {"synthetic": {"seed": 1, "num_entities": 240, "num_relations": 6, "num_types": 6}},
    "model": {"scorer": "rotate", "dim": 16, "scorer_options": {"margin": 6.0}},
    "training": {"epochs": 2, "batch_size": 256, "num_negatives": 8, "lr": 0.01},
    "evaluation": {"every": 2, "patience": None, "batch_size": 64},
}


def _config(tmp_path: Path, name: str = "tiny.yaml", **sections) -> Path:
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict) and section != "dataset":
            raw[section].update(values)
        else:
            raw[section] = values
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ runners
def _script() -> list[str]:
    exe = Path(sys.executable).with_name("mmkgc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "mmkgc"]


def _env(tmp_path: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": path,
            "MMKGC_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _sub(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The console script without a terminal: stdin /dev/null, stdout/stderr pipes, no COLUMNS."""
    return subprocess.run([*_script(), *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          cwd=tmp_path, env=_env(tmp_path), timeout=timeout)


@pytest.fixture()
def mmkgc(capsys, tmp_path, monkeypatch):
    """In-process ``mmkgc ARGS`` in ``tmp_path``: returns ``(exit status, stdout, stderr)``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MMKGC_DATA_DIR", raising=False)
    monkeypatch.delenv("MMKGC_DEBUG", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def _one_error(code: int, err: str, expected: int, *needles: str) -> str:
    """Exit status ``expected``, no traceback, exactly one ``error:`` line holding every needle (unwrapped)."""
    assert code == expected, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "Usage:" in err
    for needle in needles:
        assert needle in err, err


def _train_tiny(mmkgc, tmp_path: Path, run_dir: Path, **sections) -> None:
    code, _, err = mmkgc("train", _config(tmp_path, **sections), "--run-dir", run_dir, "--device", "cpu")
    assert code == 0, err


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ 1. usage
def test_usage_errors_of_the_console_script_without_a_terminal(tmp_path):
    bare = _sub(tmp_path)
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "Usage" in bare.stdout + bare.stderr and "train" in bare.stdout + bare.stderr
    missing = _sub(tmp_path, "train")
    _usage_error(missing.returncode, missing.stderr, "Missing argument 'config'")
    unknown = _sub(tmp_path, "trian")
    _usage_error(unknown.returncode, unknown.stderr, "No such command 'trian'")


@pytest.mark.parametrize("args, needle", [
    (["train", "x.yaml", "--bogus"], "No such option: --bogus"),
    (["evaluate", "run", "--batch-size", "abc"], "--batch-size"),
    (["evaluate", "run", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "run", "--split", "tset"], "--split"),
    (["evaluate", "run", "--checkpoint", "../x"], "--checkpoint"),
    (["predict", "run", "--relation", "r", "--head", "a", "--top-k", "0"], "--top-k"),
    (["predict", "run", "--relation", "r"], "exactly one of --head and --tail"),
    (["train", "x.yaml", "--nproc", "0"], "--nproc"),
    (["features", "import", "DB15K", "f.npy"], "--modality"),
])
def test_usage_errors_in_process(mmkgc, args, needle):
    code, _, err = mmkgc(*args)
    _usage_error(code, err, needle)


# ------------------------------------------------------------------------------------------------ 2. messages
def test_messages_are_one_unwrapped_line_without_markup_in_a_pipe(tmp_path):
    # a long path with a rich closing tag in it: printed as it is, on one line, although stderr is a pipe
    odd = tmp_path / ("a-very-long-directory-name-" * 4 + "[/x]") / "config [bold]x[/bold].yaml"
    done = _sub(tmp_path, "train", str(odd))
    line = _one_error(done.returncode, done.stderr, 2, f"{odd}: config file not found")
    assert len(line) > 120  # longer than any terminal default: it was not hard-wrapped


def test_device_errors(mmkgc):
    _one_error(*mmkgc("evaluate", "run", "--device", "gpu")[::2], 2, "--device 'gpu'", "not a device name")
    _one_error(*mmkgc("predict", "run", "--relation", "r", "--head", "a", "--device", "tpu:0")[::2], 2, "--device")
    if torch.cuda.is_available():
        code, _, err = mmkgc("evaluate", "run", "--device", f"cuda:{torch.cuda.device_count()}")
        _one_error(code, err, 2, "CUDA device(s)")
    else:
        _one_error(*mmkgc("evaluate", "run", "--device", "cuda")[::2], 2, "--device cuda", "use --device cpu")


def test_config_errors_name_the_file_line_and_field(mmkgc, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: tiny\nseed: 1\n# caf\u00e9\n".encode("latin-1"))
    _one_error(*mmkgc("train", latin)[::2], 2, f"{latin}:3: not UTF-8")
    cfg = _config(tmp_path)
    _one_error(*mmkgc("train", cfg, "--set", "training.epochs=[1")[::2], 2, "override 'training.epochs=[1'",
               "not valid YAML")
    _one_error(*mmkgc("train", cfg, "--set", "=3")[::2], 2, "dotted.names")
    _one_error(*mmkgc("train", cfg, "--set", "training.epochz=3")[::2], 2, "training.epochz: unknown key")
    _one_error(*mmkgc("train", cfg, "--set", "dataset.synthetic.bogus=1")[::2], 2, "dataset.synthetic",
               "unknown option(s) bogus")
    _one_error(*mmkgc("train", cfg, "--set", "dataset.synthetic.num_entities=3")[::2], 2,
               "dataset.synthetic: num_entities (3)")
    _one_error(*mmkgc("train", cfg, "--set", "name=../../outside")[::2], 2, "name: '../../outside'",
               "not a plain name")
    assert not (tmp_path.parent / "outside").exists() and not (tmp_path / "runs").exists()


def test_output_locations_that_cannot_be_written(mmkgc, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    _one_error(*mmkgc("train", _config(tmp_path), "--run-dir", blocker / "run", "--device", "cpu")[::2], 2,
               str(blocker))
    run = tmp_path / "run"
    _train_tiny(mmkgc, tmp_path, run)
    _one_error(*mmkgc("evaluate", run, "--split", "valid", "--output", blocker / "m.json")[::2], 2,
               str(blocker), "a file is in the way")
    assert blocker.read_text() == "not a directory\n"


def test_a_full_disk_keeps_the_last_good_checkpoint(mmkgc, tmp_path, monkeypatch):
    from mmkgc.training import checkpoint

    real, calls = checkpoint.save_file, []

    def fill_up(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if len(calls) == 3:  # best and last of epoch 1 succeed, the next write fills the disk
            Path(filename).write_bytes(b"\0" * 10)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fill_up)
    run = tmp_path / "run"
    code, _, err = mmkgc("train", _config(tmp_path, evaluation={"every": 1}), "--run-dir", run, "--device", "cpu")
    _one_error(code, err, 2, "No space left on device", "the last good checkpoint is kept")
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["epoch"] == 1
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp-" in p.name]  # no half-written checkpoint


# ------------------------------------------------------------------------------------------------ 3. interrupts
def test_sigterm_during_training_keeps_the_checkpoint_and_exits_130(tmp_path):
    cfg = _config(tmp_path, training={"epochs": 100000}, evaluation={"every": 100000})
    run = tmp_path / "run"
    proc = subprocess.Popen([*_script(), "train", str(cfg), "--run-dir", str(run), "--device", "cpu"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(tmp_path))
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "last").exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    line = _one_error(proc.returncode, err, 130, "training interrupted", "resume with: mmkgc train")
    saved = json.loads((run / "checkpoints" / "last" / "state.json").read_text())["epoch"]
    assert f"epoch {saved}" in line and f"--run-dir {run} --resume" in line
    assert _epochs(run) == list(range(1, saved + 1)) or _epochs(run) == list(range(1, saved + 2))


def test_ctrl_c_in_an_epoch_then_resume(mmkgc, tmp_path, monkeypatch):
    from mmkgc.training.trainer import Trainer

    real, calls = Trainer._epoch, []

    def interrupted(self, deadline):
        calls.append(self.epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, deadline)

    monkeypatch.setattr(Trainer, "_epoch", interrupted)
    cfg = _config(tmp_path, training={"epochs": 3})
    run = tmp_path / "run"
    code, _, err = mmkgc("train", cfg, "--run-dir", run, "--device", "cpu")
    _one_error(code, err, 130, "during epoch 2", "epoch 1", f"mmkgc train {cfg} --run-dir {run} --resume")
    assert _epochs(run) == [1]
    monkeypatch.setattr(Trainer, "_epoch", real)
    code, out, err = mmkgc("train", cfg, "--run-dir", run, "--device", "cpu", "--resume")
    assert code == 0, err
    assert _epochs(run) == [1, 2, 3]


# ------------------------------------------------------------------------------------------------ 4. run dirs
def test_run_directories_are_never_taken_over(mmkgc, tmp_path):
    cfg = _config(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    _one_error(*mmkgc("train", cfg, "--run-dir", mine, "--device", "cpu")[::2], 2, str(mine), "not empty",
               "config.yaml")
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml"]
    assert (mine / "config.yaml").read_text() == "my own notes\n"

    _one_error(*mmkgc("train", cfg, "--run-dir", tmp_path / "fresh", "--resume")[::2], 2, "no checkpoint to resume")
    assert not (tmp_path / "fresh").exists()

    run = tmp_path / "run"
    _train_tiny(mmkgc, tmp_path, run)
    _one_error(*mmkgc("train", cfg, "--run-dir", run, "--device", "cpu")[::2], 2, "already holds a run",
               "--resume")
    with RunLock(run):  # another process training into it
        _one_error(*mmkgc("train", cfg, "--run-dir", run, "--resume", "--device", "cpu")[::2], 2,
                   "in use by another mmkgc process", f"pid {os.getpid()}")


def test_resume_after_a_kill_during_a_checkpoint_write(mmkgc, tmp_path):
    run = tmp_path / "run"
    _train_tiny(mmkgc, tmp_path, run)
    # a kill between appending epoch 3's log line and renaming its checkpoint into place
    (run / "checkpoints" / ".last.tmp-killed").mkdir()
    (run / "checkpoints" / ".last.tmp-killed" / "model.safetensors").write_bytes(b"partial")
    (run / ".metrics.json.k1ll3d.tmp").write_text("{")  # and an atomic write of a file
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 3, "loss": 0.5}) + "\n" + '{"epoch": 4, "lo')
    code, _, err = mmkgc("train", _config(tmp_path, training={"epochs": 3}), "--run-dir", run, "--resume",
                         "--device", "cpu")
    assert code == 0, err
    assert _epochs(run) == [1, 2, 3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "last"]
    assert not list(run.glob("*.tmp"))


def test_demo_output_keeps_unrelated_files(mmkgc, tmp_path):
    out = tmp_path / "out"
    (out / "demo-multimodal").mkdir(parents=True)
    (out / "demo-multimodal" / "thesis.tex").write_text("precious\n")
    (out / "notes.txt").write_text("also precious\n")
    _one_error(*mmkgc("demo", "--output", out)[::2], 2, "thesis.tex", "nothing was removed")
    assert (out / "demo-multimodal" / "thesis.tex").read_text() == "precious\n"
    assert sorted(p.name for p in out.iterdir()) == ["demo-multimodal", "notes.txt"]


# ------------------------------------------------------------------------------------------------ 5. inputs
def _openke(directory: Path, entities: list[str], train: list[tuple[int, int, int]]) -> Path:
    directory.mkdir(parents=True)
    (directory / "entity2id.txt").write_text(f"{len(entities)}\n" + "".join(f"{e}\t{i}\n" for i, e in enumerate(entities)))
    (directory / "relation2id.txt").write_text("2\nr0\t0\nr1\t1\n")
    (directory / "train2id.txt").write_text(f"{len(train)}\n" + "".join(f"{h} {t} {r}\n" for h, r, t in train))
    (directory / "valid2id.txt").write_text("1\n0 3 1\n")
    (directory / "test2id.txt").write_text("1\n1 4 0\n")
    return directory


def test_a_local_copy_must_be_the_registered_dataset(mmkgc, tmp_path):
    _openke(tmp_path / "data" / "DB15K", [f"e{i}" for i in range(6)], [(0, 0, 1), (2, 1, 3), (4, 0, 5)])
    code, out, err = mmkgc("datasets", "check", "DB15K", "--data-dir", tmp_path / "data")
    assert code == 1 and "Traceback" not in err  # a check that found a problem
    assert "entities: expected 12,842, found 6" in out
    assert mmkgc("datasets", "check", "DB15K", "--data-dir", tmp_path / "nothing")[0] == 1
    cfg = _config(tmp_path, dataset={"name": "DB15K"})
    _one_error(*mmkgc("train", cfg, "--data-dir", tmp_path / "data", "--run-dir", tmp_path / "r")[::2], 2,
               "not DB15K as registered", "entities: registry 12,842, copy 6")


def test_a_tsv_header_row_is_detected(mmkgc, tmp_path):
    data = tmp_path / "kg"
    data.mkdir()
    (data / "train.tsv").write_text("head\trelation\ttail\na\tr\tb\nb\tr\tc\n")
    (data / "valid.tsv").write_text("a\tr\tc\n")
    (data / "test.tsv").write_text("c\tr\ta\n")
    cfg = _config(tmp_path, dataset={"path": str(data), "format": "tsv"})
    _one_error(*mmkgc("train", cfg, "--run-dir", tmp_path / "r", "--device", "cpu")[::2], 2,
               f"{data / 'train.tsv'}:1:", "column header")


def test_predict_refuses_a_label_that_several_entities_share(mmkgc, tmp_path):
    labels = ["Paris", "France", "Paris", "Texas", "Lyon", "Nice"]
    data = _openke(tmp_path / "kg", labels, [(0, 0, 1), (2, 0, 3), (4, 0, 1), (5, 1, 1), (1, 1, 4)])
    run = tmp_path / "run"
    _train_tiny(mmkgc, tmp_path, run, dataset={"path": str(data)}, model={"dim": 8},
                evaluation={"every": 1, "batch_size": 4}, training={"epochs": 1, "batch_size": 8,
                                                                   "num_negatives": 2})
    _one_error(*mmkgc("predict", run, "--head", "Paris", "--relation", "r0", "--device", "cpu")[::2], 2,
               "'Paris' is shared by 2 entities (ids 0, 2)")
    # labels are printed as they are: a rich closing tag in a relation name is not markup
    _one_error(*mmkgc("predict", run, "--head", "Lyon", "--relation", "[/x]", "--device", "cpu")[::2], 2,
               "unknown relation '[/x]'")


def test_evaluate_refuses_a_changed_feature_table(mmkgc, tmp_path):
    table = tmp_path / "text.npy"
    np.save(table, np.random.default_rng(0).standard_normal((240, 8)).astype(np.float32))
    run = tmp_path / "run"
    _train_tiny(mmkgc, tmp_path, run, model={"representation": "concat",
                                             "modalities": [{"name": "text", "file": str(table)}]})
    assert mmkgc("evaluate", run, "--split", "valid")[0] == 0
    np.save(table, np.random.default_rng(1).standard_normal((240, 8)).astype(np.float32))
    _one_error(*mmkgc("evaluate", run, "--split", "valid")[::2], 2, "feature table(s) text changed")


def test_features_import_matching_no_entity_writes_nothing(mmkgc, tmp_path):
    data = _openke(tmp_path / "kg", ["a", "b", "c", "d", "e", "f"], [(0, 0, 1), (2, 1, 3), (4, 0, 5)])
    feats = tmp_path / "feats.npy"
    np.save(feats, np.ones((3, 4), dtype=np.float32))
    Path(f"{feats}.entities.txt").write_text("x\ny\nz\n")
    code, _, err = mmkgc("features", "import", data, feats, "--modality", "text", "--output", tmp_path / "t.safetensors")
    _one_error(code, err, 2, str(feats), "0 of 6", "nothing was written")
    Path(f"{feats}.entities.txt").write_text("a\nb\nz\n")
    code, _, err = mmkgc("features", "import", data, feats, "--modality", "text", "--output", tmp_path / "t.safetensors")
    _one_error(code, err, 2, "2 of 6", "--min-coverage 0.5")
    assert not (tmp_path / "t.safetensors").exists()
    code, _, err = mmkgc("features", "import", data, feats, "--modality", "text", "--min-coverage", "0.3",
                         "--output", tmp_path / "t.safetensors")
    assert code == 0, err
    assert (tmp_path / "t.safetensors").is_file()
