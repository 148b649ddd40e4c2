"""Tiny Hugging Face models built from configs for offline tests (shared by several test files)."""

from pathlib import Path

import torch


def tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A small CLIP (16-wide, one layer, 32x32 images in 8x8 patches) with its image processor, saved to
    ``directory`` so tests load it through the same path users take."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory
