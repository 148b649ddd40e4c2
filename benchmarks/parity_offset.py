"""Where does the training-loss offset between mmkgc and the official AdaMF-MAT code come from?

``benchmarks/parity.py`` found mmkgc's per-epoch training loss above the official one at every epoch (same test
MRR).  This script separates the three things that could cause it -- the model/step, the initial weights and the
stream of batches -- by crossing them on the CPU at a small size (defaults: d 32, K 16, batch 1024, lr 1e-3,
300 steps, mu 0 as the official DB15K script):

* the **official** side runs in its own process inside a prepared copy of the official checkout (``--reference``;
  copied, OpenKE's ``Base.so`` built with ``g++`` as ``parity.py`` does; the official package is also called
  ``mmkgc``): the official ``AdvMixRotatE`` + ``NegativeSampling`` + ``SigmoidLoss`` + ``MultiGenerator`` and
  ``AdvMixTrainer.train_one_step`` (unmodified; ``.cuda()`` is a no-op), with an Adam optimiser built as
  ``AdvMixTrainer.run`` builds it.  It records its initial weights and the first ``--steps`` batches of OpenKE's
  C++ sampler (``TrainDataLoader``: Bernoulli, train-filtered, 8 threads), then trains on a given batch stream;
* the **mmkgc** side runs mmkgc's own ``Trainer`` step loop (``Trainer._epoch``: zero_grad, the model's loss,
  backward, Adam, the generator step) with its batch source swapped for a replay of a given batch stream, on the
  model ``parity.py`` builds for AdaMF-MAT, with either the official initial weights copied in or mmkgc's own.

Runs (each the same number of steps; loss = the logged discriminator/KGC loss of each step):

==========  ============  ================  ===============
run         model+step    initial weights   batches
==========  ============  ================  ===============
off/off     official      official          OpenKE sampler
off/mm      official      official          mmkgc sampler
mm/off      mmkgc         official          OpenKE sampler
mm/mm       mmkgc         official          mmkgc sampler
mminit/mm   mmkgc         mmkgc (seeded)    mmkgc sampler
mminit/off  mmkgc         mmkgc (seeded)    OpenKE sampler
mm/mm-r...  mmkgc         official          mmkgc sampler with OpenKE's rounded Bernoulli probabilities
==========  ============  ================  ===============

Then the models trained by ``off/off`` and ``off/mm`` are held fixed and scored (no update) on fresh batches
(``--probe-batches``): of both samplers, and OpenKE's positives with negatives drawn by mmkgc's sampler, with the
exact and with OpenKE's rounded Bernoulli probabilities (:func:`openke_tail_probability`).  This located the
cause: OpenKE rounds the tail probability up to a multiple of 1/1000, so on DB15K the heads of ``rdf:type``
triples (p = 0.99904) are never corrupted; those rare negatives are among the hardest (many entities share a
class) and, under self-adversarial weighting, raise mmkgc's loss.

Usage (CPU; 56 minutes on a 2-core machine shared with other jobs, load average 7-11)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/parity_offset.py --reference /path/to/AdaMF-MAT \\
        --data-dir ../shared/datasets --json docs/results/parity.json

``--json`` adds the result under the key ``loss_offset`` of that file (other keys are kept).  Exit code 0;
2 for bad input (missing checkout, a split that differs from the checkout's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: official ``AdvMixRotatE`` parameter -> mmkgc ``AdversarialFusedModel`` parameter (modalities: visual, textual)
WEIGHT_MAP = {
    "ent_embeddings.weight": "entities.structure.embedding.weight",
    "rel_embeddings.weight": "relations.weight",
    "img_embeddings.weight": "entities.inputs.0.values",
    "img_proj.weight": "entities.inputs.0.adapter.linear.weight",
    "img_proj.bias": "entities.inputs.0.adapter.linear.bias",
    "text_embeddings.weight": "entities.inputs.1.values",
    "text_proj.weight": "entities.inputs.1.adapter.linear.weight",
    "text_proj.bias": "entities.inputs.1.adapter.linear.bias",
    "ent_attn.weight": "entities.fusion.w",
}


# ------------------------------------------------------------------------------------------ batch layouts
def openke_to_mmkgc(bh, bt, br, batch_size: int, negatives: int):
    """OpenKE's flat batch (``[B (1 + K)]`` arrays; negative ``k`` of positive ``p`` at ``B (k + 1) + p``) as
    mmkgc's ``(positives [B, 3] (h, r, t), entities [B, K], tail_corrupted [B, K])``.  A negative whose head is
    the positive's head and whose tail differs had its tail replaced (OpenKE's filtered corruption never returns
    the positive's own entity)."""
    import torch

    bh, bt, br = (torch.as_tensor(x, dtype=torch.int64) for x in (bh, bt, br))
    b, k = batch_size, negatives
    pos = torch.stack([bh[:b], br[:b], bt[:b]], 1)
    nh, nt = bh[b:].view(k, b).T, bt[b:].view(k, b).T
    tail = (nh == pos[:, :1]) & (nt != pos[:, 2:])
    return pos, torch.where(tail, nt, nh), tail


