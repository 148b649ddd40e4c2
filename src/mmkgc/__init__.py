"""mmkgc: multi-modal knowledge graph completion.

The data flows one way: triples + raw modalities -> feature tables -> entity representations ->
fusion -> scorer -> losses (training) / ranks (evaluation).  See ``docs/architecture.md``.

The Python API (:mod:`mmkgc.api`) is importable from here; it is loaded on first use so ``import mmkgc`` stays
light: ``mmkgc.pipeline(config, **overrides)``, ``mmkgc.load(dir)``, ``mmkgc.evaluate(model)``,
``mmkgc.predict_target(...)``, ``mmkgc.predict_triples(...)``.
"""

from mmkgc._version import __version__
from mmkgc.errors import MMKGCError

#: Names served lazily from :mod:`mmkgc.api` (``pipeline`` is the module :mod:`mmkgc.pipeline`, which is callable
#: and calls :func:`mmkgc.api.pipeline`: a submodule of that name would shadow a function).
_API = ("load", "evaluate", "predict_target", "predict_triples", "PipelineResult", "TrainedModel", "metric_frame",
        "pykeen_layout", "pykeen_metrics")

__all__ = ["MMKGCError", "__version__", "pipeline", *_API]


def __getattr__(name: str):
    if name == "pipeline":
        import importlib

        return importlib.import_module("mmkgc.pipeline")
    if name in _API:
        from mmkgc import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmkgc' has no attribute {name!r}")
