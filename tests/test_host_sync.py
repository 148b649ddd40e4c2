"""Issue 13 item 7: no host synchronisation per training batch, and a fixed number per evaluation chunk.

There is no GPU here, so the test counts what would make the host wait for a GPU: every call of
``Tensor.item / tolist / numpy / cpu / __bool__ / __int__ / __float__ / __index__`` made from mmkgc's own code
(the caller's file is under ``src/mmkgc``), during whole training epochs with the accelerator's setting
(``Trainer.sync_every = 25``: the loss is read every 25 steps) and during a ranking run on the device code path.
Excluded are the functions that work on host tensors by design: the batch pipeline (``data/sampling.py``,
``data/triples.py``: batches and negatives are built on the host and sent with one non-blocking copy,
``Trainer._to_device``), ``ranking._host_pair_keys`` (the filter pairs of ``FilterIndex.known``, on the host) and
``distances._output`` (the CPU kernels' output check).

What remains and is not counted here (documented in docs/architecture.md, "Host synchronisations"):
``torch.unique`` of a batch's entity ids in the representations (its output size depends on the data, so CUDA
synchronises once per batch) and, in the adversarial/IMVIA method code, a few per-batch ``bool(...)`` checks.
"""

from __future__ import annotations

import collections
import contextlib
import sys
from pathlib import Path

import torch

from mmkgc.evaluation.ranking import compute_ranks
from test_fused_paths import build

SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")
SRC = str(Path(__file__).resolve().parents[1] / "src" / "mmkgc")
HOST_FILES = ("data/sampling.py", "data/triples.py")
#: functions that only ever see host tensors: the filter pairs of FilterIndex.known, and the row map checked by the
#: compiled all-entity kernels, which run on the CPU only (a GPU scores with PyTorch ops, written by index_copy_)
HOST_FUNCTIONS = ("_host_pair_keys", "_output")


@contextlib.contextmanager
def counting_syncs(monkeypatch):
    """Counts ``{(method, file:function): calls}`` of the methods above made from mmkgc's code."""
    counts: collections.Counter = collections.Counter()

    def wrap(name, original):
        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            path = frame.f_code.co_filename
            if (path.startswith(SRC) and not path.endswith(HOST_FILES)
                    and frame.f_code.co_name not in HOST_FUNCTIONS):
                counts[(name, f"{Path(path).name}:{frame.f_code.co_name}")] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    yield counts
    monkeypatch.undo()


def epoch_syncs(variant: str, batch_size: int, monkeypatch) -> tuple[collections.Counter, int]:
    from mmkgc.training.trainer import Trainer

    options = {"adversarial": {"kind": "wgan_gp"}} if variant == "native" else {}  # NativE's critic steps too
    cfg, data, model = build(variant, batch_size=batch_size, regularizer="l2", regularizer_weight=0.1, **options)
    trainer = Trainer(model, data.triples, cfg.training, cfg.evaluation, seed=0)
    trainer.sync_every = 25  # what a GPU run uses: read the losses every 25 steps
    with counting_syncs(monkeypatch) as counts:
        loss, _ = trainer._epoch(None)
    assert loss > 0
    trainer_terms[variant] = set(trainer.epoch_terms)
    return counts, trainer.step


#: the logged terms of each variant's epoch (each is read with the loss)
trainer_terms: dict[str, set] = {}


def test_training_epoch_syncs_do_not_grow_with_the_number_of_batches(monkeypatch):
    for variant in ("native", "afme_low_rank"):
        few, steps_few = epoch_syncs(variant, 64, monkeypatch)
        many, steps_many = epoch_syncs(variant, 4, monkeypatch)
        assert steps_many > 25 >= steps_few >= 2
        for counts, steps in ((few, steps_few), (many, steps_many)):
            # only the trainer's reads of the pending losses (and logged terms), once per 25 steps and at the end
            terms = len(trainer_terms[variant])
            assert set(counts) == {("tolist", "trainer.py:settle")}, (variant, counts)
            assert counts[("tolist", "trainer.py:settle")] == -(-steps // 25) * (1 + terms), (variant, steps, counts)


def ranking_syncs(model, data, batch_size, monkeypatch):
    import mmkgc.evaluation.ranking as ranking

    monkeypatch.setattr(ranking, "_use_numpy", lambda scores: False)  # the CUDA code path, on the CPU
    model.eval()
    fn = model.score_fn()
    queries = data.triples.test
    with counting_syncs(monkeypatch) as counts:
        result = compute_ranks(fn, queries, data.triples.filter_index, batch_size=batch_size)
    chunks = -(-queries.shape[0] // batch_size)
    return counts, chunks, result


def test_ranking_on_the_device_path_syncs_once_per_chunk_and_side(monkeypatch):
    _, data, model = build("native")
    small, chunks_small, r_small = ranking_syncs(model, data, 3, monkeypatch)
    large, chunks_large, r_large = ranking_syncs(model, data, 50, monkeypatch)
    assert chunks_small > chunks_large
    for counts, chunks in ((small, chunks_small), (large, chunks_large)):
        # one read of the relation groups per chunk (both sides are scored together), one of the rank checks per
        # chunk and side; per call: the queries and their relation order to the host once, the ranks once per side
        assert counts[("tolist", "kge.py:relation_groups")] == chunks
        assert counts[("tolist", "ranking.py:_rank_targets_torch")] == 2 * chunks
        assert counts[("cpu", "ranking.py:compute_ranks")] == 4
        assert sum(counts.values()) == 3 * chunks + 4, counts
    for side in ("head", "tail"):  # and the ranks do not depend on the chunking
        assert torch.equal(r_small.sides[side].optimistic, r_large.sides[side].optimistic)
        assert torch.equal(r_small.sides[side].pessimistic, r_large.sides[side].pessimistic)