def mmkgc_to_openke(pos, entities, tail):
    """Inverse of :func:`openke_to_mmkgc`: int64 arrays ``(batch_h, batch_t, batch_r)`` of length ``B (1 + K)``."""
    import torch

    b, k = entities.shape
    h = torch.where(tail, pos[:, :1].expand(b, k), entities)
    t = torch.where(tail, entities, pos[:, 2:].expand(b, k))
    r = pos[:, 1:2].expand(b, k)
    def flat(first, neg):
        return torch.cat([first, neg.T.reshape(-1)]).numpy()

    return flat(pos[:, 0], h), flat(pos[:, 2], t), flat(pos[:, 1], r)


# ------------------------------------------------------------------------------------------ official side
def worker(job_dir: Path) -> int:
    """Official side (cwd = the prepared official copy).  Reads ``job.json``; writes ``result.json``."""
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    job = json.loads((job_dir / "job.json").read_text())
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    sys.path.insert(0, str(Path.cwd()))
    from mmkgc.adv.modules import (
        MultiGenerator,  # the official package (cwd is the official copy)
    )
    from mmkgc.module.loss import SigmoidLoss
    from mmkgc.module.model import AdvMixRotatE
    from mmkgc.module.strategy import NegativeSampling

    from mmkgc.config import AdvMixTrainer
    from mmkgc.data import TrainDataLoader

    b, k, steps = job["batch_size"], job["negatives"], job["steps"]
    torch.manual_seed(job["seed"])
    loader = TrainDataLoader(in_path="./benchmarks/DB15K/", batch_size=b, threads=8, sampling_mode="normal",
                             bern_flag=1, filter_flag=1, neg_ent=k, neg_rel=0)
    text = load_torch(job["features"])["values"]
    kge = AdvMixRotatE(ent_tot=loader.get_ent_tot(), rel_tot=loader.get_rel_tot(), dim=job["dim"],
                       margin=job["margin"], epsilon=2.0, img_emb=text.clone(), text_emb=text.clone())
    model = NegativeSampling(model=kge, loss=SigmoidLoss(adv_temperature=job["adv_temp"]),
                             batch_size=loader.get_batch_size())
    generator = MultiGenerator(noise_dim=64, structure_dim=2 * job["dim"], img_dim=2 * job["dim"])
    out: dict[str, Any] = {}
    if job.get("init"):  # the initial weights of an earlier run (the same torch seed gives them too; checked)
        init = load_torch(job["init"])
        kge.load_state_dict({**kge.state_dict(), **init})
    else:
        save_torch({n: kge.state_dict()[n].contiguous() for n in WEIGHT_MAP}, str(job_dir / "init.safetensors"))
    trainer = AdvMixTrainer(model=model, data_loader=loader, train_times=1, alpha=job["lr"], use_gpu=False,
                            opt_method="Adam", generator=generator, lrg=job["lrg"], mu=job["mu"])
    # as AdvMixTrainer.run builds them (run() would also start its own epoch loop over the C++ sampler)
    trainer.optimizer = torch.optim.Adam(model.parameters(), lr=trainer.alpha, weight_decay=trainer.weight_decay)
    trainer.optimizer_g = torch.optim.Adam(generator.parameters(), lr=trainer.alpha_g,
                                           weight_decay=trainer.weight_decay)
    if job.get("record"):  # the C++ sampler's next batches (it is seeded by C's rand(): the same stream every run)
        n_rec = job["record"]
        rec = {x: np.zeros((n_rec, b * (1 + k)), dtype=np.int64) for x in ("batch_h", "batch_t", "batch_r")}
        for i in range(n_rec):
            d = loader.sampling()
            for x, array in rec.items():
                array[i] = d[x]
        save_file(rec, str(job_dir / "openke_batches.safetensors"))
    batches = load_file(job["batches"]) if job.get("batches") else rec
    y = np.concatenate([np.ones(b, np.float32), -np.ones(b * k, np.float32)])
    losses = []
    for i in range(steps):
        data = {"batch_h": batches["batch_h"][i].copy(), "batch_t": batches["batch_t"][i].copy(),
                "batch_r": batches["batch_r"][i].copy(), "batch_y": y, "mode": "normal"}
        loss, _ = trainer.train_one_step(data)
        losses.append(float(loss))
    out["losses"] = losses
    save_torch({n: kge.state_dict()[n].contiguous() for n in WEIGHT_MAP}, str(job_dir / "final.safetensors"))
    (job_dir / "result.json").write_text(json.dumps(out))
    return 0


