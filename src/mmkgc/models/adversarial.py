"""Modality-adversarial fused KGE models: AdaMF-MAT, NativE and AFME (methods.md §5, §6, §7, §8.7).

One model class, three objectives chosen by ``training.adversarial.kind``; all share the fused representation
(:class:`~mmkgc.models.fused.FusedRepresentation`), the RotatE scorer, the fake-triple construction and the
alternating schedule (main/critic step, then the generator step over the generator's parameters only, see
:class:`~mmkgc.training.steps.GeneratorStep`).

Fake triples (all three methods): for a positive ``(h, r, t)`` the generator replaces the non-structural
modality vectors of ``h`` and/or ``t`` (structure kept), the fused fake entity ``ĥ`` / ``t̂`` is scored under
``r``: ``f(ĥ, r, t)``, ``f(h, r, t̂)``, ``f(ĥ, r, t̂)`` (``fake_types``).

* ``mat`` (AdaMF-MAT, §6.4): main step ``L_KGC + μ Σ_fakes L_sig(f+, f_fake)`` (fakes as negatives, one weight per
  positive: the released code's across-batch softmax is ``fake_weighting: across_batch``); generator step
  ``Σ_fakes L_sig(f_fake, f+)`` (fakes made plausible).
* ``wgan_gp`` (NativE, §7): the KGC scorer is the critic; main step
  ``L_KGC + μ Σ_fakes (mean f_fake − mean f+) + μ λ_gp GP`` with the gradient penalty on head interpolates
  ``α h + (1 − α) ĥ``; generator step ``Σ_fakes mean(γ − f_fake) / |fakes|``.
* ``moien`` (AFME, §5): MoIEn generator completing absent modalities (noise-free output, detached in the main
  step), a self-attention discriminator (own step, BCE on real vs generated modality vectors of entities that
  have the modality), generator step ``λ_adv BCE(D(fake), real) + λ_rec ||G - x_m||²`` on present modalities
  (+ the WGAN critic terms of the fakes when ``μ > 0`` in the main step, and ``μ Σ mean(γ − f_fake)`` in the
  generator step).

Gradients: in the main step fakes are generated under ``no_grad`` (the generator is not in the main
optimiser's group, and its graph is not built); the generator and discriminator steps differentiate only their
own parameters (:class:`~mmkgc.training.steps.AuxiliaryStep` uses ``torch.autograd.grad`` over its group).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmkgc.config import AdversarialConfig
from mmkgc.models.fused import FusedKGEModel, FusedRepresentation
from mmkgc.nn.adversarial import (
    ModalityGenerator,
    MoIEnGenerator,
    SelfAttentionDiscriminator,
    SharedModalityGenerator,
)
from mmkgc.training.losses import SelfAdversarialSigmoidLoss
from mmkgc.training.steps import AuxiliaryStep


class AdversarialFusedModel(FusedKGEModel):
    """A fused KGE model with a modality generator (and, for ``moien``, a discriminator).

    :param adversarial: the ``training.adversarial`` section.
    :param adversarial_temperature: ``α`` of the self-adversarial sigmoid loss (for the ``mat`` fake terms with
        ``fake_weighting: across_batch``).
    """

    def __init__(self, num_entities: int, num_relations: int, scorer: nn.Module,
                 representation: FusedRepresentation, adversarial: AdversarialConfig,
                 adversarial_temperature: float = 2.0):
        super().__init__(num_entities, num_relations, scorer, representation)
        self.adv = adversarial
        dim, m = representation.dim, len(representation.modality_names)
        kind = adversarial.generator
        if kind == "per_modality":
            self.generator = ModalityGenerator(dim, m, adversarial.noise_dim, adversarial.hidden_dim)
        elif kind == "shared":
            self.generator = SharedModalityGenerator(dim, m, adversarial.noise_dim, adversarial.hidden_dim)
        else:
            self.generator = MoIEnGenerator(dim, m, adversarial.noise_dim, adversarial.layers, adversarial.heads)
        self.discriminator = (SelfAttentionDiscriminator(dim, m, adversarial.discriminator_layers, adversarial.heads)
                              if adversarial.kind == "moien" else None)
        self.fake_loss = SelfAdversarialSigmoidLoss(adversarial_temperature)
        #: generator updates taken so far, kept only when completion waits for them (``complete_after_steps > 0``):
        #: a buffer, so checkpoints carry it and a resumed run keeps its schedule, while the checkpoints of every
        #: other configuration keep the weights they always had
        self.register_buffer("generator_updates", torch.zeros((), dtype=torch.long)
                             if adversarial.complete_after_steps > 0 else None)
        if adversarial.kind == "moien" and adversarial.complete_missing:
            representation.completer = self._complete

    # -------------------------------------------------------------------------------- generation
    @property
    def completing(self) -> bool:
        """Whether absent modalities are generated now: ``complete_missing`` and the generator has taken at
        least ``complete_after_steps`` updates."""
        if not self.adv.complete_missing:
            return False
        return self.generator_updates is None or int(self.generator_updates) >= self.adv.complete_after_steps

    def _complete(self, x: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absent modality slots of ``x [B, M, D]`` replaced by the noise-free generator output (detached:
        the generator learns in its own step only); returns ``(x', all-True mask)``.  Before the warm-up
        (``complete_after_steps``) is over, ``(x, present)`` unchanged: absent slots stay masked."""
        if bool(present.all()) or not self.completing:
            return x, present
        with torch.no_grad():
            gen = self.generator(x.detach(), present, noise=False)
        filled = torch.where(present[:, 1:].unsqueeze(-1), x[:, 1:], gen.to(x.dtype))
        return torch.cat([x[:, :1], filled], 1), torch.ones_like(present)

    def fake_components(self, x: torch.Tensor, present: torch.Tensor, generator_grad: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, M, D]`` with every non-structural slot generated (noise on; the structural slot keeps its
        graph) and the all-present mask.  ``generator_grad=False`` generates under ``no_grad`` from detached
        inputs (main step: the generator is not trained there)."""
        with torch.set_grad_enabled(generator_grad and torch.is_grad_enabled()):
            gen = self.generator(x if generator_grad else x.detach(), present, noise=True)
        return torch.cat([x[:, :1], gen.to(x.dtype)], 1), torch.ones_like(present)

    def positive_and_fake_scores(self, positives: torch.Tensor, generator_grad: bool
                                 ) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        """Scores of the positives ``[B]`` and of each fake type ``[B]`` (``fake_types`` order), plus the fused
        real and fake head/tail vectors (for the gradient penalty).

        :param generator_grad: build the generator's graph (generator step) or generate under ``no_grad``.
        """
        b = positives.shape[0]
        rel = positives[:, 1]
        ids = torch.cat([positives[:, 0], positives[:, 2]])
        x, present = self.entities.components(ids)
        relation = rel.repeat(2) if self.relation_aware else None
        real, _ = self.entities.fuse(x, present, relation)
        fx, fp = self.fake_components(x, present, generator_grad)
        fake, _ = self.entities.fuse(fx, fp, relation)
        h, t, fh, ft = real[:b], real[b:], fake[:b], fake[b:]
        r = self.relations(rel)
        score = self.scorer.score_hrt
        fakes = []
        for kind in self.adv.fake_types:
            if kind == "head":
                fakes.append(score(fh, r, t))
            elif kind == "tail":
                fakes.append(score(h, r, ft))
            else:
                fakes.append(score(fh, r, ft))
        return score(h, r, t), fakes, {"h": h, "t": t, "fake_h": fh, "r": r}

    # -------------------------------------------------------------------------------- main (D / critic) step
    def _mat_fake_term(self, positive: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``L_sig(p, n)`` with the fake as the negative: weight 1 per positive, or the released across-batch
        softmax (``fake_weighting: across_batch``)."""
        neg = fake.reshape(-1, 1) if self.adv.fake_weighting == "per_positive" else fake.reshape(1, -1)
        return self.fake_loss(positive, neg)

    def negative_sampling_loss(self, positives, negative_entities, tail_corrupted, loss_fn):
        loss, terms = super().negative_sampling_loss(positives, negative_entities, tail_corrupted, loss_fn)
        mu = self.adv.mu
        if mu == 0.0:  # AdaMF-MAT as released: the fake term is multiplied by zero, skip computing it
            return loss, terms
        pos, fakes, vecs = self.positive_and_fake_scores(positives, generator_grad=False)
        pos, fakes = pos.float(), [f.float() for f in fakes]
        if self.adv.kind == "mat":
            adv = sum(self._mat_fake_term(pos, f) for f in fakes)
        else:
            adv = sum(f.mean() - pos.mean() for f in fakes)
            if self.adv.kind == "wgan_gp" and self.adv.gp_weight > 0:
                gp = self.gradient_penalty(vecs)
                terms["gradient_penalty"] = gp.detach()
                adv = adv + self.adv.gp_weight * gp
        terms["adversarial"] = adv.detach()
        return loss + mu * adv, terms

    def gradient_penalty(self, vecs: dict[str, torch.Tensor]) -> torch.Tensor:
        """NativE's penalty ``mean((‖∂f(ĩ, r, t)/∂ĩ‖₂ − 1)²)`` on head interpolates
        ``ĩ = α h + (1 − α) ĥ`` (``α ~ U(0, 1)`` per positive; real and fake are different tensors)."""
        h, fh = vecs["h"], vecs["fake_h"].detach()
        alpha = torch.rand(h.shape[0], 1, device=h.device, dtype=h.dtype)
        inter = (alpha * h.detach() + (1 - alpha) * fh).requires_grad_(True)
        f = self.scorer.score_hrt(inter, vecs["r"], vecs["t"])
        (grad,) = torch.autograd.grad(f.sum(), inter, create_graph=True)
        return ((grad.float().norm(dim=-1) - 1.0) ** 2).mean()

    # -------------------------------------------------------------------------------- auxiliary steps
    def generator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """The generator step's objective on the batch positives ``[B, 3]`` (see the module docstring)."""
        kind = self.adv.kind
        loss = positives.new_zeros((), dtype=torch.float32)
        if kind in ("mat", "wgan_gp") or self.adv.mu > 0:
            pos, fakes, _ = self.positive_and_fake_scores(positives, generator_grad=True)
            if kind == "mat":
                loss = loss + sum(self.fake_loss(f.float(), pos.float().detach().reshape(-1, 1)) for f in fakes)
            else:
                weight = 1.0 if kind == "wgan_gp" else self.adv.mu
                margin = float(getattr(self.scorer, "margin", 0.0))
                loss = loss + weight * sum((margin - f.float()).mean() for f in fakes) / len(fakes)
        if kind == "moien":
            loss = loss + self._moien_generator_terms(positives)
        return loss

    def _counted_generator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """:meth:`generator_loss`, counting the update in :attr:`generator_updates` (the completion schedule)."""
        if self.generator_updates is not None:
            self.generator_updates += 1
        return self.generator_loss(positives)

    def _entity_batch(self, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.unique(torch.cat([positives[:, 0], positives[:, 2]]))
        x, present = self.entities.raw_components(ids)
        return x.detach(), present

    def _moien_generator_terms(self, positives: torch.Tensor) -> torch.Tensor:
        x, present = self._entity_batch(positives)
        gen = self.generator(x, present, noise=True)
        loss = gen.new_zeros(())
        for j in range(gen.shape[1]):
            have = present[:, j + 1]
            if not bool(have.any()):
                continue
            g, real = gen[have, j], x[have, j + 1]
            loss = loss + self.adv.reconstruction_weight * ((g - real) ** 2).sum(-1).mean()
            logits = self.discriminator(g, x[have, 0], j)
            loss = loss + self.adv.adversarial_weight * F.softplus(-logits).mean()  # -log σ(D(fake))
        return loss

    def discriminator_loss(self, positives: torch.Tensor) -> torch.Tensor:
        """AFME discriminator: BCE, real modality vectors (label 1) vs generated ones (label 0), per modality,
        on the batch's entities that have the modality."""
        x, present = self._entity_batch(positives)
        with torch.no_grad():
            gen = self.generator(x, present, noise=True)
        loss = x.new_zeros(())
        for j in range(gen.shape[1]):
            have = present[:, j + 1]
            if not bool(have.any()):
                continue
            s = x[have, 0]
            loss = loss + F.softplus(-self.discriminator(x[have, j + 1], s, j)).mean() \
                + F.softplus(self.discriminator(gen[have, j], s, j)).mean()
        return loss

    def auxiliary_steps(self, training) -> list[AuxiliaryStep]:
        steps: list[AuxiliaryStep] = []
        if self.discriminator is not None:
            steps.append(_ModelStep("discriminator", self.discriminator.parameters(),
                                    self.adv.discriminator_lr or self.adv.generator_lr, self.discriminator_loss,
                                    self))
        steps.append(_ModelStep("generator", self.generator.parameters(), self.adv.generator_lr,
                                self._counted_generator_loss, self))
        return steps


class _ModelStep(AuxiliaryStep):
    """An auxiliary step whose loss is a model method of the batch positives (moved to the model's device)."""

    def __init__(self, name: str, parameters, lr: float, loss_of: Callable[[torch.Tensor], torch.Tensor],
                 model: nn.Module):
        super().__init__(name, parameters, lr)
        self.loss_of = loss_of
        self.model = model

    def loss(self, positives: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.loss_of(positives.to(device))
