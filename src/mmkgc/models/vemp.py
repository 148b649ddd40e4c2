"""The model side of VEMP's stage 2 (Sela et al., "Vision-Enhanced Message Passing"; methods.md section 2) in the
ordinary pipeline: evaluating a :class:`~mmkgc.models.kge.KGEModel` (an R-GCN representation,
:mod:`mmkgc.models.rgcn`, with the ``mlp_link`` scorer, :class:`~mmkgc.nn.scorers.MLPLink`) under VEMP's sampled
protocol (:class:`~mmkgc.evaluation.sampled.VempSampledProtocol`).  The training loop is
:class:`mmkgc.training.loops.LinkBCELoop`; stage 1 (token fusion pretraining and the feature tables) is
:mod:`mmkgc.vemp`.  Plain arguments only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from mmkgc.evaluation.metrics import DEFAULT_POLICIES, EvaluationResult
from mmkgc.evaluation.sampled import VempSampledProtocol


class SampledLinkEvaluator:
    """``evaluation.protocol: vemp_sampled`` for one model: ranks a split's edges by ``score(u, r_0, v)`` (the
    relation-agnostic scorer ignores the relation) against the protocol's sampled candidates.

    Message passing (representations with :meth:`~mmkgc.models.rgcn.RGCNRepresentation.use_graph`): the
    representation's graph (train edges) for ``valid``; train + valid edges for ``test``, as VEMP.

    :param model: the model (put in eval mode by :meth:`evaluate`).
    :param triples: the dataset the protocol was built on.
    :param protocol: the queries, negatives and candidate seed.
    :param policies: tie policies of the result (headline first).
    """

    def __init__(self, model, triples, protocol: VempSampledProtocol,
                 policies: Sequence[str] = DEFAULT_POLICIES):
        self.model = model
        self.triples = triples
        self.protocol = protocol
        self.policies = tuple(policies)

    def _graph(self, split: str):
        rep = self.model.entities
        if split != "test" or not hasattr(rep, "use_graph"):
            return contextlib.nullcontext()
        return rep.use_graph(rep.graph_of(torch.cat([self.triples.train, self.triples.valid])))

    @torch.no_grad()
    def ranks(self, split: str, legacy: bool = False):
        """The :class:`~mmkgc.evaluation.ranking.RankResult` of ``split`` (``valid`` / ``test``; ``legacy``: the
        public code's protocol)."""
        model = self.model
        model.eval()
        with self._graph(split):
            z = model.entities.tables(detach=True).table(None)  # [N, De]
            dev = z.device
            r = model.relations.weight[:1].detach()  # relation 0; the scorer ignores it

            def score_pairs(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
                return model.scorer.score_hrt(z[src.to(dev)].unsqueeze(1), r, z[dst.to(dev)]).float().cpu()

            return self.protocol.ranks(score_pairs, split, legacy)

    def evaluate(self, split: str, legacy: bool = False) -> EvaluationResult:
        """Tail-only metrics of ``split`` (``sampled_candidates = k``; ``filtered`` unless ``legacy``).

        :raises ValueError: a split other than ``valid`` / ``test``, or an empty one.
        """
        return EvaluationResult.from_ranks(self.ranks(split, legacy), policies=self.policies, per_relation=False,
                                           seed=self.protocol.seed, split=split, dataset=self.triples.name)