def run_official(copy: Path, job_dir: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in its own process inside the official copy; returns its ``result.json``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(job_dir)], cwd=copy,
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the official side failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((job_dir / "result.json").read_text())


# ------------------------------------------------------------------------------------------ mmkgc side
class _Replay:
    """Stands in for the trainer's batcher and sampler: yields the stored batches in order, ``window`` per pass."""

    def __init__(self, batches: list[tuple[Any, Any, Any]], window: int):
        self.batches, self.window, self.next = batches, window, 0

    def __len__(self) -> int:
        return self.window

    def __iter__(self):
        for _ in range(self.window):
            self.current = self.batches[self.next]
            self.next += 1
            yield self.current[0]

    def sample(self, positives):
        from mmkgc.training.sampling import NegativeSample

        pos, ent, tail = self.current
        triples = pos[:, None, :].expand(*ent.shape, 3).clone()
        triples[..., 2] = ent.where(tail, triples[..., 2])
        triples[..., 0] = triples[..., 0].where(tail, ent)
        return NegativeSample(triples, tail)


def mmkgc_trainer(settings: dict[str, Any], seed: int, features: Path, data_dir: Path):
    """mmkgc's ``Trainer`` for the AdaMF-MAT parity config of ``parity.py`` (``mmkgc_config``), on the CPU."""
    sys.path.insert(0, str(HERE))
    import parity

    from mmkgc.config import parse_config
    from mmkgc.pipeline import build_model, load_data
    from mmkgc.training.trainer import Trainer

    cfg_map = parity.mmkgc_config("adamf_mat", settings, seed, features, features)
    cfg_map["dataset"]["data_dir"] = str(data_dir)
    cfg = parse_config(cfg_map, source="parity-offset")
    data = load_data(cfg)
    model = build_model(cfg, data)
    return Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=seed, device="cpu"), data


def mmkgc_losses(trainer, batches, init: dict[str, Any] | None, steps: int) -> list[float]:
    """mmkgc's step loop (``Trainer._epoch``, one step per pass) over ``batches``; ``init``: official weights."""
    import torch

    if init is not None:
        state = trainer.model.state_dict()
        with torch.no_grad():
            for name, value in init.items():
                state[WEIGHT_MAP[name]].copy_(value.reshape(state[WEIGHT_MAP[name]].shape))
    replay = _Replay(batches, 1)
    trainer.batcher = trainer.sampler = replay
    return [trainer._epoch(None)[0] for _ in range(steps)]


