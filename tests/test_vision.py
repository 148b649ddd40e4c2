"""Image encoders (a tiny CLIP / SigLIP / ViT built here from configs), entity image layouts, aggregation
and the image feature cache (hit, key sensitivity, resume after an injected failure)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no network attempt anywhere in this module
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from mmkgc.errors import ConfigError, DataFormatError, UnknownNameError  # noqa: E402
from mmkgc.features.cache import cached_image_features  # noqa: E402
from mmkgc.features.vision import (  # noqa: E402
    EntityImages,
    aggregate_images,
    build_image_encoder,
    find_entity_images,
    images_from_flat_folder,
    images_from_folders,
    images_from_table,
    load_image,
)
from model_builders import tiny_clip as _tiny_clip  # noqa: E402

LABELS = [
    "<http://dbpedia.org/resource/Alabama>",
    "<http://dbpedia.org/resource/Berlin>",
    "<http://dbpedia.org/resource/Cairo>",
    "<http://dbpedia.org/resource/Dover>",
    "http://www.wikidata.org/entity/Q42",
]



@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return _tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="module")
def encoder(clip_dir):
    return build_image_encoder(clip_dir, output="pooled", device="cpu", batch_size=3)


def _image(path: Path, seed: int, size=(40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _truncated(path: Path, seed: int) -> Path:
    _image(path, seed, size=(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 this is not a jpeg")
    return path


@pytest.fixture()
def folders(tmp_path) -> Path:
    """Alabama: 2 good + 1 corrupt; Berlin: 1 good + 1 truncated; Cairo: only a corrupt file; Dover: no
    folder; Q42: 1 good (folder named by the local name); plus an unknown folder and a non-image file."""
    root = tmp_path / "imgs"
    _image(root / "Alabama" / "a0.jpg", 1)
    _image(root / "Alabama" / "a1.png", 2)
    _corrupt(root / "Alabama" / "a2.jpg")
    _image(root / "Berlin" / "b0.jpg", 3)
    _truncated(root / "Berlin" / "b1.jpg", 4)
    _corrupt(root / "Cairo" / "c0.jpg")
    _image(root / "Q42" / "q.jpg", 5)
    _image(root / "Nowhere" / "n.jpg", 6)
    (root / "Alabama" / "notes.txt").write_text("not an image")
    return root


# ------------------------------------------------------------------------------------------------- encoder


def test_outputs_match_the_transformers_model(clip_dir, encoder):
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPImageProcessor.from_pretrained(clip_dir)
    imgs = [Image.open(_image(clip_dir.parent / f"ref{i}.png", 10 + i)).convert("RGB") for i in range(4)]
    with torch.no_grad():
        pixels = proc(images=imgs, return_tensors="pt")["pixel_values"]
        vis = model.vision_model(pixel_values=pixels)
        ref_pooled = vis.pooler_output.numpy()
        ref_proj = model.visual_projection(vis.pooler_output).numpy()
        ref_tokens = vis.last_hidden_state.numpy()

    assert encoder.token_shape == (16,) and encoder.dim == 16
    np.testing.assert_allclose(encoder.encode_images(imgs), ref_pooled, rtol=1e-4, atol=1e-5)
    proj = build_image_encoder(clip_dir, output="projected", device="cpu", batch_size=2)
    assert proj.token_shape == (8,)
    np.testing.assert_allclose(proj.encode_images(imgs), ref_proj, rtol=1e-4, atol=1e-5)
    tok = build_image_encoder(clip_dir, output="tokens", device="cpu", normalize=True)
    assert tok.token_shape == (17, 16)  # [CLS] + 4 x 4 patches
    expect = ref_tokens / np.linalg.norm(ref_tokens, axis=-1, keepdims=True)
    np.testing.assert_allclose(tok.encode_images(imgs), expect, rtol=1e-4, atol=1e-5)

    ident = encoder.identity
    assert ident["architecture"] == "CLIPVisionModel" and ident["output"] == "pooled" and ident["source"] == "local"
    assert len(ident["fingerprint"]) == 64 and proj.identity["fingerprint"] == ident["fingerprint"]
    assert encoder.encode_images([]).shape == (0, 16)


def test_siglip_and_vit_towers(tmp_path):
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel, ViTConfig, ViTImageProcessor, ViTModel

    small = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                 patch_size=8)
    SiglipVisionModel(SiglipVisionConfig(**small)).save_pretrained(tmp_path / "siglip")
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "siglip")
    ViTModel(ViTConfig(**small)).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    img = [Image.open(_image(tmp_path / "x.png", 0)).convert("RGB")]
    sig = build_image_encoder(tmp_path / "siglip", device="cpu")
    assert sig.identity["architecture"] == "SiglipVisionModel" and sig.encode_images(img).shape == (1, 16)
    assert build_image_encoder(tmp_path / "siglip", output="tokens", device="cpu").token_shape == (16, 16)
    with pytest.raises(ConfigError, match="no image projection"):
        build_image_encoder(tmp_path / "siglip", output="projected", device="cpu")
    vit = build_image_encoder(tmp_path / "vit", device="cpu")
    assert vit.identity["architecture"] == "ViTModel" and vit.encode_images(img).shape == (1, 16)


def test_encoder_errors(tmp_path, clip_dir):
    from transformers import BertConfig

    with pytest.raises(UnknownNameError, match="image model .*does not exist"):
        build_image_encoder(tmp_path / "missing-model")
    with pytest.raises(UnknownNameError, match="Hugging Face cache"):
        build_image_encoder("some-org/not-a-cached-vision-model-9q")
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match="architecture 'bert'"):
        build_image_encoder(tmp_path / "bert")
    no_proc = tmp_path / "no-proc"
    no_proc.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_proc / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(ConfigError, match="image processor"):
        build_image_encoder(no_proc)
    with pytest.raises(ConfigError, match="output"):
        build_image_encoder(clip_dir, output="logits")
    with pytest.raises(UnknownNameError, match="unknown image encoder option"):
        build_image_encoder(clip_dir, pooling="cls")


def test_load_image_reports_bad_files(tmp_path):
    good, reason = load_image(_image(tmp_path / "g.jpg", 0))
    assert reason is None and good.mode == "RGB" and good.size == (40, 30)
    for path in (_corrupt(tmp_path / "c.jpg"), _truncated(tmp_path / "t.jpg", 1), tmp_path / "absent.jpg"):
        img, reason = load_image(path)
        assert img is None and reason


# ------------------------------------------------------------------------------------------------- layouts


def test_folder_layout(folders):
    found = images_from_folders(folders, LABELS)
    assert [len(p) for p in found.paths] == [3, 2, 1, 0, 1]
    assert [p.name for p in found.paths[0]] == ["a0.jpg", "a1.png", "a2.jpg"]
    assert found.report["unknown_keys"] == 1 and found.report["unknown_examples"] == ["Nowhere"]
    assert found.report["entities_with_images"] == 4 and found.report["ignored_files"] == 1
    assert find_entity_images(folders, LABELS).layout == "folders"
    # an explicit map links another namespace; full percent-encoded names match too
    mapped = images_from_folders(folders, LABELS, name_map={"Nowhere": LABELS[3]})
    assert [p.name for p in mapped.paths[3]] == ["n.jpg"] and mapped.report["unknown_keys"] == 0
    with pytest.raises(DataFormatError, match="not found"):
        images_from_folders(folders / "nope", LABELS)


def test_flat_layout_sorts_by_index_and_keys_may_contain_underscores(tmp_path):
    root = tmp_path / "flat"
    for name, seed in (("Q42_10.jpg", 1), ("Q42_2.jpg", 2), ("Q42_0.jpg", 3), ("New_York_0.jpg", 4),
                       ("Q99_0.jpg", 5), ("readme.md", 6), ("Q42.jpg", 7)):
        if name.endswith(".jpg"):
            _image(root / name, seed)
        else:
            (root / name).write_text("x")
    labels = LABELS + ["<http://dbpedia.org/resource/New_York>"]
    found = find_entity_images(root, labels)
    assert found.layout == "flat"
    assert [p.name for p in found.paths[4]] == ["Q42_0.jpg", "Q42_2.jpg", "Q42_10.jpg"]
    assert [p.name for p in found.paths[5]] == ["New_York_0.jpg"]
    assert found.report["unknown_keys"] == 1 and found.report["ignored_files"] == 2
    assert images_from_flat_folder(root, labels, {"Q99": LABELS[0]}).paths[0][0].name == "Q99_0.jpg"


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_layout(folders, tmp_path, suffix):
    import pandas as pd

    df = pd.DataFrame({
        "entity": [LABELS[0], LABELS[0], "http://dbpedia.org/resource/Berlin", "Unknown", LABELS[2], LABELS[3]],
        "image_path": ["imgs/Alabama/a1.png", str(folders / "Alabama" / "a0.jpg"), "imgs/Berlin/b0.jpg",
                       "imgs/x.jpg", "", "http://example.org/d.jpg"],
    })
    path = tmp_path / f"images{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    found = find_entity_images(path, LABELS)
    assert found.layout == "table"
    assert found.paths[0] == (tmp_path / "imgs/Alabama/a1.png", folders / "Alabama" / "a0.jpg")
    assert found.paths[1] == (tmp_path / "imgs/Berlin/b0.jpg",)
    assert found.paths[2] == () and found.paths[3] == ()
    assert found.report["unknown_keys"] == 1 and found.report["empty_paths"] == 1 and found.report["url_paths"] == 1
    with pytest.raises(DataFormatError, match="no column 'name'"):
        images_from_table(path, LABELS, key_column="name")


def test_table_without_path_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("entity,thumbnail_url\nA,http://x/y.jpg\n")
    with pytest.raises(DataFormatError, match=r"t\.csv:1: no image path column"):
        images_from_table(path, LABELS)
    assert images_from_table(path, LABELS, path_column="thumbnail_url").report["url_paths"] == 1


# --------------------------------------------------------------------------------------------- aggregation


def test_aggregate_images():
    f = np.arange(12, dtype=np.float32).reshape(3, 4)
    row, mask = aggregate_images(f, "mean", (4,))
    np.testing.assert_allclose(row, f.mean(0)) and mask is None
    assert np.array_equal(aggregate_images(f, "max", (4,))[0], f[2])
    assert np.array_equal(aggregate_images(f, "first", (4,))[0], f[0])
    row, mask = aggregate_images(f[:2], "set", (3, 4))
    assert np.array_equal(row[:2], f[:2]) and not row[2].any() and mask.tolist() == [True, True, False]
    tokens = np.arange(24, dtype=np.float32).reshape(2, 3, 4)  # 2 images x 3 tokens
    row, mask = aggregate_images(tokens, "set", (6, 4))
    assert np.array_equal(row, tokens.reshape(6, 4)) and mask.all()
    row, mask = aggregate_images(tokens, "mean", (3, 4))
    np.testing.assert_allclose(row, tokens.mean(0)) and mask.all()
    with pytest.raises(ConfigError, match="aggregation"):
        aggregate_images(f, "median", (4,))


class Counting:
    """Wraps an image encoder; counts images and calls; can fail after ``fail_after`` calls."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.calls, self.images = inner, fail_after, 0, 0

    token_shape = property(lambda self: self.inner.token_shape)
    identity = property(lambda self: self.inner.identity)
    dim = property(lambda self: self.inner.dim)

    def encode_images(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("injected failure")
        self.calls += 1
        self.images += len(images)
        return self.inner.encode_images(images)


def _single(encoder, path):
    return encoder.encode_images([load_image(path)[0]])[0]


def test_cached_image_features_skip_bad_images_and_aggregate(folders, encoder, tmp_path, caplog):
    found = images_from_folders(folders, LABELS)
    enc = Counting(encoder)
    with caplog.at_level("WARNING"):
        t = cached_image_features("toy", found, enc, cache_dir=tmp_path / "c", aggregate="mean", chunk_size=2)
    assert "skipped 3 unreadable" in caplog.text
    assert t.values.shape == (5, 16) and t.modality == "image"
    assert t.present.tolist() == [True, True, False, False, True]  # Cairo: only a corrupt file; Dover: none
    assert not t.values[2:4].any()
    a0, a1 = _single(encoder, folders / "Alabama/a0.jpg"), _single(encoder, folders / "Alabama/a1.png")
    np.testing.assert_allclose(t.values[0].numpy(), (a0 + a1) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t.values[1].numpy(), _single(encoder, folders / "Berlin/b0.jpg"), rtol=1e-5, atol=1e-6)
    counts = t.provenance["options"]["image_counts"]
    assert counts == {"entities_with_images": 4, "entities_present": 3, "images_read": 4, "images_unreadable": 3}
    assert enc.images == 4

    first = cached_image_features("toy", found, encoder, cache_dir=tmp_path / "c", aggregate="first")
    np.testing.assert_allclose(first.values[0].numpy(), a0, rtol=1e-5, atol=1e-6)
    mx = cached_image_features("toy", found, encoder, cache_dir=tmp_path / "c", aggregate="max")
    np.testing.assert_allclose(mx.values[0].numpy(), np.maximum(a0, a1), rtol=1e-5, atol=1e-6)
    one = cached_image_features("toy", found, encoder, cache_dir=tmp_path / "c", max_images=1)
    np.testing.assert_allclose(one.values[0].numpy(), a0, rtol=1e-5, atol=1e-6)

    s = cached_image_features("toy", found, encoder, cache_dir=tmp_path / "c", aggregate="set", max_images=2)
    assert s.values.shape == (5, 2, 16) and s.is_tokens
    assert s.token_mask.tolist() == [[True, True], [True, False], [False, False], [False, False], [True, False]]
    np.testing.assert_allclose(s.values[0].numpy(), np.stack([a0, a1]), rtol=1e-5, atol=1e-6)
    assert s.pooled("mean").values.shape == (5, 16)


def test_token_outputs_as_sets(folders, clip_dir, tmp_path):
    tok = build_image_encoder(clip_dir, output="tokens", device="cpu")
    found = images_from_folders(folders, LABELS)
    t = cached_image_features("toy", found, tok, cache_dir=tmp_path, aggregate="set")
    assert t.values.shape == (5, 3 * 17, 16)  # up to 3 listed images x ([CLS] + 16 patches)
    assert t.token_mask.sum(1).tolist() == [34, 17, 0, 0, 17]
    m = cached_image_features("toy", found, tok, cache_dir=tmp_path, aggregate="first")
    assert m.values.shape == (5, 17, 16) and m.token_mask[0].all()


def test_cache_hit_and_key_sensitivity(folders, encoder, tmp_path):
    found = images_from_folders(folders, LABELS)
    cached_image_features("toy", found, encoder, cache_dir=tmp_path)
    again = Counting(encoder)
    t = cached_image_features("toy", images_from_folders(folders, LABELS), again, cache_dir=tmp_path)
    assert again.calls == 0 and t.num_present == 3
    files = sorted((tmp_path / "features" / "toy").glob("image-*.safetensors"))
    assert len(files) == 1
    # replacing an image (new size/mtime) or changing the aggregation gives a new entry
    _image(folders / "Berlin" / "b0.jpg", 99, size=(41, 30))
    changed = Counting(encoder)
    cached_image_features("toy", images_from_folders(folders, LABELS), changed, cache_dir=tmp_path)
    assert changed.calls > 0
    cached_image_features("toy", images_from_folders(folders, LABELS), encoder, cache_dir=tmp_path, aggregate="max")
    assert len(list((tmp_path / "features" / "toy").glob("image-*.safetensors"))) == 3
    with pytest.raises(ConfigError, match="max_images"):
        cached_image_features("toy", found, encoder, cache_dir=tmp_path, max_images=0)


def test_resume_after_injected_failure(folders, encoder, tmp_path):
    found = images_from_folders(folders, LABELS)
    failing = Counting(encoder, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        cached_image_features("toy", found, failing, cache_dir=tmp_path, shard_size=2, chunk_size=1)
    (partial,) = [p for p in (tmp_path / "features" / "toy").iterdir() if p.name.endswith(".partial")]
    assert sorted(p.name for p in partial.iterdir()) == []  # the first shard (Alabama, Berlin) never finished
    failing = Counting(encoder, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        cached_image_features("toy", found, failing, cache_dir=tmp_path, shard_size=2, chunk_size=1)
    assert sorted(p.name for p in partial.iterdir()) == ["shard-00000.safetensors"]
    assert not list((tmp_path / "features" / "toy").glob("*.safetensors"))

    resumed = Counting(encoder)
    t = cached_image_features("toy", found, resumed, cache_dir=tmp_path, shard_size=2, chunk_size=1)
    assert resumed.images == 1  # only Q42's image: shard 0 was reused, Cairo has no readable image
    fresh = cached_image_features("toy-fresh", found, encoder, cache_dir=tmp_path)
    assert torch.equal(t.values, fresh.values) and torch.equal(t.present, fresh.present)
    assert t.provenance["options"]["image_counts"] == fresh.provenance["options"]["image_counts"]
    assert not partial.exists()


def test_entity_images_identity_covers_files(tmp_path):
    p = _image(tmp_path / "a.jpg", 0)
    ims = EntityImages([(p,), ()], "flat", tmp_path)
    before = ims.identity()
    assert before == EntityImages([(p,), ()], "flat", tmp_path).identity()
    os.utime(p, ns=(1, 1))
    assert ims.identity()["sha256"] != before["sha256"]
    assert EntityImages([(), (p,)], "flat", tmp_path).identity()["sha256"] != ims.identity()["sha256"]
