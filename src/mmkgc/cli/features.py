"""``mmkgc features``: extract, import and inspect per-entity modality feature tables.

* ``extract DATASET --modality text|image --encoder NAME [--images DIR|TABLE]`` computes features with a
  frozen encoder through the feature cache (resumable: an interrupted run continues from its last shard)
  and writes a named table.
* ``import DATASET FILE --modality NAME [--names MAP]`` aligns a community file (``.pth``, ``.npy``,
  ``.safetensors``, name-keyed ``.h5``) to the dataset's entity ids and prints the coverage report.
* ``info FILE`` prints shapes, coverage, norms and provenance.

Tables are written to ``$MMKGC_HOME/features/<DATASET>/<NAME>.safetensors`` (``--output NAME``, default the
modality name) or to any ``--output PATH``; training configs load them with ``table: NAME``.  Every user
error is an :class:`~mmkgc.errors.MMKGCError`, printed by :func:`mmkgc.cli.run` without a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from mmkgc.cli._common import (
    DatasetFormat,
    FeatureMode,
    ImageAggregate,
    ImageLayout,
    ImageOutput,
    Modality,
    MultiVector,
    Presence,
    console,
    coverage_table,
    err_console,
    load_triples,
    output_path,
    read_map,
    save_table,
)
from mmkgc.errors import ConfigError, DataFormatError

features_app = typer.Typer(no_args_is_help=True, help="Modality feature tables: extract, import, inspect.")

@features_app.command("extract")
def extract(
    dataset: str = typer.Argument(..., help="Registered dataset name (or a dataset directory, see "
                                  "--dataset-format)."),
    modality: Optional[Modality] = typer.Option(None, "--modality", help="Which encoder runs (not with "
                                                "--encoder vemp)."),
    encoder: str = typer.Option(..., "--encoder", help="Model name or local directory; 'vemp' trains VEMP's "
                                "token fusion on the training edges (stage 1) and writes its node-feature tables."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder (per-entity folders or "
                                          "<KEY>_<k>.jpg files) or a CSV/TSV/parquet table entity -> path."),
    output: Optional[str] = typer.Option(None, "--output", help="Table NAME (in the dataset's feature folder) "
                                         "or a .safetensors/.npy path; default: the modality name. vemp: a NAME "
                                         "prefix (default vemp: vemp_fused, ...) or a directory."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local dataset copies instead of the cache."),
    layout: ImageLayout = typer.Option(ImageLayout.auto, "--layout", help="Image layout."),
    names: Optional[Path] = typer.Option(None, "--names", help="Two-column map image key <-> dataset entity."),
    kind: ImageOutput = typer.Option(ImageOutput.pooled, "--output-kind", help="Image output."),
    aggregate: ImageAggregate = typer.Option(ImageAggregate.mean, "--aggregate", help="Several images per entity."),
    max_images: Optional[int] = typer.Option(None, "--max-images", min=1, help="Images per entity (first k readable)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ...; default: CUDA when available."),
    normalize: bool = typer.Option(False, "--normalize", help="L2-normalise each vector."),
    text_table: Optional[Path] = typer.Option(None, "--text-table", help="Entity text from a column of this "
                                              "CSV/TSV/parquet table (entities it lacks fall back to their label)."),
    key_column: str = typer.Option("entity", "--key-column", help="Entity-name column of --text-table."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text column of --text-table."),
    text_tokens: Optional[Path] = typer.Option(None, "--text-tokens", help="vemp: text token table [N, L, d] "
                                               "with its mask (e.g. CLIP text last hidden state)."),
    image_tokens: Optional[Path] = typer.Option(None, "--image-tokens", help="vemp: image patch token table "
                                                "[N, L, d]."),
    text_pooled: Optional[Path] = typer.Option(None, "--text-pooled", help="vemp: pooled text table for "
                                               "text_only (default: masked mean of --text-tokens)."),
    image_pooled: Optional[Path] = typer.Option(None, "--image-pooled", help="vemp: pooled image table for "
                                                "image_only (default: mean of --image-tokens)."),
    tables: list[FeatureMode] = typer.Option([], "--table", help="vemp: which tables to write (repeat; default "
                                             "all four). 'fused' trains the fusion module."),
    vemp_options: Optional[Path] = typer.Option(None, "--vemp-options", help="vemp: YAML file of stage-1 options "
                                                "(dim, num_heads, epochs, lr, max_seconds, ...; see docs/usage.md)."),
    overrides: list[str] = typer.Option([], "--set", help="vemp: override a stage-1 option: key=value."),
    seed: int = typer.Option(42, "--seed", help="vemp: seeds the fusion's initialisation and the edge order."),
    dataset_format: DatasetFormat = typer.Option(DatasetFormat.openke, "--dataset-format",
                                                 help="Layout of a DATASET directory."),
    valid_fraction: float = typer.Option(0.1, "--valid-fraction", min=0.0, max=0.49,
                                         help="vemp_csv: validation edges of the random split."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.01, max=0.49,
                                        help="vemp_csv: test edges of the random split."),
    split_seed: int = typer.Option(42, "--split-seed", help="vemp_csv: seed of the random split."),
) -> None:
    """Compute features with a frozen encoder (cached, resumable) and write a named table; or, with
    ``--encoder vemp``, VEMP's stage 1 (fused / text_only / image_only / concat tables)."""
    from mmkgc.features.cache import cached_image_features, cached_text_features

    fmt = DatasetFormat(dataset_format).value
    vemp_given = [flag for flag, value in (("--text-tokens", text_tokens), ("--image-tokens", image_tokens),
                                           ("--text-pooled", text_pooled), ("--image-pooled", image_pooled),
                                           ("--table", tables), ("--vemp-options", vemp_options),
                                           ("--set", overrides)) if value]
    if encoder == "vemp":
        others = [flag for flag, value in (("--modality", modality), ("--images", images),
                                           ("--text-table", text_table), ("--names", names)) if value is not None]
        if others:
            raise ConfigError(f"{', '.join(others)}: not used by --encoder vemp (it reads --text-tokens and "
                              "--image-tokens)")
        _extract_vemp(dataset, data_dir, fmt, (valid_fraction, test_fraction, split_seed), text_tokens,
                      image_tokens, text_pooled, image_pooled, [FeatureMode(t).value for t in tables], vemp_options,
                      overrides, seed, output, device)
        return
    if vemp_given:
        raise ConfigError(f"{', '.join(vemp_given)}: only with --encoder vemp")
    if modality is None:
        raise ConfigError("--modality text|image is required (except with --encoder vemp)")
    if fmt != "openke":
        raise ConfigError("--dataset-format: text and image extraction read a registered dataset or an OpenKE "
                          "directory")
    modality, layout = Modality(modality).value, ImageLayout(layout).value
    kind, aggregate = ImageOutput(kind).value, ImageAggregate(aggregate).value
    triples = load_triples(dataset, data_dir)
    out = output_path(triples.name, output, modality)
    t0 = time.perf_counter()
    if modality == "text":
        if images is not None:
            raise ConfigError("--images applies to --modality image")
        from mmkgc.features.text import build_text_encoder

        source: object = "label"
        if text_table is not None:
            from mmkgc.features.entity_text import LabelTable

            if text_column is None:
                raise ConfigError("--text-table needs --text-column")
            if not text_table.is_file():
                raise ConfigError(f"--text-table: {text_table} does not exist")
            source = LabelTable(text_table, key_column, text_column)
        enc = build_text_encoder(encoder, batch_size=batch_size, device=device, normalize=normalize)
        table = cached_text_features(triples.name, triples.entity_labels, enc, modality="text", source=source,
                                     progress=True)  # a bar on a terminal, lines otherwise
    else:
        if images is None:
            raise ConfigError("--modality image needs --images DIR|TABLE")
        from mmkgc.features.vision import build_image_encoder, find_entity_images

        name_map, _ = read_map(names, None)
        found = find_entity_images(images, triples.entity_labels, layout=layout, name_map=name_map)
        err_console.print(
            f"{found.report['entities_with_images']:,} of {triples.num_entities:,} entities have "
            f"{found.num_images:,} listed images ({found.layout} layout, {found.report['unknown_keys']} unknown keys)",
            highlight=False,
        )
        enc = build_image_encoder(encoder, output=kind, batch_size=batch_size, device=device, normalize=normalize)
        table = cached_image_features(triples.name, found, enc, modality="image", aggregate=aggregate,
                                      max_images=max_images, progress=True)
    seconds = time.perf_counter() - t0
    save_table(table, out)
    console.print(coverage_table(f"{triples.name} {modality} features", {
        "encoder": table.provenance.get("source"),
        "shape": list(table.values.shape),
        "present": f"{table.num_present:,} of {table.num_entities:,} ({table.num_present / max(table.num_entities, 1):.1%})",
        "seconds": f"{seconds:.1f}",
        "written": str(out),
        **({"image counts": table.provenance["options"].get("image_counts")} if modality == "image" else {}),
    }))