def mmkgc_batches(trainer, n: int):
    """The next ``n`` batches of mmkgc's own batcher + sampler: ``[(positives, entities, tail_corrupted)]``."""
    out = []
    while len(out) < n:
        for tensors, _ in trainer._local_batches():
            out.append(tuple(t.clone() for t in tensors))
            if len(out) == n:
                break
    return out


def probe(init_final: dict[str, Any], trainer, batches, adv_temp: float) -> dict[str, float]:
    """Loss terms of a fixed model (weights ``init_final``) on ``batches``, no update: mean NSSA loss, its
    positive and negative halves, mean negative score and the share of tail-corrupted negatives."""
    import torch
    import torch.nn.functional as F

    model = trainer.model
    state = model.state_dict()
    with torch.no_grad():
        for name, value in init_final.items():
            state[WEIGHT_MAP[name]].copy_(value.reshape(state[WEIGHT_MAP[name]].shape))
        model.eval()
        acc = {"loss": 0.0, "positive_term": 0.0, "negative_term": 0.0, "negative_score": 0.0,
               "tail_share": 0.0}
        for pos, ent, tail in batches:
            p, n = model.score_positives_and_negatives(pos, ent, tail)
            w = torch.softmax(n * adv_temp, -1)
            pt = -F.logsigmoid(p).mean() / 2
            nt = -(w * F.logsigmoid(-n)).sum(-1).mean() / 2
            for key, v in (("loss", pt + nt), ("positive_term", pt), ("negative_term", nt),
                           ("negative_score", n.mean()), ("tail_share", tail.float().mean())):
                acc[key] += float(v) / len(batches)
    return acc


def openke_tail_probability(tail_probability):
    """OpenKE's rounded tail probability: :func:`mmkgc.data.sampling.openke_tail_probability` (the library's
    ``sampler: openke_bernoulli``)."""
    from mmkgc.data.sampling import openke_tail_probability as rounded

    return rounded(tail_probability)


