"""VEMP (Sela et al., "Vision-Enhanced Message Passing"; methods.md section 2) as a two-stage pipeline of shared
parts (its orchestration: this module sits on top with the config and pipeline; the link model is
:mod:`mmkgc.models.vemp`), with the public code's evaluation flaws fixed (section 2.7).

Stage 1 (:func:`pretrain`): a :class:`~mmkgc.nn.fusion.CrossAttentionTokenFusion` over frozen text / image token
tables, trained by :class:`~mmkgc.training.steps.ContrastivePretrainStep` (text <-> image InfoNCE + neighbour
InfoNCE) on **training edges only**.  :func:`export_features` writes the four node-feature tables VEMP compares
(``fused`` = fusion MLP output before the heads, ``text_only``, ``image_only``, ``concat``) as mmkgc feature tables.

Stage 2, two protocols:

* :func:`train_linkpred` (``vemp_sampled``): R-GCN (:class:`~mmkgc.nn.gnn.RGCNEncoder`, 31 meta-relations, 31
  bases) + relation-agnostic :class:`~mmkgc.nn.gnn.MLPLinkPredictor`, binary link BCE with one random negative per
  positive (both endpoints random, as PyG's binary sampling; :func:`training_negatives`); supervision edges are removed from each epoch's message-passing graph; evaluation by
  :func:`~mmkgc.evaluation.sampled.vemp_link_ranks` (positives only, filtered candidates; optionally also the
  legacy protocol).  Message passing uses train edges for validation and train + valid edges for test (as VEMP).
* :func:`run_filtered` (``filtered``): the ordinary Trainer with ``representation: rgcn`` over an exported table
  and a DistMult/RotatE head, evaluated by the filtered all-entity evaluator on the standard split.

:func:`compare` runs the chosen modes and protocols and writes ``compare.md``, ``compare.json`` and
``compare.png`` into the run directory.

Run directory::

    pretrain/fusion.safetensors, pretrain/history.json
    features/{fused,text_only,image_only,concat}.safetensors
    linkpred/<mode>.json                 vemp_sampled metrics (fixed and legacy) + history
    filtered/<mode>/                     an ordinary mmkgc run directory
    compare.md, compare.json, compare.png
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkgc.config_vemp import FEATURE_MODES, VempConfig
from mmkgc.data.triples import TripleSet
from mmkgc.errors import ConfigError
from mmkgc.evaluation.metrics import SELECTION_METRICS
from mmkgc.fileio import atomic_write_text
from mmkgc.nn.fusion import CrossAttentionTokenFusion
from mmkgc.pipeline import resolve_device
from mmkgc.evaluation.sampled import random_negative_edges as random_negatives
from mmkgc.training.loops import training_negatives
from mmkgc.nn.gnn import MessageGraph, MLPLinkPredictor, RGCNEncoder, sample_subgraph


class VempLinkModel(nn.Module):
    """R-GCN encoder + relation-agnostic MLP decoder over frozen node features ``x [N, d]`` (the old stage-2 path,
    kept only until the comparison with the ordinary pipeline is in place)."""

    def __init__(self, features, num_relations, hidden_dims, out_dim, num_bases, dropout, decoder_hidden,
                 decoder_dropout):
        super().__init__()
        self.register_buffer("x", features.float(), persistent=False)
        self.encoder = RGCNEncoder(features.shape[1], hidden_dims, out_dim, num_relations, num_bases,
                                   dropout, final_activation=True)
        self.decoder = MLPLinkPredictor(out_dim, decoder_hidden, decoder_dropout)

    def encode(self, graph: MessageGraph) -> torch.Tensor:
        dev = self.x.device
        return self.encoder(self.x, graph.edge_index.to(dev), graph.edge_type.to(dev))


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class VempInputs:
    """The graph and the frozen token tables of a VEMP run.

    ``text [N, L_t, d_t]``, ``text_mask [N, L_t]``, ``image [N, L_v, d_v]``, pooled ``text_pooled [N, d_t]`` and
    ``image_pooled [N, d_v]``.
    """

    triples: TripleSet
    text: torch.Tensor
    text_mask: torch.Tensor
    image: torch.Tensor
    text_pooled: torch.Tensor
    image_pooled: torch.Tensor


def load_graph(cfg: VempConfig) -> TripleSet:
    """The split graph a config names (``vemp_csv`` random split or the ``openke`` standard split)."""
    from mmkgc.data.formats import read_vemp_graph
    from mmkgc.data.registry import resolve_dataset

    g = cfg.graph
    if not g.path.is_dir():
        raise ConfigError(f"graph.path: {g.path} is not a directory")
    if g.format == "openke":
        return resolve_dataset(g.path)
    triples, _ = read_vemp_graph(g.path, g.valid_fraction, g.test_fraction, g.split_seed)
    return triples


def load_inputs(cfg: VempConfig, triples: TripleSet | None = None) -> VempInputs:
    """Graph + token tables, checked against each other.

    :raises ConfigError: a table file that is missing, pooled where tokens are expected, or with a row count
        different from the graph's node count (naming the field).
    """
    from mmkgc.features.io import load_feature_table

    triples = load_graph(cfg) if triples is None else triples
    n = triples.num_entities

    def table(field: str, tokens: bool):
        path = getattr(cfg.features, field)
        if not path.is_file():
            raise ConfigError(f"features.{field}: {path} does not exist")
        t = load_feature_table(path)
        if t.is_tokens != tokens:
            raise ConfigError(f"features.{field}: {path} is a {'token' if t.is_tokens else 'pooled'} table; "
                              f"expected a {'token' if tokens else 'pooled'} table")
        if t.num_entities != n:
            raise ConfigError(f"features.{field}: {path} has {t.num_entities} rows but the graph has {n} nodes")
        return t

    text = table("text_tokens", True)
    image = table("image_tokens", True)
    text_pooled = table("text_pooled", False).values if cfg.features.text_pooled else text.pooled("mean").values
    image_pooled = table("image_pooled", False).values if cfg.features.image_pooled else image.pooled("mean").values
    return VempInputs(triples, text.values, text.token_mask, image.values, text_pooled, image_pooled)


def _edges(triples: torch.Tensor) -> torch.Tensor:
    """``(h, r, t)`` ``[n, 3]`` -> ``(src, dst)`` ``[n, 2]``."""
    return triples[:, [0, 2]]


# ------------------------------------------------------------------------------------------------ stage 1
def build_fusion(cfg: VempConfig, inputs: VempInputs) -> CrossAttentionTokenFusion:
    p = cfg.pretrain
    return CrossAttentionTokenFusion(inputs.text.shape[-1], inputs.image.shape[-1], p.dim, p.num_heads, p.ffn_dim,
                                     p.proj_dim, p.dropout)


def pretrain(cfg: VempConfig, inputs: VempInputs, run_dir: Path,
             log: Callable[[str], None] = print) -> CrossAttentionTokenFusion:
    """Stage 1 on the training edges (never validation/test edges: checked per batch); writes
    ``pretrain/fusion.safetensors`` and ``pretrain/history.json``.

    Epochs shuffle the training edges and drop the last incomplete batch (VEMP); ``pretrain.max_seconds`` stops
    early (recorded in the history).
    """
    from safetensors.torch import save_file

    from mmkgc.fileio import atomic_write
    from mmkgc.training.steps import ContrastivePretrainStep

    p = cfg.pretrain
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    fusion = build_fusion(cfg, inputs).to(device)
    t = inputs.triples
    train = _edges(t.train)
    forbidden = torch.cat([_edges(t.valid), _edges(t.test)])
    # An edge present in train too (duplicate pair across splits) is a training edge; forbid only held-out pairs.
    n = t.num_entities
    train_keys = torch.unique(train[:, 0] * n + train[:, 1])
    forbidden = forbidden[~torch.isin(forbidden[:, 0] * n + forbidden[:, 1], train_keys)]
    step = ContrastivePretrainStep(fusion, inputs.text.to(device), inputs.text_mask.to(device),
                                   inputs.image.to(device), p.temperature, p.learnable_temperature, p.graph_weight,
                                   p.lr, p.weight_decay, p.amp, p.mask_duplicates, forbidden)
    gen = torch.Generator().manual_seed(cfg.seed)
    history, start, stopped = [], time.monotonic(), False
    steps_per_epoch = train.shape[0] // p.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"pretrain.batch_size {p.batch_size} exceeds the {train.shape[0]} training edges")
    for epoch in range(1, p.epochs + 1):
        perm = torch.randperm(train.shape[0], generator=gen)
        sums = {"loss": 0.0, "mm": 0.0, "graph": 0.0}
        done = 0
        for b in range(steps_per_epoch):
            batch = train[perm[b * p.batch_size:(b + 1) * p.batch_size]]
            out = step.step(batch[:, 0].to(device), batch[:, 1].to(device))
            for k in sums:
                sums[k] += out[k]
            done += 1
            if p.max_seconds is not None and time.monotonic() - start > p.max_seconds:
                stopped = True
                break
        rec = {"epoch": epoch, "steps": done, **{k: v / max(done, 1) for k, v in sums.items()},
               "seconds": round(time.monotonic() - start, 2)}
        history.append(rec)
        log(f"pretrain epoch {epoch}: loss {rec['loss']:.4f} (mm {rec['mm']:.4f}, graph {rec['graph']:.4f}) "
            f"{done} steps, {rec['seconds']} s")
        if stopped:
            log(f"pretrain: stopped by max_seconds={p.max_seconds} in epoch {epoch}")
            break
    out_dir = run_dir / "pretrain"
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in fusion.state_dict().items()}
    atomic_write(out_dir / "fusion.safetensors", lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(out_dir / "history.json", json.dumps(
        {"history": history, "stopped_by_time": stopped, "train_edges": int(train.shape[0]),
         "held_out_edges_excluded": int(forbidden.shape[0]), "device": str(device)}, indent=1))
    return fusion


def load_fusion(cfg: VempConfig, inputs: VempInputs, run_dir: Path) -> CrossAttentionTokenFusion:
    """The stage-1 module saved in ``run_dir/pretrain``.

    :raises ConfigError: no pretrained module there.
    """
    from safetensors.torch import load_file

    path = run_dir / "pretrain" / "fusion.safetensors"
    if not path.is_file():
        raise ConfigError(f"{path}: no pretrained fusion module; run `mmkgc vemp pretrain` first")
    fusion = build_fusion(cfg, inputs)
    fusion.load_state_dict(load_file(str(path)))
    return fusion.eval()


def node_features(cfg: VempConfig, inputs: VempInputs, fusion: CrossAttentionTokenFusion | None) -> dict[str, torch.Tensor]:
    """The four VEMP feature modes ``{mode: [N, d]}`` (``fused`` needs ``fusion``; it is the fusion MLP output
    before the projection heads, methods.md 2.8)."""
    feats = {"text_only": inputs.text_pooled.float(), "image_only": inputs.image_pooled.float()}
    feats["concat"] = torch.cat([feats["text_only"], feats["image_only"]], 1)
    if fusion is not None:
        device = next(fusion.parameters()).device
        rows = []
        bs = cfg.pretrain.export_batch_size
        fusion.eval()
        with torch.no_grad():
            for s in range(0, inputs.text.shape[0], bs):
                f, _, _ = fusion.encode(inputs.text[s:s + bs].to(device), inputs.text_mask[s:s + bs].to(device),
                                        inputs.image[s:s + bs].to(device))
                rows.append(f.float().cpu())
        feats["fused"] = torch.cat(rows)
    return feats


def export_features(cfg: VempConfig, inputs: VempInputs, run_dir: Path,
                    fusion: CrossAttentionTokenFusion | None = None) -> dict[str, Path]:
    """Write ``features/<mode>.safetensors`` (mmkgc feature tables) for the four modes; returns mode -> path."""
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable, make_provenance

    fusion = load_fusion(cfg, inputs, run_dir) if fusion is None else fusion
    out = {}
    for mode, values in node_features(cfg, inputs, fusion).items():
        table = FeatureTable(values.contiguous(), mode, provenance=make_provenance(
            "mmkgc vemp export", mode=mode, run_dir=str(run_dir), text_tokens=str(cfg.features.text_tokens),
            image_tokens=str(cfg.features.image_tokens)))
        out[mode] = save_feature_table(table, run_dir / "features" / f"{mode}.safetensors")
    return out


def load_mode_features(run_dir: Path, mode: str, num_nodes: int) -> torch.Tensor:
    """An exported table ``[N, d]``.

    :raises ConfigError: the table was not exported.
    """
    from mmkgc.features.io import load_feature_table

    path = run_dir / "features" / f"{mode}.safetensors"
    if not path.is_file():
        raise ConfigError(f"{path}: feature mode {mode!r} not exported; run `mmkgc vemp export` first")
    return load_feature_table(path, num_entities=num_nodes).values.float()

def _relation_types(cfg: VempConfig, triples: TripleSet) -> tuple[torch.Tensor | None, int]:
    if cfg.linkpred.relation_grouping != "none":
        from mmkgc.data.relation_groups import vemp_relation_map

        m, names = vemp_relation_map(triples.relation_labels, cfg.linkpred.relation_grouping)
        return m, len(names)
    return None, triples.num_relations




def evaluate_sampled(model: VempLinkModel, graph: MessageGraph, positives: torch.Tensor, known: torch.Tensor,
                     num_candidates: int, legacy: bool, negatives: torch.Tensor | None, seed: int) -> dict[str, float]:
    """Tail MRR / Hits@{1,3,10} of ``positives`` under the fixed (or legacy) VEMP protocol, realistic ties
    (also optimistic)."""
    from mmkgc.evaluation.metrics import EvaluationResult
    from mmkgc.evaluation.sampled import vemp_link_ranks

    model.eval()
    with torch.no_grad():
        z = model.encode(graph)

        def score_pairs(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
            dev = z.device
            return model.decoder(z[src.to(dev)].unsqueeze(1), z[dst.to(dev)]).cpu()

        ranks = vemp_link_ranks(score_pairs, positives, graph.num_nodes, known_edges=known, negative_edges=negatives,
                                num_candidates=num_candidates, legacy=legacy, seed=seed)
    res = EvaluationResult.from_ranks(ranks, ks=(1, 3, 10), per_relation=False)
    m = res.metrics
    return {"mrr": m["realistic"]["tail"]["mrr"], "hits@1": m["realistic"]["tail"]["hits@1"],
            "hits@3": m["realistic"]["tail"]["hits@3"], "hits@10": m["realistic"]["tail"]["hits@10"],
            "mrr_optimistic": m["optimistic"]["tail"]["mrr"], "queries": int(res.num_queries)}


def train_linkpred(cfg: VempConfig, triples: TripleSet, features: torch.Tensor, mode: str,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stage 2 under VEMP's protocol for one feature table ``[N, d]``; returns the result record.

    Model selection: validation MRR (fixed protocol) every ``eval_every`` epochs and after the last one; the
    selected state is tested.
    """
    lp = cfg.linkpred
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = triples.num_entities
    relation_map, num_types = _relation_types(cfg, triples)

    def graph_of(trip: torch.Tensor) -> MessageGraph:
        return MessageGraph.from_triples(trip, n, num_types, relation_map)

    model = VempLinkModel(features, num_types, lp.hidden_dims, lp.out_dim, lp.num_bases, lp.dropout,
                          lp.decoder_hidden, lp.decoder_dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lp.lr)
    bce = nn.BCEWithLogitsLoss()
    known = torch.cat([_edges(triples.train), _edges(triples.valid), _edges(triples.test)])
    sel_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def queries(trip: torch.Tensor) -> torch.Tensor:
        e = _edges(trip)
        if lp.max_queries is not None and e.shape[0] > lp.max_queries:
            e = e[torch.randperm(e.shape[0], generator=sel_gen)[:lp.max_queries]]
        return e

    valid_q, test_q = queries(triples.valid), queries(triples.test)
    neg_gen = torch.Generator().manual_seed(cfg.seed + 2)
    valid_neg = random_negatives(valid_q, n, known, neg_gen)
    test_neg = random_negatives(test_q, n, known, neg_gen)
    valid_graph = graph_of(triples.train)
    test_graph = graph_of(torch.cat([triples.train, triples.valid]))

    history, best, best_state, start, stopped = [], -1.0, None, time.monotonic(), False
    best_valid: dict[str, Any] = {}
    train = triples.train
    for epoch in range(1, lp.epochs + 1):
        model.train()
        perm = torch.randperm(train.shape[0], generator=gen)
        n_sup = int(round(lp.disjoint_supervision * train.shape[0]))
        if n_sup > 0:
            sup, msg = train[perm[:n_sup]], train[perm[n_sup:]]
        else:  # the public code: supervision edges are the message-passing edges
            sup, msg = train[perm], train
        graph = graph_of(msg)
        total, steps = 0.0, 0
        for s in range(0, sup.shape[0], lp.batch_size):
            batch = sup[s:s + lp.batch_size]
            src, dst = batch[:, 0], batch[:, 2]
            neg_src, neg_dst = training_negatives(src, n, lp.negatives, gen)
            seeds = torch.cat([src, dst, neg_dst] if lp.negatives == "tail" else [src, dst, neg_src, neg_dst])
            if lp.fanouts is not None:
                sub = sample_subgraph(graph, seeds, lp.fanouts, gen)
                z = model.encoder(model.x[sub.nodes.to(device)], sub.edge_index.to(device), sub.edge_type.to(device))
                local = torch.full((n,), -1, dtype=torch.long)
                local[sub.nodes] = torch.arange(sub.nodes.numel())
                zs = z[local[seeds].to(device)]
            else:
                zs = model.encode(graph)[seeds.to(device)]
            b = batch.shape[0]
            neg_src_z = zs[:b] if lp.negatives == "tail" else zs[2 * b:3 * b]
            logits = torch.cat([model.decoder(zs[:b], zs[b:2 * b]), model.decoder(neg_src_z, zs[-b:])])
            labels = torch.cat([torch.ones(b), torch.zeros(b)]).to(device)
            loss = bce(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
            if lp.max_seconds is not None and time.monotonic() - start > lp.max_seconds:
                stopped = True
                break
        rec: dict[str, Any] = {"epoch": epoch, "loss": total / max(steps, 1), "steps": steps,
                               "seconds": round(time.monotonic() - start, 2)}
        if epoch % lp.eval_every == 0 or epoch == lp.epochs or stopped:
            rec["valid"] = evaluate_sampled(model, valid_graph, valid_q, known, lp.num_candidates, False, None,
                                            cfg.seed)
            if rec["valid"]["mrr"] > best:
                best, best_valid = rec["valid"]["mrr"], rec["valid"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(rec)
        log(f"[{mode}] epoch {epoch}: loss {rec['loss']:.4f}"
            + (f", valid MRR {rec['valid']['mrr']:.4f}" if "valid" in rec else ""))
        if stopped:
            log(f"[{mode}] stopped by linkpred.max_seconds={lp.max_seconds}")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result = {
        "mode": mode, "feature_dim": int(features.shape[1]), "history": history, "stopped_by_time": stopped,
        "valid": {"fixed": best_valid},
        "test": {"fixed": evaluate_sampled(model, test_graph, test_q, known, lp.num_candidates, False, None,
                                           cfg.seed)},
        "protocol": {"num_candidates": lp.num_candidates, "tie_policy": "realistic", "sides": "tail",
                     "relation_grouping": lp.relation_grouping, "num_edge_types": num_types,
                     "disjoint_supervision": lp.disjoint_supervision, "fanouts": lp.fanouts,
                     "negatives": lp.negatives},
    }
    if lp.legacy:
        result["valid"]["legacy"] = evaluate_sampled(model, valid_graph, valid_q, known, lp.num_candidates, True,
                                                     valid_neg, cfg.seed)
        result["test"]["legacy"] = evaluate_sampled(model, test_graph, test_q, known, lp.num_candidates, True,
                                                    test_neg, cfg.seed)
    return result


def run_linkpred(cfg: VempConfig, run_dir: Path, mode: str, triples: TripleSet | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stage 2 (``vemp_sampled``) on the exported ``mode`` table; writes ``linkpred/<mode>.json``."""
    if mode not in FEATURE_MODES:
        raise ConfigError(f"unknown feature mode {mode!r}; expected one of {', '.join(FEATURE_MODES)}")
    triples = load_graph(cfg) if triples is None else triples
    feats = load_mode_features(run_dir, mode, triples.num_entities)
    result = train_linkpred(cfg, triples, feats, mode, log)
    atomic_write_text(run_dir / "linkpred" / f"{mode}.json", json.dumps(result, indent=1))
    return result


def filtered_experiment(cfg: VempConfig, run_dir: Path, mode: str) -> dict[str, Any]:
    """The ``ExperimentConfig`` mapping of the filtered protocol for ``mode`` (R-GCN representation over the
    exported table + a relation-aware scorer, trained by the Trainer on the standard split)."""
    f = cfg.filtered
    lp = cfg.linkpred
    raw: dict[str, Any] = {
        "name": f"{cfg.name}-{mode}-filtered",
        "seed": cfg.seed,
        "dataset": {"path": str(cfg.graph.path), "format": "openke"},
        "model": {"scorer": f.scorer, "dim": f.dim, "scorer_options": dict(f.scorer_options),
                  "representation": "rgcn",
                  "modalities": [{"name": mode, "file": str(run_dir / "features" / f"{mode}.safetensors")}],
                  "gnn": {"hidden_dims": list(lp.hidden_dims), "num_bases": lp.num_bases, "dropout": lp.dropout,
                          "relation_grouping": lp.relation_grouping, "final_activation": False,
                          "fanouts": lp.fanouts}},
    }
    for section, values in f.experiment.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        else:
            raw[section] = values
    return raw


def run_filtered(cfg: VempConfig, run_dir: Path, mode: str, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Stage 2 under the filtered all-entity protocol; the run goes to ``filtered/<mode>``; returns its test
    metrics (realistic, both sides)."""
    from mmkgc.config import parse_config
    from mmkgc.pipeline import run_experiment

    exp = parse_config(filtered_experiment(cfg, run_dir, mode), source=f"vemp filtered ({mode})")
    if cfg.num_threads is not None:
        exp.training.num_threads = cfg.num_threads
    metrics = run_experiment(exp, run_dir / "filtered" / mode, device=cfg.device, log=log)
    test = metrics["summary"]["test"]["realistic"]
    return {"mode": mode, "test": {k: test[k] for k in SELECTION_METRICS if k in test}}


# ------------------------------------------------------------------------------------------------ compare
def compare(cfg: VempConfig, run_dir: Path, log: Callable[[str], None] = print,
            reuse_pretrain: bool = True) -> dict[str, Any]:
    """The four-way comparison: pretrain (unless ``pretrain/fusion.safetensors`` exists and ``reuse_pretrain``),
    export, then stage 2 for each mode and protocol; writes ``compare.json``, ``compare.md`` and ``compare.png``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    inputs = load_inputs(cfg)
    fusion = None
    if "fused" in cfg.compare.modes:
        if reuse_pretrain and (run_dir / "pretrain" / "fusion.safetensors").is_file():
            fusion = load_fusion(cfg, inputs, run_dir)
        else:
            fusion = pretrain(cfg, inputs, run_dir, log)
    if fusion is not None:
        export_features(cfg, inputs, run_dir, fusion)
    else:
        from mmkgc.features.io import save_feature_table
        from mmkgc.features.store import FeatureTable, make_provenance

        for mode, values in node_features(cfg, inputs, None).items():
            save_feature_table(FeatureTable(values.contiguous(), mode, provenance=make_provenance(
                "mmkgc vemp compare", mode=mode)), run_dir / "features" / f"{mode}.safetensors")
    rows = []
    for mode in cfg.compare.modes:
        row: dict[str, Any] = {"mode": mode}
        if "vemp_sampled" in cfg.compare.protocols:
            r = run_linkpred(cfg, run_dir, mode, inputs.triples, log)
            row["feature_dim"] = r["feature_dim"]
            row["vemp_fixed"] = r["test"]["fixed"]
            if "legacy" in r["test"]:
                row["vemp_legacy"] = r["test"]["legacy"]
        if "filtered" in cfg.compare.protocols:
            row["filtered"] = run_filtered(cfg, run_dir, mode, log)["test"]
        rows.append(row)
    summary = {"name": cfg.name, "graph": cfg.graph.format, "num_nodes": inputs.triples.num_entities,
               "rows": rows, "config": cfg.model_dump(mode="json")}
    atomic_write_text(run_dir / "compare.json", json.dumps(summary, indent=1))
    atomic_write_text(run_dir / "compare.md", compare_markdown(rows))
    plot_compare(rows, run_dir / "compare.png")
    return summary


_COLUMNS = (("vemp_fixed", "VEMP sampled (fixed)"), ("vemp_legacy", "VEMP sampled (legacy)"),
            ("filtered", "filtered all-entity"))


def compare_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one row per feature mode, MRR / Hits@10 per protocol (test split)."""
    present = [(k, label) for k, label in _COLUMNS if any(k in r for r in rows)]
    head = "| features | dim | " + " | ".join(f"{label} MRR | {label} H@10" for _, label in present) + " |"
    sep = "|---|---|" + "---|---|" * len(present)
    lines = [head, sep]
    for r in rows:
        cells = [r["mode"], str(r.get("feature_dim", ""))]
        for k, _ in present:
            m = r.get(k)
            cells += [f"{m['mrr']:.4f}", f"{m['hits@10']:.4f}"] if m else ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_compare(rows: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bar plot of test MRR per feature mode and protocol (PNG, written atomically).

    :raises MissingExtraError: matplotlib is not installed (``pip install "mmkgc[plots]"``).
    """
    from mmkgc.extras import require

    matplotlib = require("matplotlib", "the VEMP comparison plot", extra="plots")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(k, label) for k, label in _COLUMNS if any(k in r for r in rows)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.8 / max(len(present), 1)
    for j, (k, label) in enumerate(present):
        xs = [i + j * width for i in range(len(rows))]
        ax.bar(xs, [r[k]["mrr"] if k in r else 0.0 for r in rows], width, label=label)
    ax.set_xticks([i + width * (len(present) - 1) / 2 for i in range(len(rows))], [r["mode"] for r in rows])
    ax.set_ylabel("test MRR")
    ax.set_title("VEMP feature comparison")
    ax.legend()
    from mmkgc.plotting import save_figure

    return save_figure(fig, path)
