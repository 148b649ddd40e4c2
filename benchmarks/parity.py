"""Parity benchmark: mmkgc against the official implementations of AdaMF-MAT, NativE and IMVIA on identical inputs.

The official code is never part of mmkgc: the user obtains a checkout (zjukg/AdaMF-MAT, zjukg/NATIVE,
kernelLZ/ICASSP2025_IMVIA_Code) and passes it with ``--reference``.  The benchmark copies that checkout into a
scratch directory (the user's checkout is never written to), builds the OpenKE C++ sampler there with ``g++``
(AdaMF-MAT, NativE), writes the inputs in the official layout and runs the official entry point unmodified through
``benchmarks/parity_launcher.py`` (which only redirects ``.cuda()`` to the CPU when there is no GPU and records
per-epoch losses and the final test metrics).  mmkgc then trains the same model on the same inputs through its
public pipeline.  Both sides use:

* the DB15K split of ``--data-dir`` (the OpenKE files, identical to the ones the official repositories ship; the
  benchmark checks that, file by file, and refuses to run otherwise);
* the same feature tables, written once in the official ``.pth`` layout (``torch.save`` of a float32 tensor
  ``[N, d]`` whose row ``i`` is entity id ``i``): text = mmkgc's name-text table (all-MiniLM-L6-v2 over the cleaned
  entity names, 384-d, as ``configs/db15k/*_text.yaml``), read from mmkgc's feature cache.  No image table exists
  for these runs, so the visual slot the official code requires holds a stand-in (``--visual``): ``text`` (the
  same text table again; default for AdaMF-MAT/NativE) or ``zeros`` (an all-zero table; IMVIA's default, whose
  DB15K branch needs 4096-d images and 768-d text: the text table is then written twice side by side, ``[x; x]``,
  and both sides apply the published fixed pooling to 256);
* the same hyper-parameters (``--epochs``, ``--lr`` and the method's published values otherwise, see
  :func:`default_settings`), the same seed per run and the final-epoch model tested once on the test split with
  the official protocol (OpenKE filtered ranking with optimistic ties for AdaMF-MAT/NativE; random tie-breaking
  for IMVIA).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/parity.py --method adamf_mat --reference ~/src/AdaMF-MAT \\
        --data-dir ../shared/datasets --epochs 20 --lr 1e-3 --seeds 42 --out /tmp/parity \\
        --json docs/results/parity.json
    python benchmarks/parity.py --check-categories --reference ~/src/NATIVE --data-dir ../shared/datasets

``--check-categories`` compares mmkgc's 1-1/1-N/N-1/N-N relation categories with the official category file
``benchmarks/<DATASET>/test2id_all.txt`` of every dataset both have (DB15K, MKG-W, MKG-Y).  ``--check-sampler``
runs OpenKE's negative sampler from an AdaMF-MAT/NativE checkout and measures the parity coupling between a
positive and its corrupting entities (``benchmarks/parity_sampler_check.py``).  ``--text-table`` takes the
name-text table from a file instead of the feature cache; ``--sampler-library`` a prebuilt ``Base.so`` instead of
``g++``.

Exit codes: 0 parity reached (or categories identical, or no sampler coupling), 1 a check failed (MRR gap above
``--tolerance``, a category mismatch, a coupled sampler, or the official program failed), 2 a usage error (missing/wrong ``--reference``, no ``g++``, unknown dataset directory), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "parity_launcher.py"
OPENKE_FILES = ("entity2id.txt", "relation2id.txt", "train2id.txt", "valid2id.txt", "test2id.txt")
CATEGORY_LABELS = ("1-1", "1-N", "N-1", "N-N")


class ParityError(Exception):
    """A usage error of the benchmark (exit code 2): the message names the option, path or file."""


@dataclass(frozen=True)
class MethodSpec:
    """How to drive one official repository.

    :param entry: the official entry script, relative to the checkout.
    :param markers: files that must exist in a checkout of that repository (to reject a wrong ``--reference``).
    :param repository: the upstream repository, for messages.
    :param trainer: the OpenKE trainer class whose steps the launcher records (``None``: IMVIA).
    :param openke: the repository uses OpenKE's C++ sampler and tester (built with ``g++``).
    """

    entry: str
    markers: tuple[str, ...]
    repository: str
    trainer: str | None
    openke: bool = True
    visual: str = "text"


METHODS: dict[str, MethodSpec] = {
    "adamf_mat": MethodSpec(
        "run_adamf_mat.py",
        ("run_adamf_mat.py", "args.py", "mmkgc/base/Base.cpp", "mmkgc/module/model/AdvMixRotatE.py",
         "mmkgc/config/AdvMixTrainer.py"),
        "zjukg/AdaMF-MAT", "AdvMixTrainer"),
    "native": MethodSpec(
        "run_adv_wgan_gp.py",
        ("run_adv_wgan_gp.py", "args.py", "mmkgc/base/Base.cpp", "mmkgc/module/model/AdvRelRotatE.py",
         "mmkgc/config/WCGTrainerGP.py"),
        "zjukg/NATIVE", "WCGTrainerGP"),
    "imvia": MethodSpec(
        "train.py", ("train.py", "models/RelMoE.py", "models/modules.py", "utils/data_loader.py", "utils/data_util.py"),
        "kernelLZ/ICASSP2025_IMVIA_Code", None, openke=False, visual="zeros"),
}


def default_settings(method: str) -> dict[str, Any]:
    """The shared hyper-parameters of a method: the official DB15K script's values (methods.md §6.5, §7.1, §4.5).

    AdaMF-MAT: ``scripts/run_db15k.sh`` (dim 250, margin 12, K 128, mu 0) + ``args.py`` (lrg 1e-4, adv_temp 2).
    NativE: the DB15K values of ``scripts/run_db15k.sh`` (dim 250, margin 12, K 128, mu 1e-4, lrg 1e-4) run through
    the two-modality entry point ``run_adv_wgan_gp.py`` (L2 1e-5, GP 0.1 hard-coded there).
    IMVIA: ``train.py`` defaults with the README learning rate (dim = r_dim = 256, batch 1024, mu 1e-4,
    temp 0.07, 3 experts, seed 10010).  ``epochs`` and ``lr`` are set per run (``--epochs``, ``--lr``).

    :raises ParityError: unknown method.
    """
    if method == "adamf_mat":
        return {"dim": 250, "margin": 12.0, "epsilon": 2.0, "batch_size": 1024, "num_negatives": 128, "lr": 2e-5,
                "lrg": 1e-4, "mu": 0.0, "adv_temp": 2.0, "epochs": 1000}
    if method == "native":
        return {"dim": 250, "margin": 12.0, "epsilon": 2.0, "batch_size": 1024, "num_negatives": 128, "lr": 1e-4,
                "lrg": 1e-4, "mu": 1e-4, "adv_temp": 2.0, "l2": 1e-5, "gp_weight": 0.1, "epochs": 1000}
    if method == "imvia":
        return {"dim": 256, "relation_dim": 256, "batch_size": 1024, "lr": 1e-3, "mu": 1e-4, "temp": 0.07,
                "num_experts": 3, "align_weight": 0.01, "epochs": 2000}
    raise ParityError(f"--method: unknown method {method!r} (known: {', '.join(METHODS)})")


def merge_settings(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """:func:`default_settings` with the given entries replaced (``None`` values are ignored).

    :raises ParityError: an override key the method does not have, or a non-positive epochs/lr/dim.
    """
    settings = default_settings(method)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in settings:
            raise ParityError(f"setting {key!r} does not apply to {method} (its settings: {', '.join(settings)})")
        settings[key] = value
    for key in ("epochs", "lr", "dim", "batch_size", "relation_dim"):
        if key in settings and not settings[key] > 0:
            raise ParityError(f"--{key.replace('_', '-')}: must be positive, got {settings[key]}")
    return settings


# ------------------------------------------------------------------------------------------------ reference side


def check_reference(method: str, reference: Path) -> Path:
    """Check that ``reference`` is a checkout of the method's official repository.

    :returns: the resolved path.
    :raises ParityError: not a directory, or a marker file of the repository is missing (the message lists them).
    """
    spec = METHODS[method]
    reference = Path(reference).expanduser()
    if not reference.is_dir():
        raise ParityError(f"--reference: {reference} is not a directory (expected a checkout of "
                          f"https://github.com/{spec.repository})")
    missing = [m for m in spec.markers if not (reference / m).is_file()]
    if missing:
        raise ParityError(f"--reference: {reference} is not a checkout of {spec.repository} for --method {method}: "
                          f"missing {', '.join(missing)}")
    return reference.resolve()


def check_split(reference: Path, data_dir: Path, dataset: str = "DB15K") -> None:
    """Require the official repository's ``benchmarks/<dataset>`` OpenKE files to equal ``data_dir``'s.

    :raises ParityError: a file differs or is missing on either side.
    """
    ours, theirs = data_dir / dataset, reference / "benchmarks" / dataset
    for name in OPENKE_FILES:
        if not (ours / name).is_file():
            raise ParityError(f"--data-dir: {ours / name} does not exist")
        if not (theirs / name).is_file():
            raise ParityError(f"--reference: {theirs / name} does not exist")
        if (ours / name).read_bytes() != (theirs / name).read_bytes():
            raise ParityError(f"{theirs / name} differs from {ours / name}: the two sides would not train on the "
                              "same split")


def write_openke_feature_pth(values: torch.Tensor, path: Path) -> Path:
    """Write a feature table in the AdaMF-MAT/NativE/IMVIA ``.pth`` layout: ``torch.save`` of one contiguous float32
    CPU tensor ``[N, d]``, row ``i`` = entity id ``i`` (what the official code reads from ``<DATASET>-visual.pth``).

    The file is written to a temporary name in the same directory and moved into place, so a reader never sees a
    partial file.

    :param values: ``[N, d]`` float tensor (any float dtype, any device).
    :raises ValueError: ``values`` is not 2-D, is empty, or has NaN/inf entries.
    """
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"a feature table is [N, d] with N, d > 0, got {tuple(values.shape)}")
    out = values.detach().to("cpu", torch.float32).contiguous().clone()
    if not torch.isfinite(out).all():
        raise ValueError("feature table has NaN/inf entries")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(out, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def stand_in_tables(method: str, text: torch.Tensor, visual: str) -> dict[str, torch.Tensor]:
    """The (visual, textual) tables both sides read, from the name-text table ``text`` ``[N, 384]``.

    AdaMF-MAT / NativE: textual = ``text``; visual = ``text`` (``visual="text"``) or zeros of the same width.
    IMVIA (its DB15K branch pools 4096-d images and 768-d text to 256): textual = ``[text; text]`` ``[N, 768]``;
    visual = zeros ``[N, 4096]`` (``visual="zeros"``) or ``text`` repeated to 4096 columns (``visual="text"``:
    10 copies plus the first 256 columns).

    :raises ParityError: unknown ``visual``.
    """
    if visual not in ("text", "zeros"):
        raise ParityError(f"--visual: unknown stand-in {visual!r} (known: text, zeros)")
    text = text.to(torch.float32)
    if method == "imvia":
        textual = torch.cat([text, text], dim=1)
        if visual == "zeros":
            vis = torch.zeros(text.shape[0], 4096)
        else:
            reps = -(-4096 // text.shape[1])
            vis = text.repeat(1, reps)[:, :4096].contiguous()
        return {"visual": vis, "textual": textual}
    return {"visual": text.clone() if visual == "text" else torch.zeros_like(text), "textual": text.clone()}


def reference_argv(method: str, settings: dict[str, Any], seed: int, device: str, save: Path) -> list[str]:
    """Command-line arguments of the official entry point for these settings (DB15K)."""
    s = settings
    if method in ("adamf_mat", "native"):
        argv = ["-dataset=DB15K", f"-batch_size={s['batch_size']}", f"-margin={s['margin']}",
                f"-epoch={s['epochs']}", f"-dim={s['dim']}", f"-mu={s['mu']}", f"-save={save}",
                f"-neg_num={s['num_negatives']}", f"-learning_rate={s['lr']}", f"-lrg={s['lrg']}",
                f"-adv_temp={s['adv_temp']}", f"-seed={seed}"]
        return argv
    return ["--dataset", "DB15K", "--lr", str(s["lr"]), "--epochs", str(s["epochs"]), "--seed", str(seed),
            "--dim", str(s["dim"]), "--r_dim", str(s["relation_dim"]), "--batch_size", str(s["batch_size"]),
            "--mu", str(s["mu"]), "--temp", str(s["temp"]), "--n_exp", str(s["num_experts"]),
            "--eval_freq", str(s["epochs"]), "--cuda", "0" if device == "cuda" else "-1", "--save", "0"]


def _copy_checkout(reference: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", "checkpoint", "log", "*.so", "__pycache__", "*.pth", "*.ckpt",
                                    "datasets", "embeddings")
    shutil.copytree(reference, dest, ignore=ignore, symlinks=False)


def install_sampler(dest: Path, sampler_library: Path | None = None) -> None:
    """Put OpenKE's ``Base.so`` into ``dest/mmkgc/release``: a copy of ``sampler_library``, or built from
    ``dest/mmkgc/base/Base.cpp`` with ``g++`` (the flags of the repositories' ``make.sh`` minus ``-march=native``).

    :raises ParityError: ``sampler_library`` missing, no ``g++`` on the PATH, or the build fails (its output is in
        the message).
    """
    release = dest / "mmkgc" / "release"
    release.mkdir(exist_ok=True)
    if sampler_library is not None:
        if not Path(sampler_library).is_file():
            raise ParityError(f"--sampler-library: {sampler_library} does not exist")
        shutil.copy(sampler_library, release / "Base.so")
        return
    gxx = shutil.which("g++")
    if gxx is None:
        raise ParityError("g++ is not on the PATH: it is needed to build OpenKE's sampler (mmkgc/base/Base.cpp); "
                          "install it or pass --sampler-library")
    build = subprocess.run([gxx, "./base/Base.cpp", "-fPIC", "-shared", "-o", "./release/Base.so", "-pthread", "-O3"],
                           cwd=dest / "mmkgc", capture_output=True, text=True)
    if build.returncode != 0:
        raise ParityError(f"building OpenKE's Base.so failed:\n{build.stderr[-2000:]}")


def prepare_reference(method: str, reference: Path, workdir: Path, triples: Any,
                      tables: dict[str, torch.Tensor], sampler_library: Path | None = None) -> Path:
    """Copy the checkout to ``workdir/reference``, install OpenKE's ``Base.so`` there (:func:`install_sampler`;
    AdaMF-MAT, NativE) and write the inputs in the official layout.

    :param sampler_library: a ``Base.so`` built from the same ``mmkgc/base/Base.cpp`` (for machines without ``g++``).
    :returns: the directory to run the official entry point in.
    :raises ParityError: see :func:`install_sampler`.
    """
    dest = workdir / "reference"
    if dest.exists():
        shutil.rmtree(dest)
    _copy_checkout(reference, dest)
    if METHODS[method].openke:
        install_sampler(dest, sampler_library)
        write_openke_feature_pth(tables["visual"], dest / "embeddings" / "DB15K-visual.pth")
        write_openke_feature_pth(tables["textual"], dest / "embeddings" / "DB15K-textual.pth")
    else:
        write_imvia_dataset(triples, tables, dest / "datasets" / "DB15K")
    return dest


def write_imvia_dataset(triples: Any, tables: dict[str, torch.Tensor], out: Path) -> None:
    """Write the IMF/MoMoK/IMVIA layout (methods.md §1.2): ``entity2id.txt`` / ``relation2id.txt`` (``name id``,
    no count line), ``train.txt`` / ``valid.txt`` / ``test.txt`` (``h r t`` names, one space) and
    ``img_features.pth`` / ``text_features.pth``.  Entity ``i`` is named ``e<i>`` and relation ``j`` ``r<j>``, so
    the official loader assigns the same ids as mmkgc (the original DB15K names are IRIs without spaces, but the
    ids are what matters)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "entity2id.txt").write_text("".join(f"e{i} {i}\n" for i in range(triples.num_entities)))
    (out / "relation2id.txt").write_text("".join(f"r{j} {j}\n" for j in range(triples.num_relations)))
    for split, name in (("train", "train.txt"), ("valid", "valid.txt"), ("test", "test.txt")):
        rows = getattr(triples, split).tolist()
        (out / name).write_text("".join(f"e{h} r{r} e{t}\n" for h, r, t in rows))
    write_openke_feature_pth(tables["visual"], out / "img_features.pth")
    write_openke_feature_pth(tables["textual"], out / "text_features.pth")