def _extract_vemp(dataset: str, data_dir: Optional[Path], fmt: str, split: tuple[float, float, int],
                  text_tokens: Optional[Path], image_tokens: Optional[Path], text_pooled: Optional[Path],
                  image_pooled: Optional[Path], tables: list[str], vemp_options: Optional[Path],
                  overrides: list[str], seed: int, output: Optional[str], device: Optional[str]) -> None:
    """``features extract --encoder vemp`` (:mod:`mmkgc.vemp`): every input and option is checked and every
    table computed before the first file is written; ``--output NAME`` (default ``vemp``) writes the tables
    ``NAME_<mode>`` into the dataset's feature folder, ``--output DIR`` (a path) writes ``DIR/<mode>.safetensors``
    and refuses to replace a file there."""
    from mmkgc.features.cache import is_table_name
    from mmkgc.pipeline import resolve_device
    from mmkgc.vemp import FEATURE_MODES, extract_tables, load_inputs, load_options

    if text_tokens is None or image_tokens is None:
        raise ConfigError("--encoder vemp needs --text-tokens and --image-tokens (token tables, one row per entity)")
    options = load_options(vemp_options, overrides)
    dev = resolve_device(device or "auto")
    if fmt == "openke":
        triples = load_triples(dataset, data_dir)
    else:
        from mmkgc.data.registry import resolve_dataset

        path = Path(dataset)
        if not path.is_dir():
            raise ConfigError(f"DATASET {dataset}: --dataset-format {fmt} needs a directory")
        triples = resolve_dataset(path, format=fmt, random_split=split)
    modes = list(dict.fromkeys(tables)) or list(FEATURE_MODES)
    prefix = output or "vemp"
    if is_table_name(prefix):
        targets = {mode: output_path(triples.name, f"{prefix}_{mode}", mode) for mode in modes}
    else:
        folder = Path(prefix).expanduser()
        if folder.suffix.lower() in (".safetensors", ".npy", ".pt", ".pth"):
            raise ConfigError(f"--output {folder}: --encoder vemp writes four tables; give a directory or a table "
                              "NAME prefix, not a file")
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--output {folder}: is a file; give a directory (or a table NAME)")
        targets = {mode: folder / f"{mode}.safetensors" for mode in modes}
        taken = [str(p) for p in targets.values() if p.exists()]
        if taken:
            raise ConfigError(f"--output {folder}: {', '.join(taken)} exist(s); choose another --output")
    inputs = load_inputs(triples, text_tokens, image_tokens, text_pooled, image_pooled)
    sources = {k: str(v) for k, v in (("text_tokens", text_tokens), ("image_tokens", image_tokens),
                                      ("text_pooled", text_pooled), ("image_pooled", image_pooled)) if v}
    t0 = time.perf_counter()
    written = extract_tables(inputs, options, modes, seed=seed, device=dev, sources=sources,
                             log=lambda line: err_console.print(line, markup=False, highlight=False))
    for mode, table in written.items():
        save_table(table, targets[mode])
    console.print(coverage_table(f"{triples.name} VEMP stage-1 tables", {
        **{mode: f"{list(written[mode].values.shape)} -> {targets[mode]}" for mode in modes},
        "seconds": f"{time.perf_counter() - t0:.1f}",
    }))


