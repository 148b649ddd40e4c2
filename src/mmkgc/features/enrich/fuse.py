"""LLM fusion: one concise, entity-aligned summary from all descriptions of an entity (methods.md §3.1 step 6).

:class:`LLMFuser` runs either family the paper uses:

* **causal chat models** (Mistral-7B-Instruct-v0.3, the paper's; Llama-3.1-8B-Instruct): a system message (an
  expert summariser asked for one rich, coherent paragraph, not a list) and a user message naming the entity and
  listing its descriptions one per line, formatted with the tokenizer's chat template (a model whose template
  refuses the system role gets the system text prepended to the user message; a tokenizer without a template gets
  a plain ``System:/User:/Assistant:`` transcript).  Only the new tokens are decoded.  By default the chat model
  gets **every** description (the paper's code does not truncate its input): the only limit is the model's context
  length minus ``max_new_tokens``.
* **seq2seq models** (Flan-T5): one instruction prompt, input limited to 1,024 tokens by default (the paper's
  Flan-T5 truncation).

The default prompts are the paper's (pengyu-zhang/Beyond-Images, ``src/beyond_images/fusion/fusers.py``:
``CHAT_SYSTEM_PROMPT``, the user message of ``CausalFuser.fuse`` and ``PAPER_PROMPT`` with the list and answer cue
of ``Seq2SeqFuser.fuse``); they are the method's inputs, reproduced as such.  ``max_new_tokens`` defaults to the
paper configuration's 512 (``configs/paper.yaml``, ``fusion.max_new_tokens``).

Decoding is deterministic (greedy or beam search; never sampling).  When a token budget applies, truncation keeps
**whole descriptions**: the prompt is built with as many leading descriptions (in the cleaned priority order) as fit
the budget; a single description longer than the budget is the only case cut mid-text (recorded as
``truncated_description``).

:func:`fuse_entities` journals one record per entity (``{"entity", "summary", "used", "total", ...}``) so that an
interrupted run resumes without redoing finished entities.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmkgc.errors import ConfigError
from mmkgc.features.enrich.caption import resolve_dtype
from mmkgc.features.enrich.journal import Journal

log = logging.getLogger(__name__)

# The paper's fusion prompts (pengyu-zhang/Beyond-Images at daad1f8, src/beyond_images/fusion/fusers.py):
# CHAT_SYSTEM_PROMPT, the user message of CausalFuser.fuse and Seq2SeqFuser.fuse's PAPER_PROMPT + list + cue.
SYSTEM_PROMPT = (
    "You are an expert in summarizing and synthesizing information. Your task is "
    "to integrate a list of visual descriptions about an entity into a single, "
    "rich, and detailed paragraph. Capture as many key details as possible and "
    "ensure the final output is a coherent paragraph, not a list."
)
USER_TEMPLATE = "Please synthesize the following descriptions for the entity '{entity}':\n\n{descriptions}"
SEQ2SEQ_TEMPLATE = (
    "Your task is to integrate the following list of visual descriptions for the "
    "entity '{entity}' into a rich, detailed, and coherent summary paragraph. "
    "Capture as many key details as possible, such as objects, colors, actions, "
    "and settings. Your final output must be a single paragraph, not a list."
    "\n\nList of descriptions to summarize:\n{descriptions}\n\nDetailed Summary Paragraph:"
)
#: Input token budget of seq2seq models when ``max_input_tokens`` is not set (the paper's Flan-T5 truncation).
SEQ2SEQ_MAX_INPUT_TOKENS = 1024
#: Summary length limit of the paper configuration (``configs/paper.yaml``: ``fusion.max_new_tokens: 512``).
PAPER_MAX_NEW_TOKENS = 512


@dataclass
class FusionSettings:
    """Prompting and decoding of the fusion model (stored in the journal header).

    :param max_input_tokens: token budget of the whole prompt, for either family.  ``None`` (default): seq2seq
        models get :data:`SEQ2SEQ_MAX_INPUT_TOKENS` (1,024, the paper's Flan-T5 truncation); chat models get every
        description, up to their context length minus ``max_new_tokens`` (the paper does not truncate them).
    :param max_new_tokens: summary length limit (paper configuration: 512).
    :param num_beams: 1 = greedy (paper config), > 1 = beam search (paper's Flan-T5: 4).
    :param system_prompt: system message of chat models.
    :param user_template: user message with ``{entity}`` and ``{descriptions}`` (one per line).
    :param seq2seq_template: seq2seq prompt with ``{entity}`` and ``{descriptions}``.
    :param dtype: weights dtype.
    :raises ConfigError: a template without its fields or a non-positive limit.
    """

    max_input_tokens: int | None = None
    max_new_tokens: int = PAPER_MAX_NEW_TOKENS
    num_beams: int = 1
    system_prompt: str = SYSTEM_PROMPT
    user_template: str = USER_TEMPLATE
    seq2seq_template: str = SEQ2SEQ_TEMPLATE
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if (self.max_input_tokens is not None and self.max_input_tokens < 1) or min(self.max_new_tokens,
                                                                                    self.num_beams) < 1:
            raise ConfigError("max_input_tokens, max_new_tokens and num_beams must be >= 1")
        for name in ("user_template", "seq2seq_template"):
            t = getattr(self, name)
            if "{entity}" not in t or "{descriptions}" not in t:
                raise ConfigError(f"{name} must contain '{{entity}}' and '{{descriptions}}', got {t!r}")
        resolve_dtype(self.dtype)


class LLMFuser:
    """A frozen summarisation model: ``summarise(entity, descriptions) -> (summary, info)``.

    :param model: local directory or Hugging Face name (offline-first resolution).
    :param settings: :class:`FusionSettings`.
    :param device: ``None`` picks CUDA when available.
    :raises UnknownNameError: unresolvable model.
    :raises ConfigError: the model is neither seq2seq nor causal LM.
    """

    def __init__(self, model: str | Path, settings: FusionSettings | None = None, device: str | None = None):
        from mmkgc.extras import require

        require("transformers", "description fusion (mmkgc enrich fuse)", extra="text")
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        from mmkgc.distributed import device_for_rank
        from mmkgc.features.text import quiet_transformers, weights_identity, resolve_model

        quiet_transformers()
        self.settings = settings or FusionSettings()
        self.resolved = resolve_model(model, "fusion model")
        kw = {"local_files_only": self.resolved.local_files_only}
        self.device = str(device_for_rank(device))
        config = AutoConfig.from_pretrained(self.resolved.location, **kw)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        try:
            self.model = cls.from_pretrained(self.resolved.location, dtype=resolve_dtype(self.settings.dtype),
                                             **kw).to(self.device).eval()
        except ValueError as exc:
            raise ConfigError(f"fusion model {model!r} ({config.model_type}) is not a seq2seq or causal LM: {exc}") from None
        self.tokenizer = AutoTokenizer.from_pretrained(self.resolved.location, **kw)
        self.model_type = config.model_type
        self._weights = weights_identity(self.resolved)

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able: model, family, weights fingerprint/revision and every prompt/decoding setting."""
        s = self.settings
        return {"model": self.resolved.canonical, "model_type": self.model_type,
                "family": "seq2seq" if self.seq2seq else "causal", **self._weights,
                "max_input_tokens": s.max_input_tokens, "input_budget": self.input_budget,
                "max_new_tokens": s.max_new_tokens,
                "num_beams": s.num_beams, "dtype": s.dtype, "system_prompt": s.system_prompt,
                "user_template": s.user_template, "seq2seq_template": s.seq2seq_template}

    @property
    def context_length(self) -> int | None:
        """The model's maximum sequence length in tokens (config ``max_position_embeddings`` / ``n_positions`` and
        the tokenizer's ``model_max_length`` when set), or ``None`` when neither says."""
        limits = []
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(self.model.config, attr, None)
            if isinstance(value, int) and value > 0:
                limits.append(value)
                break
        tok = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tok, int) and 0 < tok < 10**7:  # transformers uses ~1e30 for "not set"
            limits.append(tok)
        return min(limits) if limits else None

    @property
    def input_budget(self) -> int | None:
        """Token budget of the prompt (see :class:`FusionSettings`); ``None``: no limit.

        :raises ConfigError: ``max_new_tokens`` leaves no room in a chat model's context.
        """
        s = self.settings
        if s.max_input_tokens is not None:
            return s.max_input_tokens
        if self.seq2seq:
            return SEQ2SEQ_MAX_INPUT_TOKENS
        context = self.context_length
        if context is None:
            return None
        if context - s.max_new_tokens < 1:
            raise ConfigError(f"fusion max_new_tokens={s.max_new_tokens} fills the model's whole context of "
                              f"{context} tokens; lower it")
        return context - s.max_new_tokens

    # ------------------------------------------------------------------------------------------- prompting
    def prompt(self, entity: str, descriptions: Sequence[str]) -> str:
        """The full model input for ``entity`` with exactly these descriptions (chat template applied)."""
        s = self.settings
        lines = "\n".join(descriptions)
        if self.seq2seq:
            return s.seq2seq_template.format(entity=entity, descriptions=lines)
        user = s.user_template.format(entity=entity, descriptions=lines)
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": s.system_prompt}, {"role": "user", "content": user}]
            try:
                return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception:  # templates such as Mistral's reject a system turn
                messages = [{"role": "user", "content": s.system_prompt + "\n\n" + user}]
                return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"System: {s.system_prompt}\nUser: {user}\nAssistant:"

    def _num_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=self.seq2seq)["input_ids"])

    def fit(self, entity: str, descriptions: Sequence[str]) -> tuple[str, int, bool]:
        """The prompt with the longest prefix of ``descriptions`` whose token count fits :attr:`input_budget`
        (all of them when there is no budget or they fit).

        :returns: ``(prompt, number of descriptions used, whether a single description had to be cut)``.
        """
        budget = self.input_budget
        if budget is None:
            return self.prompt(entity, descriptions), len(descriptions), False
        full = self.prompt(entity, descriptions)
        if self._num_tokens(full) <= budget:
            return full, len(descriptions), False
        lo, hi = 0, len(descriptions)
        # the token count grows with the number of descriptions: binary search the largest fitting prefix
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._num_tokens(self.prompt(entity, descriptions[:mid])) <= budget:
                lo = mid
            else:
                hi = mid - 1
        if lo > 0 or not descriptions:
            return self.prompt(entity, descriptions[:lo]), lo, False
        # not even the first description fits: cut it to the tokens left after the empty prompt
        room = budget - self._num_tokens(self.prompt(entity, []))
        if room <= 0:
            raise ConfigError(f"the input budget of {budget} tokens is smaller than the prompt template alone")
        ids = self.tokenizer(descriptions[0], add_special_tokens=False)["input_ids"]
        while room > 0:
            cut = self.tokenizer.decode(ids[:room], skip_special_tokens=True)
            text = self.prompt(entity, [cut])
            if self._num_tokens(text) <= budget:
                return text, 1, True
            room -= max(1, (self._num_tokens(text) - budget))
        raise ConfigError(f"the input budget of {budget} tokens leaves no room for a description")

    # ------------------------------------------------------------------------------------------- decoding
    def summarise(self, entity: str, descriptions: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """One deterministic summary.

        :returns: ``(summary, {"used", "total", "truncated_description", "input_tokens"})``.
        """
        text, used, cut = self.fit(entity, list(descriptions))
        enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=self.seq2seq).to(self.device)
        s = self.settings
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                                      do_sample=False, pad_token_id=pad)
        if not self.seq2seq:
            out = out[:, enc["input_ids"].shape[1]:]
        summary = " ".join(self.tokenizer.decode(out[0], skip_special_tokens=True).split())
        return summary, {"used": used, "total": len(descriptions), "truncated_description": cut,
                         "input_tokens": int(enc["input_ids"].shape[1])}


