"""Image-to-text captioning of entity images (Beyond Images "Semantic Generation", methods.md §3.1 step 4).

:class:`Captioner` wraps any Hugging Face image-to-text model loadable with ``AutoModelForImageTextToText``:
BLIP (``Salesforce/blip-image-captioning-*``), BLIP-2 (``Salesforce/blip2-flan-t5-xxl``, the paper's model),
GIT (``microsoft/git-large-coco``, unprompted) and LLaVA-style chat models (``llava-hf/llava-1.5-7b-hf``, prompt
wrapped by the processor's chat template or by ``prompt_template``).  Decoding is deterministic: greedy or beam
search, never sampling.

:func:`caption_images` captions every image of an :class:`~mmkgc.features.vision.EntityImages` collection into a
JSONL journal (:class:`~mmkgc.features.enrich.journal.Journal`, one record per image, flushed before the next
batch starts), so an interrupted run resumes where it stopped.  Corrupt or missing images are journaled with
``status: "skipped"`` and counted, never retried and never fatal.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmkgc.errors import ConfigError
from mmkgc.features.enrich.journal import Journal

log = logging.getLogger(__name__)

#: The paper's captioning prompt (pengyu-zhang/Beyond-Images at daad1f8, ``configs/paper.yaml``,
#: ``captioning.prompt``; used with BLIP-2 Flan-T5-XXL), the default of :class:`CaptionSettings`.
PAPER_PROMPT = "Describe the scene, objects, colors, and other details in detail."
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_WS = re.compile(r"\s+")


def resolve_dtype(name: str) -> torch.dtype:
    """``"float32" | "float16" | "bfloat16"`` (or ``fp32``/``fp16``/``bf16``) as a torch dtype.

    :raises ConfigError: unknown name.
    """
    try:
        return _DTYPES[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {name!r}; expected one of {', '.join(sorted(_DTYPES))}") from None


def _normalise(text: str) -> str:
    return _WS.sub(" ", text).strip()


def strip_prompt(text: str, prompt: str | None) -> str:
    """``text`` without a leading copy of ``prompt`` (case- and whitespace-insensitive); BLIP and GIT echo a
    text prompt at the start of their output."""
    text = _normalise(text)
    if prompt:
        p = _normalise(prompt)
        if p and text.lower().startswith(p.lower()):
            text = text[len(p):].lstrip(" :,.-")
    return text


@dataclass
class CaptionSettings:
    """Everything that changes a caption (stored in the journal header; a resumed run must match it).

    :param prompt: text prompt; default the paper's :data:`PAPER_PROMPT`.  ``None`` (or ``""``): unprompted
        captioning (the paper's GIT-large-coco alternative).
    :param prompt_template: template with ``{prompt}`` for chat models without a processor chat template,
        e.g. ``"USER: <image>\\n{prompt} ASSISTANT:"`` (LLaVA-1.5).  ``None``: use the processor's chat template
        when it has one, else the bare prompt.
    :param max_new_tokens: generated tokens per caption (paper: 100).
    :param num_beams: 1 = greedy (paper), > 1 = beam search; decoding never samples.
    :param dtype: model weights dtype (``float32``, ``float16``, ``bfloat16``).
    :param batch_size: images per ``generate`` call (does not change captions up to floating-point noise).
    """

    prompt: str | None = PAPER_PROMPT
    prompt_template: str | None = None
    max_new_tokens: int = 100
    num_beams: int = 1
    dtype: str = "float32"
    batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.num_beams < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens, num_beams and batch_size must be >= 1")
        if self.prompt is not None and not self.prompt.strip():
            self.prompt = None
        if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
            raise ConfigError(f"prompt_template must contain '{{prompt}}', got {self.prompt_template!r}")
        resolve_dtype(self.dtype)


class Captioner:
    """A frozen image-to-text model: ``caption(images) -> list[str]``.

    :param model: a local directory or a Hugging Face name (resolved offline-first, see
        :func:`mmkgc.features.text.resolve_model`).
    :param settings: prompt, decoding and batching (:class:`CaptionSettings`).
    :param device: ``None`` picks CUDA when available.
    :raises UnknownNameError: unresolvable model name.
    :raises ConfigError: the model is not an image-to-text model.
    """

    def __init__(self, model: str | Path, settings: CaptionSettings | None = None, device: str | None = None):
        from mmkgc.extras import require

        require("transformers", "captioning (mmkgc enrich caption)", extra="vision")
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        from mmkgc.distributed import device_for_rank
        from mmkgc.features.text import quiet_transformers, weights_identity, resolve_model

        quiet_transformers()
        self.settings = settings or CaptionSettings()
        self.resolved = resolve_model(model, "captioning model")
        kw = {"local_files_only": self.resolved.local_files_only}
        self.device = str(device_for_rank(device))
        config = AutoConfig.from_pretrained(self.resolved.location, **kw)
        self.model_type = config.model_type
        try:
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.resolved.location, dtype=resolve_dtype(self.settings.dtype), **kw).to(self.device).eval()
        except ValueError as exc:
            raise ConfigError(f"captioning model {model!r} ({self.model_type}) is not an image-to-text model: {exc}") from None
        self.processor = AutoProcessor.from_pretrained(self.resolved.location, **kw)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self._weights = weights_identity(self.resolved)
        self.text = self._prompt_text()

    def _prompt_text(self) -> str | None:
        s = self.settings
        if getattr(self.processor, "chat_template", None) and s.prompt_template is None:
            # chat models (LLaVA) expect the image token of their chat template even when no text prompt is set
            content: list[dict[str, str]] = [{"type": "image"}]
            if s.prompt is not None:
                content.append({"type": "text", "text": s.prompt})
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if s.prompt is None:
            return None
        if s.prompt_template is not None:
            return s.prompt_template.format(prompt=s.prompt)
        return s.prompt

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able: model name, model type, weights fingerprint/revision and every decoding setting."""
        s = self.settings
        return {"model": self.resolved.canonical, "model_type": self.model_type, **self._weights,
                "prompt": s.prompt, "prompt_text": self.text, "max_new_tokens": s.max_new_tokens,
                "num_beams": s.num_beams, "dtype": s.dtype}

    def caption(self, images: Sequence[Any]) -> list[str]:
        """Captions of ``B`` PIL images (one ``generate`` call; split them with ``settings.batch_size``).

        :returns: ``B`` whitespace-normalised strings without the echoed prompt.
        """
        if not images:
            return []
        kwargs: dict[str, Any] = {"images": list(images), "return_tensors": "pt"}
        if self.text is not None:
            kwargs["text"] = [self.text] * len(images)
        batch = self.processor(**kwargs).to(self.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        s = self.settings
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=s.max_new_tokens, num_beams=s.num_beams,
                                      do_sample=False)
        ids = batch.get("input_ids")
        if ids is not None and out.shape[1] >= ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids.to(out.device)):
            out = out[:, ids.shape[1]:]  # decoder-only models (GIT, LLaVA) return the prompt first
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [strip_prompt(t, s.prompt) for t in texts]