def read_launcher_log(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(per-epoch records, test record) from a launcher JSON-lines log (missing file: no records)."""
    epochs: list[dict[str, Any]] = []
    test = None
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "test" in rec:
                test = rec
            else:
                epochs.append(rec)
    return epochs, test


def run_reference(method: str, run_dir: Path, settings: dict[str, Any], seed: int, device: str, threads: int,
                  log_file: Path, skip_branch_tests: bool = False) -> dict[str, Any]:
    """Run the official entry point in ``run_dir`` through the launcher; returns losses, test metrics, seconds.

    ``skip_branch_tests`` (IMVIA): the launcher's ``--imvia-skip-branch-tests``, no single-branch test passes after
    the ensemble's (they are only printed).

    :raises RuntimeError: the official program failed (the tail of its output is in the message) or reported no
        test metrics.
    """
    spec = METHODS[method]
    jsonl = log_file.with_suffix(".jsonl")
    jsonl.unlink(missing_ok=True)
    cmd = [sys.executable, str(LAUNCHER), "--log", str(jsonl), "--device", device, "--threads", str(threads)]
    cmd += ["--trainer", spec.trainer] if spec.trainer else ["--imvia"]
    if skip_branch_tests:
        cmd.append("--imvia-skip-branch-tests")
    cmd += ["--", spec.entry, *reference_argv(method, settings, seed, device, run_dir / "parity.ckpt")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the official package is also called mmkgc
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with log_file.open("w") as fh:
        proc = subprocess.run(cmd, cwd=run_dir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    epochs, test = read_launcher_log(jsonl)
    if proc.returncode != 0 or test is None:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the official {method} run failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    return {"losses": [e["loss"] for e in epochs], "generator_losses": [e.get("loss_g") for e in epochs],
            "test": test["test"], "seconds": seconds, "command": " ".join(cmd[1:])}


# ------------------------------------------------------------------------------------------------ mmkgc side


def mmkgc_config(method: str, settings: dict[str, Any], seed: int, visual_file: Path, text_file: Path) -> dict:
    """The mmkgc experiment config equivalent to the official run (as a mapping for :func:`parse_config`).

    Both sides: the final-epoch model is tested once (validation only after the last epoch, no early stopping).
    AdaMF-MAT: RotatE, linear adapters, trainable feature tables, tanh attention fusion, OpenKE sampler
    (Bernoulli, train-filtered, positives with replacement), self-adversarial sigmoid loss (alpha = adv_temp),
    MAT with the released across-batch fake weighting.  NativE: MLP adapters, frozen tables, relation-temperature
    fusion, WGAN-GP (mu, GP 0.1) and L2 1e-5.  IMVIA: the published switches (CLUB batch-element indexing, no
    log-variance term, unclamped temperature, trainable pooled tables) and random tie-breaking.
    """
    s = settings
    modalities = [{"name": "visual", "file": str(visual_file)}, {"name": "textual", "file": str(text_file)}]
    evaluation = {"every": s["epochs"], "patience": None, "split": "valid_clean", "metric": "mrr",
                  "tie_policy": "optimistic"}
    if method in ("adamf_mat", "native"):
        native = method == "native"
        training: dict[str, Any] = {
            "loop": "negative_sampling", "epochs": s["epochs"], "batch_size": s["batch_size"],
            "num_negatives": s["num_negatives"], "sampler": s.get("mmkgc_sampler", "bernoulli"),
            "filtered_negatives": True,
            "positives": "with_replacement", "loss": "nssa", "adversarial_temperature": s["adv_temp"],
            "optimizer": "adam", "lr": s["lr"], "num_threads": None,
        }
        if native:
            training["adversarial"] = {"kind": "wgan_gp", "mu": s["mu"], "generator_lr": s["lrg"],
                                       "gp_weight": s["gp_weight"]}
            training["regularizer"] = "l2"
            training["regularizer_weight"] = s["l2"]
        else:
            training["adversarial"] = {"kind": "mat", "mu": s["mu"], "generator_lr": s["lrg"],
                                       "fake_weighting": "across_batch"}
        model = {"scorer": "rotate", "dim": s["dim"], "scorer_options": {"margin": s["margin"], "epsilon": s["epsilon"]},
                 "representation": "fused", "adapter": "mlp" if native else "linear",
                 "trainable_features": not native,
                 "fusion": {"kind": "attention", "relation_temperature": native},
                 "modalities": modalities}
    else:
        model = {"method": "imvia", "dim": s["dim"], "reciprocal": True, "modalities": modalities,
                 "imvia": {"num_experts": s["num_experts"], "relation_dim": s["relation_dim"],
                           "modality_input": "table", "pooling": "imvia_256", "decision_fusion": "mean",
                           "align_weight": s["align_weight"], "align_temperature": s["temp"], "align_learnable": True,
                           "align_min_temperature": None, "mi_weight": s["mu"], "club_legacy_indexing": True,
                           "club_include_logvar": False, "label_smoothing": 0.1, "label_smoothing_variant": "imvia",
                           # the published ClipLoss learns tau itself: a log-tau parameter moves 14x slower at
                           # 0.07 (benchmarks/parity_imvia_step.py: +0.15 loss after 5 steps)
                           "align_temperature_parameterization": "raw", "align_head": "shared"}}
        training = {"loop": "one_to_n", "loss": "bce", "epochs": s["epochs"], "batch_size": s["batch_size"],
                    "optimizer": "adam", "lr": s["lr"]}
        evaluation["tie_policy"] = "random"
    return {"name": f"parity-{method}", "seed": seed, "dataset": {"name": "DB15K"}, "model": model,
            "training": training, "evaluation": evaluation}


def run_mmkgc(method: str, cfg_map: dict, data_dir: Path, run_dir: Path, device: str, threads: int) -> dict[str, Any]:
    """Train and test with mmkgc's pipeline; returns losses, test metrics (the official tie policy), seconds."""
    from mmkgc.config import parse_config
    from mmkgc.pipeline import run_experiment

    cfg_map = json.loads(json.dumps(cfg_map))
    cfg_map["dataset"]["data_dir"] = str(data_dir)
    cfg = parse_config(cfg_map, source=f"parity-{method}")
    torch.set_num_threads(threads)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    lines: list[str] = []
    t0 = time.perf_counter()
    metrics = run_experiment(cfg, run_dir, device=device, log=lines.append)
    seconds = time.perf_counter() - t0
    (run_dir / "parity.log").write_text("\n".join(lines) + "\n")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    policy = cfg.evaluation.tie_policy
    test = metrics.get("summary", {}).get("test")
    return {"losses": [h["loss"] for h in history], "terms": [h.get("terms") for h in history],
            "test": test[policy] if test else None, "test_all_policies": test, "seconds": seconds}


# ------------------------------------------------------------------------------------------------ categories


def read_category_file(path: Path) -> list[tuple[int, int, int, int]]:
    """Rows ``(category, h, t, r)`` of an OpenKE ``test2id_all.txt`` (first line: count; then ``cat<TAB>h t r``).

    :raises ParityError: malformed line (file and line number in the message) or wrong count.
    """
    lines = path.read_text().splitlines()
    if not lines:
        raise ParityError(f"{path}: empty file")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ParityError(f"{path}:1: expected the number of rows, got {lines[0]!r}") from None
    rows = []
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
            raise ParityError(f"{path}:{no}: expected 'category<TAB>head tail relation', got {line!r}")
        c, h, t, r = (int(p) for p in parts)
        if c not in (0, 1, 2, 3):
            raise ParityError(f"{path}:{no}: category {c} is not 0-3")
        rows.append((c, h, t, r))
    if len(rows) != count:
        raise ParityError(f"{path}: header says {count} rows, found {len(rows)}")
    return rows


def mmkgc_relation_categories(triples: Any) -> torch.Tensor:
    """mmkgc's category of every relation (int64 ``[R]``, 0 = 1-1 ... 3 = N-N): the TripleSet's
    ``relation_categories`` (OpenKE's ``n-n.py`` rule over train + valid + test, repeated rows counted), which is
    what this check tests against the official files."""
    return triples.relation_categories


def compare_categories(categories: Sequence[int], rows: Sequence[tuple[int, int, int, int]]) -> dict[str, Any]:
    """Compare per-relation categories (0 = 1-1, 1 = 1-N, 2 = N-1, 3 = N-N) with official category rows
    ``(category, h, t, r)`` (:func:`read_category_file`).

    :returns: ``{"test_triples", "mismatched_triples", "mismatched_relations": [{"relation", "official",
        "mmkgc"}], "official_counts", "mmkgc_counts"}`` (counts of test triples per category label).
    """
    bad_triples = sum(1 for c, _, _, r in rows if categories[r] != c)
    official_by_rel: dict[int, int] = {}
    for c, _, _, r in rows:
        official_by_rel.setdefault(r, c)
    bad_rels = [{"relation": r, "official": CATEGORY_LABELS[c], "mmkgc": CATEGORY_LABELS[categories[r]]}
                for r, c in sorted(official_by_rel.items()) if categories[r] != c]

    def count(cs: Sequence[int]) -> dict[str, int]:
        return {CATEGORY_LABELS[k]: sum(1 for x in cs if x == k) for k in range(4)}

    return {"test_triples": len(rows), "mismatched_triples": bad_triples, "mismatched_relations": bad_rels,
            "official_counts": count([c for c, *_ in rows]), "mmkgc_counts": count([categories[r] for *_, r in rows])}


def check_categories(reference: Path, data_dir: Path, datasets: Sequence[str] | None = None) -> dict[str, Any]:
    """Compare mmkgc's relation categories with the official ``benchmarks/<D>/test2id_all.txt`` of each dataset
    present both in the checkout and in ``data_dir``.

    :returns: ``{dataset: {"test_triples", "mismatched_triples", "mismatched_relations": [{relation, official,
        mmkgc}], "official_counts", "mmkgc_counts"}}``.
    :raises ParityError: ``reference`` has no ``benchmarks/*/test2id_all.txt``, or no dataset is in both places.
    """
    from mmkgc.data.registry import load_dataset

    reference = Path(reference).expanduser()
    bench = reference / "benchmarks"
    if not bench.is_dir():
        raise ParityError(f"--reference: {reference} has no benchmarks/ directory (expected an OpenKE-based "
                          "checkout such as zjukg/NATIVE or zjukg/AdaMF-MAT)")
    found = sorted(p.parent.name for p in bench.glob("*/test2id_all.txt"))
    if datasets is not None:
        found = [d for d in found if d in datasets]
    usable = [d for d in found if (Path(data_dir) / d / "train2id.txt").is_file()]
    if not usable:
        raise ParityError(f"no dataset has both {bench}/<D>/test2id_all.txt and {data_dir}/<D>/train2id.txt "
                          f"(official category files for: {', '.join(found) or 'none'})")
    report: dict[str, Any] = {}
    for name in usable:
        triples = load_dataset(name, data_dir=data_dir)
        rows = read_category_file(bench / name / "test2id_all.txt")
        test = triples.test.tolist()
        if [(h, t, r) for _, h, t, r in rows] != [(h, t, r) for h, r, t in test]:
            raise ParityError(f"{bench / name / 'test2id_all.txt'} does not list {data_dir}/{name}/test2id.txt's "
                              "triples in order: the splits differ")
        report[name] = compare_categories(mmkgc_relation_categories(triples).tolist(), rows)
    return report


# ------------------------------------------------------------------------------------------------ driver


def _machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"


def load_text_table(data_dir: Path, text_table: Path | None = None):
    """DB15K and its name-text table ``[N, 384]``: from ``text_table`` (an mmkgc feature-table file, e.g. the cache
    entry ``$MMKGC_HOME/features/DB15K/text-<key>.safetensors``) or from mmkgc's feature cache, computing it with
    all-MiniLM-L6-v2 over the cleaned entity names when absent (as ``configs/db15k/*_text.yaml``).

    :raises ParityError: ``text_table`` does not exist.
    """
    from mmkgc.data.registry import load_dataset

    triples = load_dataset("DB15K", data_dir=data_dir)
    if text_table is not None:
        from mmkgc.features.io import load_feature_table

        if not Path(text_table).is_file():
            raise ParityError(f"--text-table: {text_table} does not exist")
        table = load_feature_table(text_table, num_entities=triples.num_entities)
    else:
        from mmkgc.features.cache import cached_text_features
        from mmkgc.features.text import build_text_encoder

        table = cached_text_features(triples.name, triples.entity_labels, build_text_encoder("all-MiniLM-L6-v2"),
                                     modality="text", source="label")
    return triples, table.values.to(torch.float32)


PER_SEED_FIELDS = ("seeds", "mmkgc", "reference", "loss_curves", "test_metrics", "seconds")


def _sides_of(entry: dict[str, Any], seed: int) -> set[str]:
    """The sides (``mmkgc``, ``reference``) with test metrics for ``seed`` in a ``parity.json`` entry."""
    return {side for item in entry.get("test_metrics", []) if item.get("seed") == seed
            for side in ("mmkgc", "reference") if item.get(side) is not None}


def _seed_item(entry: dict[str, Any], key: str, seed: int) -> dict[str, Any]:
    return next((dict(item) for item in entry.get(key, []) if item.get("seed") == seed), {"seed": seed})


def merge_entries(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Combine two ``parity.json`` entries of one method.

    When ``old`` has the same settings, visual stand-in and device as ``new``, the two add up: seeds run in
    separate invocations are concatenated, and a seed that one invocation ran with ``--side reference`` and the
    other with ``--side mmkgc`` gets both sides (its loss curves, test metrics and seconds combined); the means and
    the gap are recomputed and ``command`` becomes the list of the invocations.  Otherwise (other settings, or a
    side of a seed measured again) ``new`` replaces ``old``.  A seed whose ``mmkgc`` or ``reference`` side is
    missing leaves that list shorter than ``seeds``.
    """
    same = old is not None and all(old.get(k) == new.get(k) for k in ("settings", "visual_stand_in", "device"))
    if not same:
        return new
    shared = [seed for seed in new.get("seeds", []) if seed in old.get("seeds", [])]
    if any(_sides_of(old, seed) & _sides_of(new, seed) or not _sides_of(new, seed) for seed in shared):
        return new
    merged = dict(new)
    if not shared:
        for key in PER_SEED_FIELDS:
            merged[key] = list(old.get(key, [])) + list(new.get(key, []))
    else:
        seeds = list(old["seeds"]) + [seed for seed in new["seeds"] if seed not in old["seeds"]]
        merged["seeds"] = seeds
        for key in ("loss_curves", "test_metrics", "seconds"):
            merged[key] = []
            for seed in seeds:
                item = _seed_item(old, key, seed)
                item.update({k: v for k, v in _seed_item(new, key, seed).items() if v is not None})
                merged[key].append(item)
        for side in ("mmkgc", "reference"):
            merged[side] = [item[side]["mrr"] for item in merged["test_metrics"] if item.get(side)]
    commands = old.get("command")
    commands = commands if isinstance(commands, list) else [commands]
    merged["command"] = commands + [new["command"]]
    merged.pop("mmkgc_mean", None), merged.pop("reference_mean", None), merged.pop("mean_abs_gap_points", None)
    if merged["mmkgc"] and merged["reference"]:
        merged["mmkgc_mean"] = sum(merged["mmkgc"]) / len(merged["mmkgc"])
        merged["reference_mean"] = sum(merged["reference"]) / len(merged["reference"])
        merged["mean_abs_gap_points"] = 100 * abs(merged["mmkgc_mean"] - merged["reference_mean"])
    return merged


def update_results(path: Path, method: str, entry: dict[str, Any], replace: bool = False) -> dict[str, Any]:
    """Merge ``{method: entry}`` into the JSON file ``path`` (created if absent; see :func:`merge_entries`, or
    plain replacement with ``replace``), written atomically.  Returns the stored entry.

    :raises ParityError: ``path`` exists but is not a JSON object.
    """
    from mmkgc.fileio import atomic_write_text

    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ParityError(f"--json: {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ParityError(f"--json: {path} does not hold a JSON object")
    data[method] = entry if replace else merge_entries(data.get(method), entry)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return data[method]


def results_entry(method: str, settings: dict[str, Any], visual: str, runs: list[dict[str, Any]], device: str,
                  threads: int, command: str, reference_commit: str | None) -> dict[str, Any]:
    """The ``parity.json`` entry of one method: settings, per-seed test MRR of both sides (fractions), per-epoch
    loss curves, the other test metrics, run times and the command."""
    mm = [r["mmkgc"]["test"]["mrr"] for r in runs if r.get("mmkgc", {}).get("test")]
    ref = [r["reference"]["test"]["mrr"] for r in runs if "reference" in r]
    entry: dict[str, Any] = {
        "epochs": settings["epochs"], "settings": settings, "visual_stand_in": visual,
        "text_table": "mmkgc name-text table: all-MiniLM-L6-v2 over the cleaned DB15K entity names (384-d)",
        "tie_policy": "random" if method == "imvia" else "optimistic (OpenKE)",
        "seeds": [r["seed"] for r in runs], "mmkgc": mm, "reference": ref,
        "loss_curves": [{"seed": r["seed"], "mmkgc": r.get("mmkgc", {}).get("losses"),
                         "mmkgc_terms": r.get("mmkgc", {}).get("terms"),
                         "reference": r.get("reference", {}).get("losses"),
                         "reference_generator": r.get("reference", {}).get("generator_losses")} for r in runs],
        "test_metrics": [{"seed": r["seed"], "mmkgc": r.get("mmkgc", {}).get("test"),
                          "mmkgc_all_tie_policies": r.get("mmkgc", {}).get("test_all_policies"),
                          "reference": r.get("reference", {}).get("test")} for r in runs],
        "seconds": [{"seed": r["seed"], "mmkgc": r.get("mmkgc", {}).get("seconds"),
                     "reference": r.get("reference", {}).get("seconds")} for r in runs],
        "device": device, "threads": threads, "machine": _machine(), "command": command,
        "reference_commit": reference_commit, "mmkgc_commit": _git_commit(HERE.parent),
    }
    if mm and ref:
        entry["mmkgc_mean"] = sum(mm) / len(mm)
        entry["reference_mean"] = sum(ref) / len(ref)
        entry["mean_abs_gap_points"] = 100 * abs(entry["mmkgc_mean"] - entry["reference_mean"])
    return entry


def run_parity(args: argparse.Namespace) -> int:
    method = args.method
    if method != "imvia" and args.imvia_skip_branch_tests:
        raise ParityError("--imvia-skip-branch-tests: only IMVIA's train.py runs single-branch tests")
    reference = check_reference(method, args.reference)
    data_dir = Path(args.data_dir).resolve()
    if METHODS[method].openke:
        check_split(reference, data_dir)
    elif not (data_dir / "DB15K" / "train2id.txt").is_file():
        raise ParityError(f"--data-dir: {data_dir}/DB15K/train2id.txt does not exist")
    if method != "imvia" and args.relation_dim is not None:
        raise ParityError("--relation-dim: only IMVIA has a separate relation width")
    settings = merge_settings(method, {"epochs": args.epochs, "lr": args.lr, "dim": args.dim,
                                       "relation_dim": args.relation_dim,
                                       "num_negatives": args.negatives if method != "imvia" else None,
                                       "batch_size": args.batch_size})
    if method == "imvia" and args.negatives is not None:
        raise ParityError("--negatives: IMVIA scores every entity (1-N); it has no negative sampling")
    if args.mmkgc_sampler != "bernoulli":
        if method == "imvia":
            raise ParityError("--mmkgc-sampler: IMVIA scores every entity (1-N); it has no negative sampling")
        settings["mmkgc_sampler"] = args.mmkgc_sampler
    visual = args.visual or METHODS[method].visual
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ParityError("--device cuda: no CUDA device is available")
    out = Path(args.out).resolve() / method
    out.mkdir(parents=True, exist_ok=True)
    triples, text = load_text_table(data_dir, args.text_table)
    tables = stand_in_tables(method, text, visual)
    run_dir = prepare_reference(method, reference, out, triples, tables, args.sampler_library) if args.side in ("both", "reference") \
        else out / "reference"
    feature_dir = run_dir / ("embeddings" if METHODS[method].openke else "datasets/DB15K")
    vis_file = feature_dir / ("DB15K-visual.pth" if METHODS[method].openke else "img_features.pth")
    txt_file = feature_dir / ("DB15K-textual.pth" if METHODS[method].openke else "text_features.pth")
    if args.side == "mmkgc" and not vis_file.is_file():
        feature_dir.mkdir(parents=True, exist_ok=True)
        write_openke_feature_pth(tables["visual"], vis_file)
        write_openke_feature_pth(tables["textual"], txt_file)
    runs: list[dict[str, Any]] = []
    command = "python benchmarks/parity.py " + " ".join(sys.argv[1:])

    previous = None
    if args.json and Path(args.json).is_file():
        try:
            previous = json.loads(Path(args.json).read_text()).get(method)
        except (json.JSONDecodeError, AttributeError):
            raise ParityError(f"--json: {args.json} is not a JSON object") from None

    def record() -> dict[str, Any]:
        # written after every side of every seed, so an interrupted benchmark keeps what it measured; runs of
        # this invocation are merged with the file's earlier entry as it was before the invocation started
        entry = results_entry(method, settings, visual, runs, device, args.threads, command, _git_commit(reference))
        if args.json:
            update_results(Path(args.json), method, merge_entries(previous, entry), replace=True)
        (out / "parity.json").write_text(json.dumps(entry, indent=2) + "\n")
        return entry

    for seed in args.seeds:
        run: dict[str, Any] = {"seed": seed}
        runs.append(run)
        if args.side in ("both", "reference"):
            print(f"[{method} seed {seed}] official code ({METHODS[method].repository}) ...", flush=True)
            ref = run_reference(method, run_dir, settings, seed, device, args.threads, out / f"reference_seed{seed}.log",
                                skip_branch_tests=args.imvia_skip_branch_tests)
            run["reference"] = ref
            print(f"  official test MRR {ref['test']['mrr']:.4f} ({ref['seconds']:.0f} s)", flush=True)
            record()
        if args.side in ("both", "mmkgc"):
            print(f"[{method} seed {seed}] mmkgc ...", flush=True)
            cfg = mmkgc_config(method, settings, seed, vis_file, txt_file)
            mine = run_mmkgc(method, cfg, data_dir, out / f"mmkgc_seed{seed}", device, args.threads)
            run["mmkgc"] = mine
            print(f"  mmkgc test MRR {mine['test']['mrr']:.4f} ({mine['seconds']:.0f} s)", flush=True)
            record()
    entry = record()
    verdict = 0
    if "mean_abs_gap_points" in entry:
        print(f"{method}: mean test MRR mmkgc {entry['mmkgc_mean']:.4f} vs official {entry['reference_mean']:.4f}: "
              f"gap {entry['mean_abs_gap_points']:.2f} points (tolerance {args.tolerance})")
        verdict = 0 if entry["mean_abs_gap_points"] <= args.tolerance else 1
    return verdict


def _git_commit(path: Path) -> str | None:
    """The commit checked out at ``path`` when ``path`` is the top of its own git repository, else None.

    A checkout copied without its ``.git`` folder into another repository (say, next to mmkgc's tree on a GPU
    machine) would otherwise report the enclosing repository's commit as the official code's.
    """
    try:
        top = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != Path(path).resolve():
            return None
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def check_sampler(method: str, reference: Path, out: Path, data_dir: Path, sampler_library: Path | None = None,
                  batches: int = 20, negatives: int = 16) -> dict[str, Any]:
    """Run ``benchmarks/parity_sampler_check.py`` on a prepared copy of an OpenKE-based checkout: how often the
    gap index of a corrupting entity has the parity of its positive's train-list index (see that script).

    :returns: its JSON report plus ``coupled_share`` (share of "modulus even" negatives with the same parity; 0.5
        for an unbiased sampler) and ``affected_share`` (share of all negatives drawn under an even modulus).
    :raises ParityError: not an OpenKE-based method.
    :raises RuntimeError: the script failed.
    """
    if not METHODS[method].openke:
        raise ParityError(f"--check-sampler: {method} does not use OpenKE's sampler (use adamf_mat or native)")
    check_split(reference, data_dir)
    dest = out / method / "reference"
    if dest.exists():
        shutil.rmtree(dest)
    _copy_checkout(reference, dest)
    install_sampler(dest, sampler_library)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(HERE / "parity_sampler_check.py"), str(batches), str(negatives)],
                          cwd=dest, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the sampler check failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    c = report["counts"]
    even = c.get("modulus_even/same_parity", 0) + c.get("modulus_even/other_parity", 0)
    total = sum(c.values())
    report["coupled_share"] = c.get("modulus_even/same_parity", 0) / even if even else None
    report["affected_share"] = even / total if total else None
    return report


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parity.py", description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=sorted(METHODS), help="which official implementation to compare with")
    ap.add_argument("--reference", type=Path, help="a local checkout of the official repository")
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "datasets",
                    help="directory holding DB15K/ (OpenKE files); default ../shared/datasets")
    ap.add_argument("--check-categories", action="store_true",
                    help="compare mmkgc's relation categories with the official test2id_all.txt files and exit")
    ap.add_argument("--check-sampler", action="store_true",
                    help="measure the parity coupling of OpenKE's negative sampler (AdaMF-MAT, NativE) and exit")
    ap.add_argument("--epochs", type=int, help="epochs on both sides (default: the published count)")
    ap.add_argument("--lr", type=float, help="learning rate on both sides (default: the published one)")
    ap.add_argument("--dim", type=int, help="embedding rank on both sides (default: the published one)")
    ap.add_argument("--relation-dim", type=int, help="IMVIA: relation width r_dim of the TuckER cores on both sides "
                    "(default: the published 256; the cores are r_dim x 256 x 256, most of a CPU step)")
    ap.add_argument("--negatives", type=int, help="negatives per positive (AdaMF-MAT, NativE)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--text-table", type=Path, help="the name-text table as an mmkgc feature-table file "
                    "(default: mmkgc's feature cache)")
    ap.add_argument("--sampler-library", type=Path, help="a prebuilt OpenKE Base.so to use instead of g++")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--visual", choices=["text", "zeros"], help="what stands in for the visual table")
    ap.add_argument("--side", choices=["both", "reference", "mmkgc"], default="both")
    ap.add_argument("--imvia-skip-branch-tests", action="store_true",
                    help="IMVIA: skip the official train.py's four single-branch test passes (printed only; the "
                         "ensemble's test, the one compared, is unchanged)")
    ap.add_argument("--mmkgc-sampler", choices=["bernoulli", "openke_bernoulli"], default="bernoulli",
                    help="mmkgc's negative sampler for AdaMF-MAT / NativE: the exact Bernoulli rule (default) or "
                         "OpenKE's rounded tail probability (training.sampler: openke_bernoulli)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=1.0, help="allowed |mean MRR gap| in points")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "mmkgc-parity")
    ap.add_argument("--json", type=Path, help="merge the results into this JSON file")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                    help="merge --method's entries of these result files (say, the --side reference and --side "
                         "mmkgc runs of parallel invocations) into --json, in the order given, and run nothing")
    return ap


def guarded(name: str, user_error: type[Exception], body: Callable[[], int]) -> int:
    """Run a benchmark's ``body`` with the project's exit statuses: its return value; 2 with one message line for
    ``user_error`` (bad input, naming the option); 130 when interrupted; 1 for a failed run (``RuntimeError``: the
    official code or a training step failed).  Shared by ``parity.py`` and ``parity_imvia_step.py``."""
    try:
        return body()
    except user_error as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded("parity.py", ParityError, lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if args.reference is None and not args.merge:
        raise ParityError("--reference is required: a local checkout of the official repository")
    if args.check_categories:
        report = check_categories(args.reference, args.data_dir)
        bad = False
        for name, rep in report.items():
            print(f"{name}: {rep['mismatched_triples']} of {rep['test_triples']} test triples and "
                  f"{len(rep['mismatched_relations'])} relations categorised differently from the official file")
            for item in rep["mismatched_relations"][:20]:
                print(f"  relation {item['relation']}: official {item['official']}, mmkgc {item['mmkgc']}")
            bad = bad or rep["mismatched_triples"] > 0
        if args.json:
            update_results(Path(args.json), "categories", report, replace=True)
        return 1 if bad else 0
    if args.check_sampler:
        if args.method is None:
            raise ParityError("--check-sampler needs --method adamf_mat or native")
        reference = check_reference(args.method, args.reference)
        report = check_sampler(args.method, reference, Path(args.out).resolve(), Path(args.data_dir).resolve(),
                               args.sampler_library)
        print(json.dumps(report))
        if args.json:
            update_results(Path(args.json), f"sampler_{args.method}", report, replace=True)
        coupled = report["coupled_share"]
        return 1 if coupled is not None and abs(coupled - 0.5) > 0.05 else 0
    if args.method is None:
        raise ParityError("--method is required (adamf_mat, native or imvia) unless --check-categories is given")
    if args.merge:
        return merge_files(args.method, args.merge, args.json)
    return run_parity(args)


def merge_files(method: str, files: Sequence[Path], target: Path | None) -> int:
    """``--merge``: fold ``method``'s entry of each file into ``target`` with :func:`update_results`; prints the
    merged means.

    :raises ParityError: no ``--json``, a file that is missing, not a JSON object or without a ``method`` entry.
    """
    if target is None:
        raise ParityError("--merge needs --json: the results file to merge into")
    entry: dict[str, Any] | None = None
    for path in files:
        if not Path(path).is_file():
            raise ParityError(f"--merge: {path} does not exist")
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ParityError(f"--merge: {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get(method), dict):
            raise ParityError(f"--merge: {path} has no {method!r} entry")
        entry = update_results(Path(target), method, data[method])
    assert entry is not None
    if "mean_abs_gap_points" in entry:
        print(f"{method}: seeds {entry['seeds']}: mean test MRR mmkgc {entry['mmkgc_mean']:.4f} vs official "
              f"{entry['reference_mean']:.4f}: gap {entry['mean_abs_gap_points']:.2f} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
