"""``mmkgc enrich``: the Beyond Images enrichment pipeline (methods.md §3) as resumable CLI stages.

* ``caption DATASET --images DIR --model M --workdir W`` captions every entity image into a JSONL journal
  (``--source new`` for a second image set); re-running resumes without redoing finished images.
* ``merge --workdir W`` cleans (dedupe, too short, repetitive, cap, source priority) and merges captions into
  ``merged.json`` (released layout).
* ``fuse --workdir W --model M`` writes one LLM summary per entity (journaled, resumable) into ``enriched.json``.
* ``encode DATASET (--workdir W | --from FILE ...) --encoder E --output NAME`` aligns the texts to entity ids,
  encodes them and writes a feature table; ``--from`` imports released ``*_img_summary*.json`` files.
* ``audit --workdir W`` writes the self-contained ``audit.html``.
* ``all DATASET --images DIR --caption-model M --fusion-model F --encoder E --workdir W`` runs every stage.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from mmkgc.cli._common import (
    CaptionSource,
    DType,
    EnrichText,
    ImageLayout,
    console,
    coverage_table,
    load_triples,
    output_path,
    read_map,
    save_table,
)
from mmkgc.errors import ConfigError

enrich_app = typer.Typer(no_args_is_help=True,
                         help="Image captions -> cleaned descriptions -> LLM summary -> text features (Beyond Images).")

_WORKDIR = typer.Option(..., "--workdir", help="Working directory of the pipeline (journals, JSON, reports).")
# Prompt defaults (None) are the Beyond Images paper's, resolved where the settings are built (the constants live
# in mmkgc.features.enrich.caption / .fuse, which import torch: the CLI stays fast to start).
_FUSION_MAX_NEW_TOKENS = 512  # the paper configuration's; equals mmkgc.features.enrich.fuse.PAPER_MAX_NEW_TOKENS
_HELP_CAPTION_PROMPT = "Captioning prompt (default: the paper's); '' for unprompted captioning (GIT-coco)."
_HELP_SYSTEM = "System message of chat fusion models (default: the paper's)."
_HELP_USER = "User message of chat fusion models, with {entity} and {descriptions} (default: the paper's)."
_HELP_SEQ2SEQ = "Prompt of seq2seq fusion models (Flan-T5), with {entity} and {descriptions} (default: the paper's)."
_HELP_INPUT = ("Prompt token budget; default: all descriptions up to a chat model's context length, 1024 tokens for "
               "seq2seq models (as the paper).")


def _workdir(path: Path):
    from mmkgc.features.enrich.stages import Workdir

    return Workdir(path)


def _show(title: str, report: dict[str, Any]) -> None:
    console.print(coverage_table(title, report))


def _sample(n_entities: int, sample: Optional[int], seed: int) -> Optional[list[int]]:
    if sample is None:
        return None
    import numpy as np

    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_entities, size=min(sample, n_entities), replace=False).tolist())


def _caption(triples, images: Path, model: str, workdir: Path, source: str, prompt: Optional[str],
             prompt_template: Optional[str], batch_size: int, dtype: str, max_new_tokens: int, num_beams: int,
             device: Optional[str], layout: str, names: Optional[Path], entities: Optional[Path]) -> dict:
    from mmkgc.features.enrich.caption import PAPER_PROMPT, CaptionSettings, Captioner
    from mmkgc.features.enrich.stages import run_caption
    from mmkgc.features.vision import find_entity_images

    name_map, _ = read_map(names, triples.entity_labels)
    collection = find_entity_images(images, triples.entity_labels, layout=layout, name_map=name_map)
    limit = None
    if entities is not None:
        wanted = [ln.strip() for ln in entities.read_text(encoding="utf-8").splitlines() if ln.strip()]
        missing = [w for w in wanted if w not in triples.entity_to_id]
        if missing:
            raise ConfigError(f"--entities {entities}: {len(missing)} names are not entities of {triples.name} "
                              f"(e.g. {missing[0]!r})")
        limit = [triples.entity_to_id[w] for w in wanted]
    settings = CaptionSettings(prompt=PAPER_PROMPT if prompt is None else (prompt or None),
                               prompt_template=prompt_template, max_new_tokens=max_new_tokens,
                               num_beams=num_beams, dtype=dtype, batch_size=batch_size)
    captioner = Captioner(model, settings, device=device)
    report = run_caption(_workdir(workdir), collection, triples.entity_labels, captioner, source=source,
                         limit_entities=limit, progress=True)  # a bar on a terminal, lines otherwise
    _show(f"captions ({source})", report)
    return report


def _rules(min_words: int, max_per_entity: int, unique_ratio: float, repetitive_min_words: int):
    from mmkgc.features.enrich.clean import CleaningRules

    return CleaningRules(min_words=min_words, max_per_entity=max_per_entity, unique_ratio=unique_ratio,
                         repetitive_min_words=repetitive_min_words)


def _fuse(workdir: Path, model: str, max_input_tokens: Optional[int], max_new_tokens: int, num_beams: int,
          dtype: str, device: Optional[str], system_prompt: Optional[str] = None,
          user_prompt: Optional[str] = None, seq2seq_prompt: Optional[str] = None) -> dict:
    from mmkgc.features.enrich.fuse import SEQ2SEQ_TEMPLATE, SYSTEM_PROMPT, USER_TEMPLATE, FusionSettings, LLMFuser
    from mmkgc.features.enrich.stages import run_fuse

    settings = FusionSettings(max_input_tokens=max_input_tokens, max_new_tokens=max_new_tokens,
                              num_beams=num_beams, dtype=dtype,
                              system_prompt=SYSTEM_PROMPT if system_prompt is None else system_prompt,
                              user_template=USER_TEMPLATE if user_prompt is None else user_prompt,
                              seq2seq_template=SEQ2SEQ_TEMPLATE if seq2seq_prompt is None else seq2seq_prompt)
    wd = _workdir(workdir)
    wd.require(wd.descriptions, "merge")  # before loading a large model
    report = run_fuse(wd, LLMFuser(model, settings, device=device), progress=True)
    _show("fusion", report)
    return report


def _encode(triples, workdir: Optional[Path], files: Optional[list[Path]], encoder: str, output: Optional[str],
            text: str, concat_label: bool, names: Optional[Path], batch_size: int, device: Optional[str]) -> Path:
    from mmkgc.features.enrich.stages import run_encode
    from mmkgc.features.text import build_text_encoder

    if (workdir is None) == (not files):
        raise ConfigError("give exactly one of --workdir or --from FILE")
    for f in files or []:
        if not f.is_file():
            raise ConfigError(f"--from: {f} does not exist")
    name_map, _ = read_map(names, triples.entity_labels)
    enc = build_text_encoder(encoder, batch_size=batch_size, device=device)
    t0 = time.perf_counter()
    table, report = run_encode(triples.entity_labels, triples.name, enc,
                               workdir=_workdir(workdir) if workdir is not None else None,
                               files=files or None, text=text, concat_with_label=concat_label, name_map=name_map,
                               progress=True)
    out = output_path(triples.name, output, "generated_text")
    save_table(table, out)
    shown = {k: v for k, v in report.items() if k != "files"}
    shown["seconds"] = round(time.perf_counter() - t0, 1)
    _show(f"{triples.name} generated_text {list(table.values.shape)}", shown)
    console.print(f"wrote {out}")
    return out


@enrich_app.command("caption")
def caption(
    dataset: str = typer.Argument(..., help="Registered dataset name (or an OpenKE directory)."),
    images: Path = typer.Option(..., "--images", help="Image folder (per-entity folders or <KEY>_<k>.jpg files) "
                                "or a CSV/TSV/parquet table entity -> path."),
    model: str = typer.Option(..., "--model", help="Image-to-text model: directory or Hugging Face name."),
    workdir: Path = _WORKDIR,
    source: CaptionSource = typer.Option(CaptionSource.original, "--source",
                                         help="Which image set (source priority when merging: original first)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "--caption-prompt", help=_HELP_CAPTION_PROMPT),
    prompt_template: Optional[str] = typer.Option(None, "--prompt-template",
                                                  help="Chat wrapper with {prompt}, e.g. 'USER: <image>\\n{prompt} ASSISTANT:'."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    dtype: DType = typer.Option(DType.float32, "--dtype", help="Model weights dtype."),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", min=1),
    num_beams: int = typer.Option(1, "--num-beams", min=1, help="1 = greedy; decoding never samples."),
    device: Optional[str] = typer.Option(None, "--device"),
    layout: ImageLayout = typer.Option(ImageLayout.auto, "--layout", help="Image layout."),
    names: Optional[Path] = typer.Option(None, "--names", help="Two-column map image key <-> dataset entity."),
    entities: Optional[Path] = typer.Option(None, "--entities", help="Caption only the entities listed (one label a line)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Caption entity images into the workdir's journal (resumes an interrupted run)."""
    source, dtype, layout = CaptionSource(source).value, DType(dtype).value, ImageLayout(layout).value
    triples = load_triples(dataset, data_dir)
    _caption(triples, images, model, workdir, source, prompt, prompt_template, batch_size, dtype, max_new_tokens,
             num_beams, device, layout, names, entities)


