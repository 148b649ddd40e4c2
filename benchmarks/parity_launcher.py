"""Run an official reference entry point (AdaMF-MAT, NativE, IMVIA) unmodified, on the CPU if need be, and record
its per-epoch losses and final test metrics.  Used by ``benchmarks/parity.py``; not part of the library.

This script runs in its own process with the reference checkout's copy as the working directory (the official
code imports a top-level package called ``mmkgc`` too, so mmkgc's own ``src`` must not be on ``sys.path``).  It
changes nothing on disk in the reference code; instead it installs, before the entry point is imported:

* ``torch.Tensor.cuda`` / ``torch.nn.Module.cuda`` that leave the object where it is, when ``--device cpu``
  (the official code calls ``.cuda()`` unconditionally, e.g. on its noise tensors and in its trainers);
* a ``tqdm`` subclass whose ``set_description`` marks an epoch boundary (OpenKE-style trainers call it once per
  epoch) and a wrapper around the trainer's ``train_one_step`` (OpenKE) that records the step losses, so every
  epoch's mean discriminator/KGC loss and generator loss are written to ``--log`` as JSON lines
  ``{"epoch": e, "loss": mean_D, "loss_g": mean_G, "steps": n}``;
* a wrapper around ``Tester.run_link_prediction`` that writes its return value (MRR, MR, Hits@10, Hits@3,
  Hits@1; OpenKE filtered, head/tail averaged, optimistic ties) as ``{"test": {...}}`` to ``--log``
  (``--skip-test``: the test is replaced by a no-op, for loss-curve experiments);
* with ``--imvia`` (IMVIA's ``train.py``, which has no trainer class): the epoch's loss from the
  ``set_postfix(loss="main: <sum> ...")`` call divided by the number of ``ConvECorpus.get_batch`` calls, and the
  first metrics returned by ``ConvECorpus.get_validation_pred`` (the ensemble; random tie-breaking);
  ``--imvia-skip-branch-tests`` replaces the four single-branch test passes that follow it (printed, never
  returned) by a no-op, which saves four fifths of the official test time.

Usage (from parity.py)::

    python parity_launcher.py --log LOSSES.jsonl --device cpu --threads 1 --trainer AdvMixTrainer \\
        -- run_adamf_mat.py -dataset=DB15K ...
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
import time
from pathlib import Path


def _append(log: Path, record: dict) -> None:
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("parity_launcher: usage: parity_launcher.py [options] -- ENTRY.py [entry args]", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="parity_launcher")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trainer", default=None, help="OpenKE trainer class in mmkgc.config whose steps to record")
    parser.add_argument("--skip-test", action="store_true",
                        help="OpenKE: replace the final link-prediction test by a no-op (loss-curve experiments)")
    parser.add_argument("--imvia", action="store_true", help="record IMVIA's train.py (MoMoK-style corpus)")
    parser.add_argument("--imvia-skip-branch-tests", action="store_true",
                        help="IMVIA: skip the four single-branch test passes train.py runs after the ensemble's "
                             "(diagnostics only; each is a per-query NumPy loop as long as the ensemble's own)")
    opts = parser.parse_args(argv[:split])
    entry, entry_args = argv[split + 1], argv[split + 2:]

    import torch

    torch.set_num_threads(opts.threads)
    if opts.device == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
        torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]

    import tqdm as tqdm_module

    steps: list[tuple[float, float]] = []
    state = {"epoch": 0, "t0": time.perf_counter()}
    log = opts.log

    class EpochTqdm(tqdm_module.tqdm):  # type: ignore[misc]
        def set_description(self, desc=None, refresh=True):  # noqa: D102
            if steps:
                d = [s[0] for s in steps]
                g = [s[1] for s in steps]
                _append(log, {"epoch": state["epoch"], "loss": sum(d) / len(d), "loss_g": sum(g) / len(g),
                              "steps": len(steps), "seconds": time.perf_counter() - state["t0"]})
                steps.clear()
                state["epoch"] += 1
            return super().set_description(desc, refresh)

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):  # noqa: D102
            # IMVIA's train.py: set_postfix(loss="main: <sum over the epoch's batches> mi: ...") once per epoch
            text = str(kwargs.get("loss", ""))
            if opts.imvia and text.startswith("main:"):
                total = float(text.split()[1])
                n = max(batches[0], 1)
                _append(log, {"epoch": state["epoch"], "loss": total / n, "loss_sum": total, "steps": batches[0],
                              "seconds": time.perf_counter() - state["t0"]})
                batches[0] = 0
                state["epoch"] += 1
            return super().set_postfix(ordered_dict, refresh, **kwargs)

    batches = [0]
    tqdm_module.tqdm = EpochTqdm
    sys.path.insert(0, str(Path.cwd()))
    if opts.trainer is not None:
        import importlib

        config = importlib.import_module("mmkgc.config")
        trainer_cls = getattr(config, opts.trainer)
        original_step = trainer_cls.train_one_step

        def recording_step(self, data):
            out = original_step(self, data)
            if isinstance(out, tuple):
                steps.append((float(out[0]), float(out[1]) if len(out) > 1 else 0.0))
            else:
                steps.append((float(out), 0.0))
            return out

        trainer_cls.train_one_step = recording_step
        tester_cls = config.Tester
        original_test = tester_cls.run_link_prediction

        def recording_test(self, *a, **k):
            if opts.skip_test:
                _append(log, {"test": None, "skipped": True})
                return 0.0, 0.0, 0.0, 0.0, 0.0
            t0 = time.perf_counter()
            out = original_test(self, *a, **k)
            mrr, mr, h10, h3, h1 = (float(x) for x in out)
            _append(log, {"test": {"mrr": mrr, "mr": mr, "hits@10": h10, "hits@3": h3, "hits@1": h1},
                          "test_seconds": time.perf_counter() - t0})
            return out

        tester_cls.run_link_prediction = recording_test
    if opts.imvia:
        import importlib

        loader = importlib.import_module("utils.data_loader")
        corpus_cls = loader.ConvECorpus
        original_batch = corpus_cls.get_batch
        original_pred = corpus_cls.get_validation_pred

        def counting_batch(self, batch_num):
            batches[0] += 1
            return original_batch(self, batch_num)

        def recording_pred(self, model, split="test"):
            t0 = time.perf_counter()
            out = original_pred(self, model, split)
            m = out[0]
            _append(log, {"test": {"mrr": float(m["MRR"]), "mr": float(m["MR"]), "hits@10": float(m["Hits@10"]),
                                   "hits@3": float(m["Hits@3"]), "hits@1": float(m["Hits@1"])},
                          "epoch": state["epoch"], "test_seconds": time.perf_counter() - t0})
            return out

        corpus_cls.get_batch = counting_batch
        corpus_cls.get_validation_pred = recording_pred
        if opts.imvia_skip_branch_tests:
            # train.py only prints these; they run after the ensemble's test, so with one test at the last epoch
            # they touch nothing the ensemble's metrics depend on (their NumPy draws come after its own)
            def no_branch_test(self, model, split="test", index=0):
                return model.init_metric_dict(), None

            corpus_cls.get_validation_pred_signle = no_branch_test
    sys.argv = [entry, *entry_args]
    runpy.run_path(entry, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