def fuse_entities(
    descriptions: Mapping[str, Sequence[str]],
    fuser: Any,
    journal_path: str | Path,
    *,
    display_names: Mapping[str, str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Summarise every entity of ``{entity label: cleaned descriptions}`` into a journal; resumable.

    Entities without descriptions are not sent to the model (no record).  Records:
    ``{"entity": label, "summary": str, "used": k, "total": n, "truncated_description": bool, "input_tokens": t}``.

    :param fuser: an :class:`LLMFuser` (or anything with ``summarise`` and ``identity``).
    :param display_names: the name put in the prompt per label (default: the readable label text).
    :returns: report ``{"entities", "fused", "resumed", "without_descriptions", "truncated"}``.
    :raises DataFormatError: corrupt journal or one written with another model/prompt.
    """
    from mmkgc.progress import progress as progress_bar
    from mmkgc.features.entity_text import label_text

    journal = Journal(journal_path, key="entity", header={"stage": "fuse", "fuser": fuser.identity})
    pending = [name for name, d in descriptions.items() if d and not journal.done(name)]
    report = {"entities": len(descriptions), "fused": 0, "resumed": sum(1 for n in descriptions if journal.done(n)),
              "without_descriptions": sum(1 for d in descriptions.values() if not d), "truncated": 0}
    with progress_bar(progress, len(pending), "fusing descriptions") as advance:
        for name in pending:
            shown = (display_names or {}).get(name) or label_text(name)[0] or name
            summary, info = fuser.summarise(shown, list(descriptions[name]))
            journal.append({"entity": name, "summary": summary, **info})
            report["fused"] += 1
            report["truncated"] += int(info["used"] < info["total"])
            advance(1)
    return report


def read_summaries(journal_path: str | Path) -> dict[str, str]:
    """``{entity label: summary}`` of a fusion journal (empty summaries left out).

    :raises DataFormatError: corrupt journal.
    """
    return {str(r["entity"]): str(r["summary"]) for r in Journal(journal_path, key="entity")
            if isinstance(r.get("summary"), str) and r["summary"].strip()}