def negatives_for(positives_batches, sampler, seed: int):
    """``[(positives, entities, tail_corrupted)]``: negatives drawn by ``sampler`` for the given positives."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for pos, *_ in positives_batches:
        smp = sampler.sample(pos, generator=g)
        out.append((pos, smp.entities, smp.tail_corrupted))
    return out


def half_split(weights: dict[str, Any], trainer, triples, positives: int = 2000, seed: int = 0,
               side: str = "tail") -> dict[str, float]:
    """How a fixed model (``weights``) scores the two halves OpenKE's sampler splits a positive's candidates into.

    For a train triple at index ``i`` of OpenKE's sorted, de-duplicated train list, corrupted on the tail, the
    candidates are the entities ``e`` with ``(h, r, e)`` not in train, ranked ``0, 1, ...`` (the gap index ``tmp``);
    when ``N - n_known`` is even, OpenKE only ever draws candidates whose ``tmp`` has the parity of ``i`` (see
    ``parity_sampler_check.py``): the "seen" half; the other half is never a negative of that positive.  Over
    ``positives`` such triples (drawn with ``seed``; ``side="head"``: the same for head corruption, whose known
    answers are the heads of ``(r, t)``), returns the mean score of the seen and of the
    unseen half (higher = more plausible), and the share of unseen candidates among each positive's 10
    highest-scored candidates (0.5 when the model does not tell the halves apart)."""
    import torch

    model = trainer.model
    state = model.state_dict()
    with torch.no_grad():
        for name, value in weights.items():
            state[WEIGHT_MAP[name]].copy_(value.reshape(state[WEIGHT_MAP[name]].shape))
        model.eval()
        train = torch.unique(triples.train, dim=0)  # sorted by (h, r, t): OpenKE's trainList order
        n = triples.num_entities
        kept, answer = (0, 2) if side == "tail" else (2, 0)
        key = train[:, kept] * triples.num_relations + train[:, 1]
        counts = torch.bincount(key, minlength=n * triples.num_relations)
        even = (n - counts[key]) % 2 == 0
        idx = torch.nonzero(even).squeeze(1)
        g = torch.Generator().manual_seed(seed)
        idx = idx[torch.randperm(idx.numel(), generator=g)[:positives]]
        seen_sum = unseen_sum = top_unseen = 0.0
        ents = model.entities(None)
        for chunk in idx.split(256):
            q = train[chunk]
            scores = model.score_t(q, ents) if side == "tail" else model.score_h(q, ents)  # [Q, N]
            known = torch.zeros_like(scores, dtype=torch.bool)
            rows = torch.nonzero(key[None, :] == key[chunk][:, None])  # [pairs, 2]: (query, train row)
            known[rows[:, 0], train[rows[:, 1], answer]] = True
            gap = torch.cumsum((~known).long(), 1) - 1  # rank of each candidate among the non-answers
            seen = (~known) & (gap % 2 == (chunk % 2)[:, None])
            unseen = (~known) & ~seen
            seen_sum += float((scores * seen).sum(1).div(seen.sum(1)).sum())
            unseen_sum += float((scores * unseen).sum(1).div(unseen.sum(1)).sum())
            top = scores.masked_fill(known, float("-inf")).topk(10, 1).indices
            top_unseen += float(unseen.gather(1, top).float().mean(1).sum())
        m = idx.numel()
    return {"positives": m, "mean_score_seen_half": seen_sum / m, "mean_score_unseen_half": unseen_sum / m,
            "unseen_share_of_top10": top_unseen / m}


# ------------------------------------------------------------------------------------------ driver
def windows(losses: list[float], size: int) -> list[float]:
    """Means of consecutive ``size``-step windows."""
    return [round(sum(losses[i:i + size]) / len(losses[i:i + size]), 5) for i in range(0, len(losses), size)]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        return worker(Path(argv[1]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="checkout of zjukg/AdaMF-MAT (read only)")
    p.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--text-table", type=Path, default=None, help="mmkgc feature table (default: the cache)")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--negatives", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--probe-batches", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--window", type=int, default=50, help="steps per reported mean")
    p.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None, help="add the result under 'loss_offset' of this file")
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import parity
    import torch
    from safetensors.torch import load_file, save_file

    try:
        parity.check_reference("adamf_mat", args.reference)
        parity.check_split(args.reference, args.data_dir)
    except parity.ParityError as exc:
        print(f"parity_offset: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="parity-offset-"))
    work.mkdir(parents=True, exist_ok=True)
    _, text = parity.load_text_table(args.data_dir, args.text_table)
    features = work / "text.safetensors"
    save_file({"values": text.contiguous()}, str(features))
    pth = parity.write_openke_feature_pth(text, work / "DB15K-textual.pth")
    copy = work / "reference"
    if copy.exists():
        shutil.rmtree(copy)
    parity._copy_checkout(args.reference, copy)
    parity.install_sampler(copy)
    s = parity.merge_settings("adamf_mat", {"dim": args.dim, "num_negatives": args.negatives, "lr": args.lr,
                                            "batch_size": args.batch_size, "epochs": 1})
    job = {"dim": s["dim"], "margin": s["margin"], "adv_temp": s["adv_temp"], "lr": s["lr"], "lrg": s["lrg"],
           "mu": s["mu"], "batch_size": s["batch_size"], "negatives": s["num_negatives"], "seed": args.seed,
           "features": str(features), "steps": args.steps}
    n_batches = args.steps + args.probe_batches
    # 1. official / official / OpenKE, recording the initial weights and the sampler's batches
    off_off = run_official(copy, work / "off_off", {**job, "record": n_batches})
    init = load_file(str(work / "off_off" / "init.safetensors"))
    rec = load_file(str(work / "off_off" / "openke_batches.safetensors"))
    b, k = s["batch_size"], s["num_negatives"]
    openke = [openke_to_mmkgc(rec["batch_h"][i], rec["batch_t"][i], rec["batch_r"][i], b, k)
              for i in range(n_batches)]
    # 2. mmkgc's sampler stream (the trainer's batcher + Bernoulli sampler, seeded)
    trainer, _ = mmkgc_trainer(s, args.seed, pth, args.data_dir)
    ours = mmkgc_batches(trainer, n_batches)
    flat = [mmkgc_to_openke(*x) for x in ours]
    save_file({name: torch.as_tensor(__import__("numpy").stack([f[i] for f in flat]))
               for i, name in enumerate(("batch_h", "batch_t", "batch_r"))}, str(work / "mmkgc_batches.safetensors"))
    off_mm = run_official(copy, work / "off_mm", {**job, "init": str(work / "off_off" / "init.safetensors"),
                                                  "batches": str(work / "mmkgc_batches.safetensors")})
    runs: dict[str, list[float]] = {"off/off": off_off["losses"], "off/mm": off_mm["losses"]}
    # mmkgc's sampler with OpenKE's rounded Bernoulli probabilities (openke_tail_probability)
    trainer, _ = mmkgc_trainer(s, args.seed, pth, args.data_dir)
    from mmkgc.training.sampling import BernoulliNegativeSampler

    tri = trainer.triples
    trainer.sampler = BernoulliNegativeSampler(tri.num_entities, k,
                                               openke_tail_probability(tri.tail_corruption_probability),
                                               filtered_by=tri.train_index, generator=trainer.generator)
    rounded = mmkgc_batches(trainer, args.steps)
    for name, weights, stream in (("mm/off", init, openke), ("mm/mm", init, ours),
                                  ("mminit/mm", None, ours), ("mminit/off", None, openke),
                                  ("mm/mm-rounded", init, rounded)):
        trainer, _ = mmkgc_trainer(s, args.seed, pth, args.data_dir)
        runs[name] = mmkgc_losses(trainer, stream, weights, args.steps)
    # 3. a fixed model (off/off's final weights) on fresh batches of both samplers
    trainer, _ = mmkgc_trainer(s, args.seed, pth, args.data_dir)
    from mmkgc.training.sampling import BernoulliNegativeSampler

    tri = trainer.triples
    quantised = BernoulliNegativeSampler(tri.num_entities, k, openke_tail_probability(tri.tail_corruption_probability),
                                         filtered_by=tri.train_index)
    fresh = openke[args.steps:]
    probes = {}
    for model_name in ("off_off", "off_mm"):  # the model trained on OpenKE's / on mmkgc's stream
        weights = load_file(str(work / model_name / "final.safetensors"))
        probes[f"model trained by {model_name}"] = {
            "openke": probe(weights, trainer, fresh, s["adv_temp"]),
            "mmkgc": probe(weights, trainer, ours[args.steps:], s["adv_temp"]),
            "openke positives + mmkgc negatives": probe(
                weights, trainer, negatives_for(fresh, trainer.sampler, args.seed), s["adv_temp"]),
            "openke positives + mmkgc negatives, OpenKE-rounded Bernoulli": probe(
                weights, trainer, negatives_for(fresh, quantised, args.seed), s["adv_temp"]),
        }
    def mean(xs):
        return sum(xs) / len(xs)

    result = {
        "what": "AdaMF-MAT training loss, official vs mmkgc model/step x initial weights x batch stream "
                "(benchmarks/parity_offset.py)",
        "settings": {**{x: s[x] for x in ("dim", "margin", "batch_size", "num_negatives", "lr", "lrg", "mu",
                                          "adv_temp")}, "steps": args.steps, "seed": args.seed,
                     "window": args.window, "features": "DB15K name-text table in both modality slots"},
        "window_means": {name: windows(v, args.window) for name, v in runs.items()},
        "mean_loss": {name: round(mean(v), 5) for name, v in runs.items()},
        "max_step_difference": {
            "mm/off vs off/off": max(abs(x - y) for x, y in zip(runs["mm/off"], runs["off/off"])),
            "mm/mm vs off/mm": max(abs(x - y) for x, y in zip(runs["mm/mm"], runs["off/mm"])),
        },
        "probe_fixed_model": {"batches": args.probe_batches, **probes},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json is not None:
        from mmkgc.fileio import atomic_write_text

        old = json.loads(args.json.read_text()) if args.json.is_file() else {}
        old["loss_offset"] = result
        atomic_write_text(args.json, json.dumps(old, indent=2) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
