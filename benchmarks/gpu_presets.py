"""Full-length DB15K presets under a time budget on one GPU, and one timed training epoch per method.

What it runs (each an ordinary ``mmkgc train`` in its own process, so a failure of one does not stop the others):

1. **Epoch timing**, in this process, one config after another (nothing else on the GPU): every method config
   of ``configs/db15k/`` (the 10-minute CPU-budget configs), one or two training epochs each.
2. **Presets**, side by side on the one GPU: AdaMF-MAT released, NativE and AFME with the published DB15K
   hyper-parameters (``configs/{adamf_mat,native,afme}/db15k*_text.yaml``: entity-name text in place of the
   released image/description tables), plus structure-only RotatE with the same optimiser, sampler and
   negatives, each for ``--minutes`` of training, validation on the cleaned validation split every
   ``--every`` epochs, test evaluation of the selected checkpoint at the end; beside them, the 10-minute CPU
   configs of RotatE, AdaMF-MAT and NativE until their validation MRR stops improving (convergence curves).

The text modality is read from ``--text-file`` (the cached all-MiniLM-L6-v2 table of the entity names, as
``mmkgc features extract`` / the ``*_text`` configs write it), so no encoder is loaded on the GPU machine.

Results: ``OUT/summary.json`` (per run: epochs, seconds per epoch, training seconds, test metrics) and
``OUT/runs.tar.gz`` (each run's ``metrics.json``, ``metrics.jsonl``, ``config.yaml`` and training curve).

Usage::

    python benchmarks/gpu_presets.py --data-dir DIR --text-file FILE --out OUT [--minutes 5.5] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMED = ["rotate", "rotate_text", "rotate_text_residual", "adamf_text", "adamf_text_frozen", "adamf_mat_text",
         "adamf_mat_text_every4_frozen", "native_text", "native_text_every4", "afme_text", "afme_text_every4",
         "imvia_text", "imvia_text_budget_nodropout"]
PRESETS = {
    "adamf_mat_released": "configs/adamf_mat/db15k_released_text.yaml",
    "native": "configs/native/db15k_text.yaml",
    "afme": "configs/afme/db15k_text.yaml",
    # structure-only RotatE with the presets' sampler, negatives, loss temperature and NativE's learning rate
    "rotate": "configs/db15k/rotate.yaml",
}
#: the 10-minute CPU configs (learning rate 1e-3, 64 negatives), trained until the validation MRR stops improving
#: (their own ``every: 5, patience: 6``) or the budget ends: the convergence curves
CONVERGENCE = {
    "converge_rotate": "configs/db15k/rotate.yaml",
    "converge_adamf_mat": "configs/db15k/adamf_mat_text.yaml",
    "converge_native": "configs/db15k/native_text.yaml",
}
ROTATE_AS_PRESET = ["training.num_negatives=128", "training.adversarial_temperature=2.0", "training.lr=0.0001",
                    "training.positives=with_replacement", "name=db15k-rotate-preset"]


def _text_modality(config: Path, text_file: Path) -> list[str]:
    """``--set`` replacing the config's modalities by the carried text table (nothing for structure-only)."""
    import yaml

    cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    mods = cfg.get("model", {}).get("modalities") or []
    if not mods:
        return []
    if [m["name"] for m in mods] != ["text"]:
        raise SystemExit(f"{config}: expected exactly one modality named 'text', got {[m['name'] for m in mods]}")
    return [f"model.modalities=[{{name: text, file: '{text_file}'}}]"]


def _command(config: Path, run_dir: Path, sets: list[str], device: str) -> list[str]:
    cmd = [sys.executable, "-m", "mmkgc", "train", str(config), "--run-dir", str(run_dir), "--device", device]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def _read_run(run_dir: Path) -> dict:
    """Epochs, per-epoch seconds and test headline of a finished (or failed) run directory."""
    out: dict = {"run_dir": run_dir.name}
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        epochs = [r for r in rows if "epoch" in r and "seconds" in r]
        out["epoch_seconds"] = [r["seconds"] for r in epochs]
        out["loss"] = [r.get("loss") for r in epochs]
        out["partial_last_epoch"] = bool(epochs and epochs[-1].get("partial"))
        out["valid"] = [{"epoch": r["epoch"], **{k: v for k, v in r.items() if k.startswith("valid")}}
                        for r in rows if any(k.startswith("valid") for k in r)]
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        out["training"] = m.get("training")
        out["test"] = (m.get("summary") or {}).get("test")
        out["test_seconds"] = m.get("test_seconds")
    return out


