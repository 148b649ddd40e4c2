"""Full-length DB15K presets under a time budget on one GPU, and one timed training epoch per method.

What it runs (each an ordinary ``mmkgc train`` in its own process, so a failure of one does not stop the others):

1. **Epoch timing**, one after another (nothing else on the GPU): every method config of ``configs/db15k/``
   (the 10-minute CPU-budget configs) for one epoch, test evaluation off; the epoch's seconds come from the run's
   ``metrics.jsonl``.
2. **Presets**, side by side on the one GPU: AdaMF-MAT released, NativE and AFME with the published DB15K
   hyper-parameters (``configs/{adamf_mat,native,afme}/db15k*_text.yaml``: entity-name text in place of the
   released image/description tables), plus structure-only RotatE with the same optimiser, sampler and
   negatives, each for ``--minutes`` of training, validation on the cleaned validation split every
   ``--every`` epochs, test evaluation of the selected checkpoint at the end.

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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMED = ["rotate", "rotate_text", "adamf_text", "adamf_mat_text", "native_text", "afme_text", "imvia_text"]
PRESETS = {
    "adamf_mat_released": "configs/adamf_mat/db15k_released_text.yaml",
    "native": "configs/native/db15k_text.yaml",
    "afme": "configs/afme/db15k_text.yaml",
    # structure-only RotatE with the presets' sampler, negatives, loss temperature and NativE's learning rate
    "rotate": "configs/db15k/rotate.yaml",
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
    ap.add_argument("--only", nargs="*", help="subset of preset names")
    args = ap.parse_args()
    for p in (args.data_dir / "DB15K", args.text_file):
        if not p.exists():
            print(f"error: {p} does not exist", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "mmkgc-gpu-runs"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    common = [f"dataset.data_dir={args.data_dir.resolve()}", f"training.num_threads={args.threads}"]
    text_file = args.text_file.resolve()
    summary: dict = {"device": args.device, "timing": {}, "presets": {}}

    def save() -> None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))

    if not args.skip_timing:
        for name in TIMED:
            cfg = ROOT / "configs" / "db15k" / f"{name}.yaml"
            run_dir = work / f"epoch-{name}"
            sets = common + _text_modality(cfg, text_file) + [
                "training.epochs=1", "training.time_budget_minutes=null", "evaluation.test=false",
                "evaluation.every=1", "evaluation.patience=null"]
            t0 = time.perf_counter()
            with open(args.out / "log.txt", "a") as log:
                log.write(f"\n=== epoch timing {name}\n")
                log.flush()
                rc = subprocess.run(_command(cfg, run_dir, sets, args.device), stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=ROOT, timeout=240).returncode
            summary["timing"][name] = {"rc": rc, "wall_seconds": time.perf_counter() - t0, **_read_run(run_dir)}
            print(name, summary["timing"][name].get("epoch_seconds"), "rc", rc, flush=True)
            save()

    procs = {}
    for name, rel in PRESETS.items():
        if args.only and name not in args.only:
            continue
        cfg = ROOT / rel
        sets = common + _text_modality(cfg, text_file) + [
            f"training.time_budget_minutes={args.minutes}", f"evaluation.every={args.every}",
            "evaluation.patience=null"] + (ROTATE_AS_PRESET if name == "rotate" else [])
        log = open(args.out / f"log-{name}.txt", "w")
        procs[name] = (subprocess.Popen(_command(cfg, work / f"preset-{name}", sets, args.device), stdout=log,
                                        stderr=subprocess.STDOUT, env=env, cwd=ROOT), log, time.perf_counter())
    for name, (proc, log, t0) in procs.items():
        rc = proc.wait()
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
