"""``mmkgc ls FAMILY``: the components a config can name, one per line with the first line of its docstring.

Each family is read from its resolver (``class_resolver.ClassResolver``, PyKEEN-style): scorers
(:data:`mmkgc.nn.scorers.scorer_resolver`), fusions (:data:`mmkgc.nn.fusion.fusion_resolver`), adapters
(:data:`mmkgc.nn.adapters.adapter_resolver`), generators (:data:`mmkgc.nn.adversarial.generator_resolver`), losses
(:data:`mmkgc.losses.loss_resolver`), loops (:data:`mmkgc.training.loops.loop_resolver`) and trackers
(:data:`mmkgc.training.tracking.tracker_resolver`).  Where a module has no resolver yet, its name table is listed.
"""

from __future__ import annotations

import importlib
import inspect
from enum import StrEnum
from typing import Any

import typer
from rich.table import Table

from mmkgc.cli._common import console


class Family(StrEnum):
    """A component family of ``mmkgc ls``."""

    scorers = "scorers"
    fusions = "fusions"
    adapters = "adapters"
    generators = "generators"
    losses = "losses"
    loops = "loops"
    trackers = "trackers"


#: family -> (module, resolver attribute, the module's name table used while it has no resolver)
_SOURCES: dict[Family, tuple[str, str, str | None]] = {
    Family.scorers: ("mmkgc.nn.scorers", "scorer_resolver", "SCORERS"),
    Family.fusions: ("mmkgc.nn.fusion", "fusion_resolver", None),
    Family.adapters: ("mmkgc.nn.adapters", "adapter_resolver", "ADAPTERS"),
    Family.generators: ("mmkgc.nn.adversarial", "generator_resolver", "GENERATORS"),
    Family.losses: ("mmkgc.losses", "loss_resolver", "LOSSES"),
    Family.loops: ("mmkgc.training.loops", "loop_resolver", None),
    Family.trackers: ("mmkgc.training.tracking", "tracker_resolver", "TRACKERS"),
}


def _summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring on one line ("" without one)."""
    doc = inspect.getdoc(obj) if obj is not None else None
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""


def _fallback(family: Family) -> dict[str, Any]:
    """Names known without a resolver (the modules of this branch before the nn/training resolvers land)."""
    if family is Family.fusions:
        from mmkgc.config import fusion_class

        return {name: fusion_class(name) for name in ("concat", "attention")}
    if family is Family.loops:
        from typing import get_args

        from mmkgc.config import TrainingConfig

        return dict.fromkeys(get_args(TrainingConfig.model_fields["loop"].annotation))
    module, _, table = _SOURCES[family]
    names = getattr(importlib.import_module(module), table)
    return dict(names) if isinstance(names, dict) else dict.fromkeys(names)


def entries(family: Family) -> list[tuple[str, list[str], str]]:
    """``(name, synonyms, one-line doc)`` per component of ``family``, sorted by name."""
    module, attribute, _ = _SOURCES[family]
    try:
        resolver = getattr(importlib.import_module(module), attribute, None)
    except ModuleNotFoundError:  # e.g. mmkgc.training.loops before the training branch lands
        resolver = None
    if resolver is not None:
        by_class: dict[type, list[str]] = {}
        for name, cls in resolver.synonyms.items():
            by_class.setdefault(cls, []).append(name)
        return sorted((name, sorted(by_class.get(cls, [])), _summary(cls)) for name, cls in resolver.lookup_dict.items())
    grouped: dict[Any, list[str]] = {}
    for name, cls in _fallback(family).items():
        grouped.setdefault(cls if cls is not None else name, []).append(name)
    return sorted((names[0], names[1:], _summary(cls if not isinstance(cls, str) else None))
                  for cls, names in grouped.items())


def ls_command(family: Family = typer.Argument(..., help="Which component family to list.")) -> None:
    """List the components a config can name (scorers, fusions, adapters, generators, losses, loops, trackers)."""
    table = Table(title=f"mmkgc {family.value}")
    for col in ("name", "also", "description"):
        table.add_column(col, overflow="fold")
    for name, synonyms, doc in entries(family):
        table.add_row(name, ", ".join(synonyms), doc)
    console.print(table)
