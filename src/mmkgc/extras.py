"""Optional dependencies ("extras"): one place that imports them and says which extra to install.

``pip install mmkgc`` brings what training and evaluation on precomputed features need (torch, numpy, pydantic,
PyYAML, typer, rich, safetensors, ...).  Everything else is an extra of the package (``pyproject.toml``)::

    text      transformers, sentence-transformers, pandas, pyarrow   (text encoders, entity text tables)
    vision    transformers, pillow, pandas, pyarrow                  (image encoders, image tables, captions)
    gnn       torch-geometric, pandas, pyarrow                       (R-GCN, VEMP and its graph layout)
    plots     matplotlib                                             (training_curve.png, modality-weight plots)
    tune      optuna                                                 (mmkgc tune)
    trackers  tensorboard, mlflow, wandb                             (trackers besides the run directory's files)
    h5        h5py                                                   (.h5 community feature files)
    all       every one of the above

Every import of such a package goes through :func:`require`, which raises :class:`MissingExtraError` (a user error:
the CLI prints its one-line message and exits with status 2) instead of a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mmkgc.errors import MMKGCError

#: import name -> (the extra that installs it, the PyPI distribution name)
EXTRA_OF: dict[str, tuple[str, str]] = {
    "transformers": ("text", "transformers"),
    "sentence_transformers": ("text", "sentence-transformers"),
    "PIL": ("vision", "pillow"),
    "torch_geometric": ("gnn", "torch-geometric"),
    "matplotlib": ("plots", "matplotlib"),
    "pandas": ("text", "pandas"),  # a core dependency since the Python API; kept for installs that lack it
    "pyarrow": ("text", "pyarrow"),
    "optuna": ("tune", "optuna"),
    "tensorboard": ("trackers", "tensorboard"),
    "mlflow": ("trackers", "mlflow"),
    "wandb": ("trackers", "wandb"),
    "h5py": ("h5", "h5py"),
}


class MissingExtraError(MMKGCError, ImportError):
    """An optional package is not installed.  The message names the package, what needed it and the extra:
    ``training_curve.png needs matplotlib, which is not installed: pip install "mmkgc[plots]"``.

    :param module: the import name (``matplotlib``).
    :param extra: the extra of mmkgc that installs it (``plots``).
    """

    def __init__(self, message: str, module: str, extra: str):
        super().__init__(message)
        self.module = module
        self.extra = extra


def require(module: str, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` (a top-level package or a submodule such as ``torch_geometric.utils``) or explain which
    extra installs it.

    :param purpose: what needs it, for the message (``"the R-GCN representation"``).
    :param extra: the extra to name; default: the one :data:`EXTRA_OF` lists for the top-level package.
    :raises MissingExtraError: the package (or one it needs) is not installed or cannot be imported.
    """
    top = module.split(".", 1)[0]
    extra_name, dist = EXTRA_OF.get(top, (extra or "all", top))
    extra_name = extra or extra_name
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = getattr(err, "name", None) or top
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed or cannot be imported ({missing}: {err}); "
            f'install it with: pip install "mmkgc[{extra_name}]"', module=top, extra=extra_name) from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it when it is absent)."""
    import importlib.util
    import sys

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