@enrich_app.command("merge")
def merge(
    workdir: Path = _WORKDIR,
    min_words: int = typer.Option(3, "--min-words", min=0, help="Drop captions with fewer words."),
    max_per_entity: int = typer.Option(500, "--max-per-entity", min=1),
    unique_ratio: float = typer.Option(0.5, "--unique-ratio", min=0.0, max=1.0,
                                       help="Drop captions with fewer unique words than this share of their words."),
    repetitive_min_words: int = typer.Option(5, "--repetitive-min-words", min=0),
) -> None:
    """Clean and merge captions per entity (released layout: merged.json)."""
    from mmkgc.features.enrich.stages import run_merge

    _show("merge", run_merge(_workdir(workdir), _rules(min_words, max_per_entity, unique_ratio, repetitive_min_words)))


@enrich_app.command("fuse")
def fuse(
    workdir: Path = _WORKDIR,
    model: str = typer.Option(..., "--model", help="Flan-T5 (seq2seq) or a causal chat model: directory or name."),
    max_input_tokens: Optional[int] = typer.Option(None, "--max-input-tokens", min=1, help=_HELP_INPUT),
    max_new_tokens: int = typer.Option(_FUSION_MAX_NEW_TOKENS, "--max-new-tokens", min=1),
    num_beams: int = typer.Option(1, "--num-beams", min=1),
    dtype: DType = typer.Option(DType.float32, "--dtype"),
    device: Optional[str] = typer.Option(None, "--device"),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", "--fusion-system-prompt", help=_HELP_SYSTEM),
    user_prompt: Optional[str] = typer.Option(None, "--prompt", "--fusion-prompt", help=_HELP_USER),
    seq2seq_prompt: Optional[str] = typer.Option(None, "--seq2seq-prompt", "--fusion-seq2seq-prompt",
                                       help=_HELP_SEQ2SEQ),
) -> None:
    """One LLM summary per entity (journaled, resumable) -> enriched.json."""
    dtype = DType(dtype).value
    _fuse(workdir, model, max_input_tokens, max_new_tokens, num_beams, dtype, device, system_prompt, user_prompt,
          seq2seq_prompt)


