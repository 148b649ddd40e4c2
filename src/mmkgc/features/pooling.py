"""Fixed (parameter-free) reshape-pooling of feature tables to 256 dimensions, as the IMVIA / MoMoK code does before
initialising its trainable modality tables (methods.md section 4.1).

It is an arbitrary fixed grouping of feature coordinates, kept only as an optional preprocessing
(``model.imvia.pooling: imvia_256``) for reproduction; the library default is a learned per-modality projection.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from mmkgc.errors import ConfigError


def imvia_pool_256(values: torch.Tensor, modality: str = "features") -> torch.Tensor:
    """Pool ``[N, d]`` features to ``[N, 256]`` with the published per-width rule.

    * ``d = 4096`` (VGG image vectors): view ``[N, 64, 64]``, 4x4 average pooling with stride 4 -> ``[N, 16, 16]``;
    * ``d = 768`` (BERT text): view ``[N, 12, 64]``, adaptive average pooling to ``[N, 4, 64]`` (row triples);
    * ``d = 384`` (MKG text / MiniLM): view ``[N, 12, 32]``, adaptive average pooling to ``[N, 4, 64]`` (averages
      row triples, repeats columns);
    * ``d = 256``: unchanged.

    :param values: float ``[N, d]``.
    :param modality: name used in the error message.
    :returns: float ``[N, 256]``.
    :raises ConfigError: a width without a published rule (use ``pooling: none`` and the learned projection).
    """
    if values.ndim != 2:
        raise ConfigError(f"imvia_256 pooling of {modality!r}: expected [N, d], got {tuple(values.shape)}")
    n, d = values.shape
    x = values.float()
    if d == 256:
        return x
    if d == 4096:
        return F.avg_pool2d(x.view(n, 1, 64, 64), kernel_size=4, stride=4).reshape(n, 256)
    if d == 768:
        return F.adaptive_avg_pool2d(x.view(n, 1, 12, 64), (4, 64)).reshape(n, 256)
    if d == 384:
        return F.adaptive_avg_pool2d(x.view(n, 1, 12, 32), (4, 64)).reshape(n, 256)
    raise ConfigError(f"imvia_256 pooling of {modality!r}: no published rule for width {d} (known 4096, 768, 384, "
                      "256); set model.imvia.pooling: none to use a learned projection instead")
