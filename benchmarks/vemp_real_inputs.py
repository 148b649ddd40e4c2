"""Offline stand-ins for VEMP's frozen CLIP inputs on the real DB15K graph (acceptance run of the VEMP issue).

No DBpedia images and no CLIP weights are reachable offline, so:

* text tokens come from a **real** text encoder: sentence-transformers ``all-MiniLM-L6-v2`` (offline copy), token
  outputs (last hidden state, 384-d) + attention mask of each entity's short name (``entities.csv``);
* images are **generated**: one 64x64 picture per entity drawn with Pillow, deterministic from the entity id and
  name (background colour, shapes and the first letters of the name);
* image patch tokens come from a **locally built small CLIP** vision tower (random initialisation, seed 0: hidden 64,
  2 layers, 64x64 images in 16x16 patches = 16 patch tokens) through :class:`mmkgc.features.vision.HFImageEncoder`
  (``tokens``: last hidden state without the CLS token, as VEMP; ``pooled`` for the image-only baseline).

Writes mmkgc feature tables into ``OUT`` in two row orders: ``*_vemp`` (``entities.csv`` order = VEMP's graph) and
``*_openke`` (``entity2id.txt`` order = the standard DB15K split).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/vemp_real_inputs.py ../shared/datasets/DB15K runs/vemp_inputs
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch


def entity_image(index: int, name: str, size: int = 64):
    """A deterministic RGB picture for one entity (colours and shapes from a hash of ``index`` and ``name``)."""
    from PIL import Image, ImageDraw

    h = hashlib.sha256(f"{index}:{name}".encode()).digest()
    img = Image.new("RGB", (size, size), tuple(h[0:3]))
    draw = ImageDraw.Draw(img)
    for k in range(3):
        b = h[3 + 7 * k: 10 + 7 * k]
        x0, y0 = b[0] % size, b[1] % size
        x1, y1 = min(size - 1, x0 + 8 + b[2] % 32), min(size - 1, y0 + 8 + b[3] % 32)
        colour = tuple(b[4:7])
        (draw.ellipse if b[2] % 2 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    draw.text((4, size // 2 - 6), name[:8], fill=(255 - h[0], 255 - h[1], 255 - h[2]))
    return img


def small_clip(directory: Path) -> Path:
    """A small randomly initialised CLIP (seed 0) with its image processor, saved to ``directory``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           image_size=64, patch_size=16),
        projection_dim=32,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}).save_pretrained(directory)
    return directory


def main(dataset: Path, out: Path) -> None:
    import pandas as pd

    from mmkgc.data.formats import read_id_map
    from mmkgc.features.io import save_feature_table
    from mmkgc.features.store import FeatureTable, make_provenance
    from mmkgc.features.text import HFAutoModelEncoder
    from mmkgc.features.vision import HFImageEncoder

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    ents = pd.read_csv(dataset / "raw" / "entities.csv", dtype=str, keep_default_na=False)
    uris, names = list(ents["entity"]), [n if n.strip() else " " for n in ents["short_name"]]
    row_of = {u: i for i, u in enumerate(uris)}
    openke = [label.strip("<>") for label in read_id_map(dataset / "entity2id.txt")]
    missing = [u for u in openke if u not in row_of]
    if missing:
        raise SystemExit(f"{len(missing)} entity2id entities are not in entities.csv, e.g. {missing[:3]}")
    perm = torch.tensor([row_of[u] for u in openke])

    t0 = time.time()
    enc = HFAutoModelEncoder("all-MiniLM-L6-v2", max_length=32, batch_size=256, device="cpu")
    text, mask = enc.encode_tokens(names)
    print(f"text tokens {text.shape} in {time.time() - t0:.0f} s ({enc.identity['model']})", flush=True)

    t0 = time.time()
    clip_dir = small_clip(out / "small_clip")
    images = [entity_image(i, n) for i, n in enumerate(names)]
    tok_enc = HFImageEncoder(clip_dir, output="tokens", batch_size=256, device="cpu")
    patches = tok_enc.encode_images(images)[:, 1:]  # drop CLS: VEMP's patch tokens
    pooled = HFImageEncoder(clip_dir, output="pooled", batch_size=256, device="cpu").encode_images(images)
    print(f"image tokens {patches.shape}, pooled {pooled.shape} in {time.time() - t0:.0f} s", flush=True)

    tables = {
        "text_tokens": FeatureTable(torch.from_numpy(text), "text", token_mask=torch.from_numpy(mask),
                                    provenance=make_provenance("sentence-transformers/all-MiniLM-L6-v2",
                                                               output="tokens", text="entities.csv short_name",
                                                               max_length=32)),
        "image_tokens": FeatureTable(torch.from_numpy(np.ascontiguousarray(patches)), "image",
                                     provenance=make_provenance("small CLIP (random init, seed 0) on generated images",
                                                                output="patch tokens without CLS")),
        "image_pooled": FeatureTable(torch.from_numpy(pooled), "image",
                                     provenance=make_provenance("small CLIP (random init, seed 0) on generated images",
                                                                output="vision pooler")),
    }
    for key, table in tables.items():
        save_feature_table(table, out / f"{key}_vemp.safetensors")
        reordered = table.replace(values=table.values[perm], present=table.present[perm],
                                  token_mask=None if table.token_mask is None else table.token_mask[perm])
        save_feature_table(reordered, out / f"{key}_openke.safetensors")
    print(f"written to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/vemp_real_inputs.py DB15K_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
