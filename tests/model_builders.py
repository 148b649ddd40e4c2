"""Tiny Hugging Face models built from configs for offline tests (shared by several test files)."""

from __future__ import annotations

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


# ------------------------------------------------------------------ enrichment (captioning and fusion) models

#: Words of the test vocabulary; tiny generators emit these, so decoded captions are readable word lists.
TINY_WORDS = (
    "a photo of the red blue green small large dog cat car house tree person city river building sky with "
    "and in on near black white old new man woman street field flag map logo"
).split()


def tiny_word_tokenizer(directory: Path, bert_style: bool = False):
    """A word-level fast tokenizer over :data:`TINY_WORDS` built with the ``tokenizers`` library and saved to
    ``directory``.  ``bert_style`` adds ``[CLS] ... [SEP]`` special tokens (what BLIP's processor expects);
    otherwise it is a T5/GPT-like ``<pad> </s> <unk>`` vocabulary whose ``</s>`` ends every sequence."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if bert_style:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    else:
        specials = ["<pad>", "</s>", "<unk>", "<s>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(TINY_WORDS))}
    unk = specials[1] if bert_style else "<unk>"
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       bos_token="[CLS]", eos_token="[SEP]", model_max_length=64)
    else:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                       bos_token="<s>", model_max_length=256)
    fast.save_pretrained(directory)
    return fast


def tiny_blip(directory: Path, seed: int = 0) -> Path:
    """A small BLIP captioner (``BlipForConditionalGeneration``: 16-wide ViT on 32x32 images, one-layer text
    decoder) with a ``BlipProcessor`` over :func:`tiny_word_tokenizer`, saved to ``directory``."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = tiny_word_tokenizer(directory, bert_style=True)
    vocab = len(tokenizer)
    cfg = BlipConfig(
        text_config=dict(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=16,
                         bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                         eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(directory)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def tiny_t5(directory: Path, seed: int = 0) -> Path:
    """A small Flan-T5-style seq2seq summariser (``T5ForConditionalGeneration``, d_model 16, one layer each
    side) with :func:`tiny_word_tokenizer`, saved to ``directory``."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_word_tokenizer(directory)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1,
                   num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    T5ForConditionalGeneration(cfg).eval().save_pretrained(directory)
    return directory


def tiny_causal_lm(directory: Path, seed: int = 0, chat_template: bool = True, context: int | None = None) -> Path:
    """A small Llama-style causal chat model (one layer, hidden 16) with :func:`tiny_word_tokenizer` and, when
    ``chat_template``, a Jinja chat template with system/user/assistant turns, saved to ``directory``.
    ``context`` sets both the model's ``max_position_embeddings`` and the tokenizer's ``model_max_length``
    (default 512 and 256)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_word_tokenizer(directory)
    if context is not None:
        tokenizer.model_max_length = context
        tokenizer.save_pretrained(directory)
    if chat_template:
        tokenizer.chat_template = (
            "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s>{% endfor %}"
            "{% if add_generation_prompt %}<s> assistant{% endif %}"
        )
        tokenizer.save_pretrained(directory)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=context or 512,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).eval().save_pretrained(directory)
    return directory


def tiny_git(directory: Path, seed: int = 0) -> Path:
    """A small GIT captioner (``GitForCausalLM``: 16-wide CLIP-style vision tower on 32x32 images, one-layer
    decoder) with a ``GitProcessor`` over :func:`tiny_word_tokenizer`, saved to ``directory``."""
    from transformers import CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    tokenizer = tiny_word_tokenizer(directory, bert_style=True)
    cfg = GitConfig(
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    GitForCausalLM(cfg).eval().save_pretrained(directory)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    GitProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def tiny_llava(directory: Path, seed: int = 0) -> Path:
    """A small LLaVA-style chat captioner (``LlavaForConditionalGeneration``: 16-wide CLIP vision tower on 32x32
    images, one-layer Llama) with a ``LlavaProcessor`` whose chat template writes ``USER: <image> ... ASSISTANT:``
    (LLaVA-1.5's format), over a word-level tokenizer with an ``<image>`` token, saved to ``directory``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)

    specials = ["<pad>", "</s>", "<unk>", "<s>", "<image>", "USER:", "ASSISTANT:"]
    vocab = {tok: i for i, tok in enumerate(specials + list(TINY_WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        bos_token="<s>", extra_special_tokens={"image_token": "<image>"})
    cfg = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                           num_attention_heads=2, image_size=32, patch_size=8, projection_dim=8),
        text_config=dict(model_type="llama", vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3),
        image_token_index=vocab["<image>"], vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(cfg).eval().save_pretrained(directory)
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endif %}"
                "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
                   num_additional_image_tokens=1).save_pretrained(directory)
    return directory