@enrich_app.command("encode")
def encode(
    dataset: str = typer.Argument(..., help="Registered dataset name (or an OpenKE directory)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Encode this pipeline's enriched.json."),
    files: Optional[list[Path]] = typer.Option(None, "--from", help="Released-layout JSON file(s), original first."),
    encoder: str = typer.Option("all-MiniLM-L6-v2", "--encoder", help="Text encoder name or directory."),
    output: Optional[str] = typer.Option(None, "--output", help="Table NAME or path; default generated_text."),
    text: EnrichText = typer.Option(EnrichText.auto, "--text", help="auto: summary, else merged, else captions."),
    concat_label: bool = typer.Option(False, "--concat-label", help="Encode 'entity name + text'."),
    names: Optional[Path] = typer.Option(None, "--names", help="Map file name <-> dataset entity (e.g. ent_links)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Align enrichment texts to entity ids, encode them, write a feature table and its coverage report."""
    text = EnrichText(text).value
    triples = load_triples(dataset, data_dir)
    _encode(triples, workdir, files, encoder, output, text, concat_label, names, batch_size, device)


@enrich_app.command("audit")
def audit(
    workdir: Path = _WORKDIR,
    link_images: bool = typer.Option(False, "--link-images", help="Link image files instead of embedding thumbnails."),
    max_entities: Optional[int] = typer.Option(None, "--max-entities", min=1),
) -> None:
    """Write the self-contained audit page (images, captions, summaries, coverage)."""
    from mmkgc.features.enrich.stages import run_audit

    console.print(f"wrote {run_audit(_workdir(workdir), embed=not link_images, max_entities=max_entities)}")


@enrich_app.command("all")
def run_all(
    dataset: str = typer.Argument(...),
    images: Path = typer.Option(..., "--images"),
    caption_model: str = typer.Option(..., "--caption-model"),
    fusion_model: Optional[str] = typer.Option(None, "--fusion-model", help="Skip fusion when not given."),
    workdir: Path = _WORKDIR,
    encoder: str = typer.Option("all-MiniLM-L6-v2", "--encoder"),
    output: Optional[str] = typer.Option(None, "--output"),
    new_images: Optional[Path] = typer.Option(None, "--new-images", help="Second image set (source 'new')."),
    prompt: Optional[str] = typer.Option(None, "--caption-prompt", "--prompt", help=_HELP_CAPTION_PROMPT),
    fusion_system_prompt: Optional[str] = typer.Option(None, "--fusion-system-prompt", help=_HELP_SYSTEM),
    fusion_prompt: Optional[str] = typer.Option(None, "--fusion-prompt", help=_HELP_USER),
    fusion_seq2seq_prompt: Optional[str] = typer.Option(None, "--fusion-seq2seq-prompt", help=_HELP_SEQ2SEQ),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    dtype: DType = typer.Option(DType.float32, "--dtype"),
    max_new_tokens: int = typer.Option(100, "--max-new-tokens", min=1),
    fusion_max_new_tokens: int = typer.Option(_FUSION_MAX_NEW_TOKENS, "--fusion-max-new-tokens", min=1),
    max_input_tokens: Optional[int] = typer.Option(None, "--max-input-tokens", min=1, help=_HELP_INPUT),
    num_beams: int = typer.Option(1, "--num-beams", min=1),
    min_words: int = typer.Option(3, "--min-words", min=0),
    entities: Optional[Path] = typer.Option(None, "--entities"),
    layout: ImageLayout = typer.Option(ImageLayout.auto, "--layout"),
    device: Optional[str] = typer.Option(None, "--device"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """caption -> merge -> fuse -> encode -> audit, each resuming what an earlier run finished."""
    dtype, layout = DType(dtype).value, ImageLayout(layout).value
    from mmkgc.features.enrich.stages import run_audit, run_merge

    triples = load_triples(dataset, data_dir)
    for src, folder in (("original", images), ("new", new_images)):
        if folder is not None:
            _caption(triples, folder, caption_model, workdir, src, prompt, None, batch_size, dtype, max_new_tokens,
                     num_beams, device, layout, None, entities)
    _show("merge", run_merge(_workdir(workdir), _rules(min_words, 500, 0.5, 5)))
    if fusion_model is not None:
        _fuse(workdir, fusion_model, max_input_tokens, fusion_max_new_tokens, num_beams, dtype, device,
              fusion_system_prompt, fusion_prompt, fusion_seq2seq_prompt)
    _encode(triples, workdir, None, encoder, output, "auto", False, None, 64, device)
    console.print(f"wrote {run_audit(_workdir(workdir))}")
    console.print(json.dumps({"workdir": str(workdir)}))
