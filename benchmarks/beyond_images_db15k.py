"""Inputs for the Beyond Images plumbing run on real DB15K entities (docs/benchmarks.md, "Beyond Images").

No entity photographs and no captioning/LLM weights are reachable offline, so this script writes, honestly
labelled:

1. ``OUT/images/`` + ``OUT/images.csv``: Pillow-generated images (coloured shapes with the entity's name drawn on
   them) for a seeded sample of real DB15K entities, plus one deliberately corrupt file; table layout
   ``entity,image_path`` as ``mmkgc enrich caption --images`` reads it.
2. ``OUT/models/{blip,t5,clip}``: tiny *randomly initialised* BLIP captioner, Flan-T5-style summariser and CLIP
   image tower built from configs (tests/model_builders.py); their text is noise, they test the plumbing only.
3. ``--released PATH``: an enrichment file in the released Beyond Images layout for every DB15K entity with a
   thumbnail in ``raw/images.csv``.  It holds **no captions**: each per-image ``image_description_detail`` is the
   humanised Wikimedia Commons file name of the entity's DBpedia thumbnail ("Flag of Alabama"), and
   ``merged_descriptions`` repeats it.  It exists to run import, alignment and encoding with the real MiniLM on
   real, entity-aligned text in the released layout.

Usage::

    python benchmarks/beyond_images_db15k.py --data-dir ../shared/datasets --out /tmp/bi --sample 120 \\
        --released configs/beyond_images/DB15K_img_original_summary_commons_names.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import numpy as np


def _name_image(label: str, k: int, size: int = 96):
    from PIL import Image, ImageDraw

    seed = int(hashlib.sha256(f"{label}|{k}".encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, size - 20, 2)
        x1, y1 = x0 + rng.integers(10, 40), y0 + rng.integers(10, 40)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([int(x0), int(y0), int(x1), int(y1)], fill=colour)
    draw.text((4, size - 14), label.rsplit("/", 1)[-1].rstrip(">")[:14], fill=(255, 255, 255))
    return img


def _commons_description(url: str) -> str:
    name = unquote(url.split("FilePath/", 1)[-1].split("?", 1)[0])
    name = re.sub(r"\.(jpe?g|png|svg|gif|tiff?)$", "", name, flags=re.I)
    return " ".join(re.sub(r"[_\-]+", " ", name).split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding DB15K/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sample", type=int, default=120)
    ap.add_argument("--images-per-entity", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--released", type=Path, default=None, help="write the Commons-file-name enrichment JSON here")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from model_builders import tiny_blip, tiny_clip, tiny_t5

    from mmkgc.data.registry import load_dataset
    from mmkgc.features.entity_text import normalize_entity_name

    triples = load_dataset("DB15K", data_dir=args.data_dir)
    labels = triples.entity_labels
    rng = np.random.default_rng(args.seed)
    sample = sorted(rng.choice(len(labels), size=min(args.sample, len(labels)), replace=False).tolist())
    img_dir = args.out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in sample:
        for k in range(args.images_per_entity):
            path = img_dir / f"e{i:05d}_{k}.png"
            _name_image(labels[i], k).save(path)
            rows.append((normalize_entity_name(labels[i]), f"images/{path.name}"))
    (img_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    rows.append((normalize_entity_name(labels[sample[0]]), "images/corrupt.png"))
    with open(args.out / "images.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["entity", "image_path"])
        w.writerows(rows)
    (args.out / "sample_entities.txt").write_text("".join(labels[i] + "\n" for i in sample), encoding="utf-8")
    models = args.out / "models"
    tiny_blip(models / "blip")
    tiny_t5(models / "t5")
    tiny_clip(models / "clip")
    print(f"{len(sample)} entities, {len(rows)} image rows, tiny models in {models}")

    if args.released is not None:
        import pandas as pd

        from mmkgc.features.entity_text import entity_local_name

        thumbs = pd.read_csv(args.data_dir / "DB15K" / "raw" / "images.csv", dtype=str, keep_default_na=False)
        known = {normalize_entity_name(lab) for lab in labels}
        data = {}
        for uri, url in zip(thumbs["entity"], thumbs["thumbnail_url"]):
            uri = normalize_entity_name(uri)
            if uri not in known or not url:
                continue
            name = entity_local_name(uri) or uri
            image_id = unquote(url.split("FilePath/", 1)[-1].split("?", 1)[0])
            desc = _commons_description(url)
            data[name] = {"entity_name": name, "entity_qid": "", "dbpedia_url": uri, "wikidata_url": "",
                          "images": {image_id: {"image_description_detail": desc}}, "merged_descriptions": desc}
        args.released.parent.mkdir(parents=True, exist_ok=True)
        args.released.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        print(f"{len(data)} entities written to {args.released} (Commons file names, not captions)")


if __name__ == "__main__":
    main()