@dataclass
class CaptionReport:
    """Counts of one :func:`caption_images` run.

    :ivar images: images listed; ``captioned`` newly captioned now; ``resumed`` already in the journal;
        ``skipped`` unreadable (now or in an earlier run); ``entities`` entities with at least one image.
    """

    images: int = 0
    captioned: int = 0
    resumed: int = 0
    skipped: int = 0
    entities: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON reports)."""
        return dict(self.__dict__)


def image_key(path: Path, root: Path) -> str:
    """Journal key of an image: its path relative to the collection root (``Q42_1.jpg`` for the flat layout,
    ``Entity/0.jpg`` for folders), or the absolute path when it lies outside."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def image_root(images: Any) -> Path:
    """The folder image keys are relative to: the collection's folder, or the folder of its table file."""
    source = Path(images.source)
    return source.parent if source.is_file() else source


def caption_images(
    images: Any,
    entity_labels: Sequence[str],
    captioner: Any,
    journal_path: str | Path,
    *,
    source: str = "original",
    limit_entities: Sequence[int] | None = None,
    progress: bool = False,
) -> CaptionReport:
    """Caption every image of ``images`` into the journal at ``journal_path``; resumable.

    Records: ``{"image": key, "entity": label, "entity_id": i, "index": k, "source": source, "caption": str,
    "status": "ok"}`` or ``{..., "caption": null, "status": "skipped", "reason": ...}`` for unreadable files.

    :param images: an :class:`~mmkgc.features.vision.EntityImages` (``paths`` [N] tuples, ``source`` root).
    :param entity_labels: ``N`` labels (stored in each record for the merge step).
    :param captioner: anything with ``caption(list of PIL images) -> list[str]``, ``identity`` and ``settings``
        (:class:`Captioner`).
    :param source: image source tag (``original`` or ``new``, used for source priority when merging).
    :param limit_entities: caption only these entity ids.
    :returns: a :class:`CaptionReport`.
    :raises DataFormatError: the journal is corrupt or was written with another model/prompt.
    :raises ValueError: the captioner returned a different number of captions than images.
    """
    from mmkgc.progress import progress as progress_bar
    from mmkgc.features.vision import load_image

    root = image_root(images)
    journal = Journal(journal_path, key="image", header={"stage": "caption", "captioner": captioner.identity})
    wanted = range(len(images.paths)) if limit_entities is None else sorted(set(int(i) for i in limit_entities))
    pending: list[tuple[str, int, int, Path]] = []
    report = CaptionReport()
    for i in wanted:
        paths = images.paths[i]
        if paths:
            report.entities += 1
        for k, p in enumerate(paths):
            report.images += 1
            key = image_key(p, root)
            rec = journal.get(key)
            if rec is not None:
                report.resumed += 1
                if rec.get("status") == "skipped":
                    report.skipped += 1
                continue
            pending.append((key, i, k, Path(p)))
    batch_size = int(captioner.settings.batch_size)

    def record(key: str, i: int, k: int, **fields: Any) -> dict[str, Any]:
        return {"image": key, "entity": entity_labels[i], "entity_id": i, "index": k, "source": source, **fields}

    with progress_bar(progress, len(pending), f"captioning ({source})") as advance:
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            loaded = []
            for key, i, k, p in chunk:
                img, reason = load_image(p)
                if img is None:
                    journal.append(record(key, i, k, caption=None, status="skipped", reason=reason))
                    report.skipped += 1
                    if len(report.skipped_examples) < 5:
                        report.skipped_examples.append(f"{key}: {reason}")
                    log.warning("skipping image %s: %s", p, reason)
                else:
                    loaded.append((key, i, k, img))
            if loaded:
                captions = captioner.caption([img for *_, img in loaded])
                if len(captions) != len(loaded):
                    raise ValueError(f"captioner returned {len(captions)} captions for {len(loaded)} images")
                for (key, i, k, _), text in zip(loaded, captions):
                    journal.append(record(key, i, k, caption=str(text), status="ok"))
                    report.captioned += 1
            advance(len(chunk))
    return report


def read_captions(journal_path: str | Path) -> dict[str, list[tuple[str, str, str]]]:
    """Captions of a caption journal grouped by entity label: ``{label: [(image key, caption, source)]}`` in
    journal order (skipped images left out).

    :raises DataFormatError: corrupt journal.
    """
    out: dict[str, list[tuple[str, str, str]]] = {}
    for rec in Journal(journal_path, key="image"):
        if rec.get("status") != "ok" or not isinstance(rec.get("caption"), str):
            continue
        out.setdefault(str(rec["entity"]), []).append((str(rec["image"]), rec["caption"], str(rec.get("source", "original"))))
    return out