def time_epochs(args, common: list[str], text_file: Path) -> dict:
    """One process, nothing else on the device: build each ``TIMED`` config's model and run training epochs
    (the first includes warm-up; a second is timed when the first took under 30 s and less than
    ``--timing-seconds`` have passed since the first config started).

    :returns: ``{config: {"epoch_seconds": [...], "batches": n}}`` (or ``{"error": message}``).
    """
    import torch

    from mmkgc.config import load_config
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    device = torch.device(args.device)
    started = time.perf_counter()
    out: dict = {}
    for name in args.timed:
        path = ROOT / "configs" / "db15k" / f"{name}.yaml"
        try:
            cfg = load_config(path, common + _text_modality(path, text_file))
            torch.set_num_threads(cfg.training.num_threads or args.threads)
            data = load_data(cfg)
            model = build_model(cfg, data)
            trainer = Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=cfg.seed, device=device)
            seconds = []
            for _ in range(2):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                trainer._epoch(None)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds.append(time.perf_counter() - t0)
                if seconds[0] >= 30 or time.perf_counter() - started > args.timing_seconds:
                    break
            out[name] = {"epoch_seconds": seconds, "batches": len(trainer.batcher)}
            if device.type == "cuda":
                out[name]["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
                torch.cuda.reset_peak_memory_stats()
            del trainer, model
        except Exception as err:  # one failing config must not lose the others' timings
            out[name] = {"error": f"{type(err).__name__}: {err}"}
        print("epoch", name, out[name], flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="directory holding DB15K/ (OpenKE layout)")
    ap.add_argument("--text-file", type=Path, required=True, help="cached name-text feature table (.safetensors)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=5.5, help="training budget of each preset run")
    ap.add_argument("--every", type=int, default=20, help="validate the presets every this many epochs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=3, help="torch CPU threads per run")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds from the start after which unfinished runs are stopped (SIGTERM) and the results "
                         "written as they are")
    ap.add_argument("--only", nargs="*", help="subset of the preset and convergence run names")
    ap.add_argument("--timed", nargs="*", default=TIMED, help="subset of the configs whose epochs are timed")
    ap.add_argument("--timing-seconds", type=float, default=90.0,
                    help="after this many seconds of timing, time one epoch per remaining config instead of two")
    args = ap.parse_args()
    for p in (args.data_dir / "DB15K", args.text_file):
        if not p.exists():
            print(f"error: {p} does not exist", file=sys.stderr)
            return 2
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mmkgc-gpu-runs-"))  # fresh: a leftover run directory would refuse to start
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = [f"dataset.data_dir={args.data_dir.resolve()}", f"training.num_threads={args.threads}"]
    text_file = args.text_file.resolve()
    summary: dict = {"device": args.device, "timing": {}, "presets": {}}

    def save() -> None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))

    if not args.skip_timing:
        summary["timing"] = time_epochs(args, common, text_file)
        save()

    procs = {}
    runs = {name: (rel, [f"evaluation.every={args.every}", "evaluation.patience=null"]
                   + (ROTATE_AS_PRESET if name == "rotate" else [])) for name, rel in PRESETS.items()}
    runs.update({name: (rel, []) for name, rel in CONVERGENCE.items()})  # the configs' own every / patience
    for name, (rel, extra) in runs.items():
        if args.only and name not in args.only:
            continue
        cfg = ROOT / rel
        sets = common + _text_modality(cfg, text_file) + [f"training.time_budget_minutes={args.minutes}"] + extra
        log = open(args.out / f"log-{name}.txt", "w")
        procs[name] = (subprocess.Popen(_command(cfg, work / f"preset-{name}", sets, args.device), stdout=log,
                                        stderr=subprocess.STDOUT, env=env, cwd=ROOT), log, time.perf_counter())
    for name, (proc, log, t0) in procs.items():
        try:
            left = None if args.deadline is None else max(1.0, args.deadline - (time.perf_counter() - started))
            rc = proc.wait(timeout=left)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                rc = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            print(name, "stopped at the deadline", flush=True)
        log.close()
        summary["presets"][name] = {"rc": rc, "wall_seconds": time.perf_counter() - t0,
                                    **_read_run(work / f"preset-{name}")}
        print(name, "rc", rc, summary["presets"][name].get("test"), flush=True)
        save()

    with tarfile.open(args.out / "runs.tar.gz", "w:gz") as tar:
        for run_dir in sorted(work.iterdir()):
            for f in ("metrics.json", "metrics.jsonl", "config.yaml", "training_curve.png"):
                if (run_dir / f).is_file():
                    tar.add(run_dir / f, arcname=f"{run_dir.name}/{f}")
        for f in sorted(args.out.glob("log*.txt")):
            tar.add(f, arcname=f"logs/{f.name}")
    for f in args.out.glob("log-*.txt"):
        f.unlink()
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