@features_app.command("import")
def import_(
    dataset: str = typer.Argument(..., help="Registered dataset name (or an OpenKE directory)."),
    file: Path = typer.Argument(..., help="Feature file: .pth, .pt, .npy, .safetensors, .h5."),
    modality: str = typer.Option(..., "--modality", help="Modality name of the table (text, image, ...)."),
    names: Optional[Path] = typer.Option(None, "--names", help="Two-column name map (file name <-> dataset entity)."),
    presence: Presence = typer.Option(Presence.all, "--presence", help="How the presence mask is derived."),
    multi: MultiVector = typer.Option(MultiVector.mean, "--multi", help=".h5 entries with several vectors."),
    key: Optional[str] = typer.Option(None, "--key", help="Tensor name inside a dict .pth / multi-tensor file."),
    output: Optional[str] = typer.Option(None, "--output", help="Table NAME or path; default: the modality name."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Local dataset copies instead of the cache."),
    min_coverage: float = typer.Option(0.5, "--min-coverage", min=0.0, max=1.0,
                                       help="Fail (writing nothing) when the file gives rows to fewer than this "
                                            "fraction of the dataset's entities (a wrong name map or dataset)."),
) -> None:
    """Align a community feature file to the dataset's entity ids, print the coverage report, write a table."""
    from mmkgc.features.io import import_feature_file, import_h5_features

    presence, multi = Presence(presence).value, MultiVector(multi).value
    triples = load_triples(dataset, data_dir)
    out = output_path(triples.name, output, modality)
    name_map, map_report = read_map(names, triples.entity_labels)
    try:
        if file.suffix.lower() in (".h5", ".hdf5"):
            table = import_h5_features(file, modality, triples.entity_labels, name_map=name_map, multi=multi,
                                       presence=presence)
        else:
            table = import_feature_file(file, modality, entity_labels=triples.entity_labels, name_map=name_map,
                                        presence=presence, key=key)
    except ValueError as exc:
        if isinstance(exc, DataFormatError):
            raise
        raise DataFormatError(file, None, str(exc)) from None
    options = table.provenance.get("options", {})
    report: dict[str, Any] = {
        "file": str(file),
        "shape": list(table.values.shape),
        "present": f"{table.num_present:,} of {table.num_entities:,} ({table.num_present / max(table.num_entities, 1):.1%})",
    }
    alignment = options.get("alignment")
    if alignment:
        report.update({k: v for k, v in alignment.items() if k not in ("name_map",)})
    else:
        report["rows"] = "entity-id order"
        report["missing_rows"] = options.get("missing_rows", 0)
    if map_report:
        report["name_map"] = map_report
    matched = int(alignment["matched"]) if alignment else table.num_entities - int(options.get("missing_rows", 0))
    if matched == 0 or matched < min_coverage * table.num_entities:
        console.print(coverage_table(f"{triples.name}: import {file.name} as {modality!r} (not written)", report))
        hint = ("none of its names matched an entity; check --names and the dataset" if matched == 0 else
                f"below --min-coverage {min_coverage:g}; check --names and the dataset, or lower --min-coverage")
        raise DataFormatError(file, None, f"gives rows to {matched:,} of {table.num_entities:,} {triples.name} "
                              f"entities ({matched / max(table.num_entities, 1):.1%}): {hint}; nothing was written")
    save_table(table, out)
    report["written"] = str(out)
    console.print(coverage_table(f"{triples.name}: import {file.name} as {modality!r}", report))


def _norm_stats(values, rows) -> dict[str, float]:
    if values.numel() == 0 or rows.numel() == 0:
        return {}
    norms = values.norm(dim=-1)[rows]
    if norms.numel() == 0:
        return {}
    return {"min": float(norms.min()), "mean": float(norms.mean()), "max": float(norms.max())}


@features_app.command("info")
def info(
    file: Path = typer.Argument(..., help="A feature table (.safetensors/.npy written by mmkgc) or a raw array."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Shapes, coverage, norms and provenance of a feature file."""
    import torch

    from mmkgc.features.io import is_feature_table_file, load_feature_table, read_feature_array

    if is_feature_table_file(file):
        table = load_feature_table(file)
        if table.is_tokens:
            real = table.token_mask & table.present.unsqueeze(1)
            norms = _norm_stats(table.values, real)
            tokens = {"tokens_per_row": table.num_tokens,
                      "real_tokens_per_present_row": float(real.sum(1)[table.present].float().mean())
                      if table.num_present else 0.0}
        else:
            norms = _norm_stats(table.values, table.present)
            tokens = {}
        zero_rows = int((table.values.reshape(table.num_entities, -1).abs().sum(1) == 0).sum())
        report: dict[str, Any] = {
            "file": str(file),
            "format": "mmkgc feature table",
            "modality": table.modality,
            "shape": list(table.values.shape),
            "kind": "tokens" if table.is_tokens else "pooled",
            **tokens,
            "present": table.num_present,
            "missing": table.num_entities - table.num_present,
            "coverage": round(table.num_present / max(table.num_entities, 1), 6),
            "all_zero_rows": zero_rows,
            "norms_of_present": norms,
            "provenance": table.provenance,
        }
    else:
        arr = read_feature_array(file)
        x = arr.float()
        flat = x.reshape(x.shape[0], -1)
        finite = torch.isfinite(flat).all(dim=1)
        report = {
            "file": str(file),
            "format": "raw array (no presence mask or provenance; import it with `mmkgc features import`)",
            "shape": list(arr.shape),
            "dtype": str(arr.dtype).replace("torch.", ""),
            "all_zero_rows": int((flat.abs().sum(1) == 0).sum()),
            "non_finite_rows": int((~finite).sum()),
            "norms": _norm_stats(x.nan_to_num(), finite),
        }
        manifest = file.with_name(file.name + ".entities.txt")
        if manifest.is_file():
            report["manifest"] = str(manifest)
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        console.print(coverage_table(f"{file.name}", report))

