"""Beyond Images enrichment: journals, captioning with resume after an injected crash, cleaning, LLM fusion
(seq2seq and chat), released-layout import/alignment/encoding, the audit page (headless Chromium) and the
``mmkgc enrich`` CLI -- all offline, with tiny models built from configs and images made with Pillow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from mmkgc.errors import ConfigError, DataFormatError  # noqa: E402
from mmkgc.features.enrich.caption import CaptionSettings, Captioner, caption_images, read_captions  # noqa: E402
from mmkgc.features.enrich.clean import CleaningRules, merge_descriptions  # noqa: E402
from mmkgc.features.enrich.encode import (  # noqa: E402
    EnrichedEntity,
    align_enrichment,
    encode_texts,
    read_enrichment_files,
    read_enrichment_json,
    write_enrichment_json,
)
from mmkgc.features.enrich.fuse import FusionSettings, LLMFuser, fuse_entities, read_summaries  # noqa: E402
from mmkgc.features.enrich.journal import Journal, read_journal  # noqa: E402
from mmkgc.features.vision import find_entity_images  # noqa: E402
from model_builders import tiny_blip, tiny_causal_lm, tiny_git, tiny_llava, tiny_t5  # noqa: E402

LABELS = ["<http://dbpedia.org/resource/Alabama>", "<http://dbpedia.org/resource/Berlin>",
          "<http://dbpedia.org/resource/Cairo>", "<http://dbpedia.org/resource/Dover>"]
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 20), (20, 220, 220), (120, 60, 200)]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"blip": tiny_blip(root / "blip"), "git": tiny_git(root / "git"), "llava": tiny_llava(root / "llava"),
            "t5": tiny_t5(root / "t5"),
            "lm": tiny_causal_lm(root / "lm")}


def _images(root: Path, per_entity: int = 3, corrupt: bool = True) -> Path:
    """Flat layout ``<local name>_<k>.png``: gradients of different colours; one corrupt file for Cairo."""
    root.mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(LABELS[:3]):
        name = label.rsplit("/", 1)[1].rstrip(">")
        for k in range(per_entity):
            arr = np.zeros((24 + 4 * k, 32, 3), dtype=np.uint8)
            arr[:] = COLOURS[(i + k) % len(COLOURS)]
            arr[:, : 8 + 4 * k] = 255 - arr[:, : 8 + 4 * k]
            Image.fromarray(arr).save(root / f"{name}_{k}.png")
    if corrupt:
        (root / "Cairo_9.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root


# ------------------------------------------------------------------------------------------------ journal


def test_journal_resume_tolerates_truncated_tail_and_rejects_corruption(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path, key="image", header={"model": "m1"})
    j.append({"image": "a.jpg", "caption": "one"})
    j.append({"image": "b.jpg", "caption": "two"})
    with open(path, "a", encoding="utf-8") as fh:  # a crash in the middle of a write
        fh.write('{"image": "c.jpg", "capt')
    j2 = Journal(path, key="image", header={"model": "m1"})
    assert sorted(j2.records()) == ["a.jpg", "b.jpg"] and j2.header == {"model": "m1"}
    j2.append({"image": "c.jpg", "caption": "three"})
    assert [r["image"] for r in read_journal(path, "image")] == ["__header__", "a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(DataFormatError, match="differing: model"):
        Journal(path, key="image", header={"model": "m2"})
    lines = path.read_text().splitlines()
    lines[2] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"j\.jsonl:3: not a JSON line"):
        Journal(path, key="image")


# ------------------------------------------------------------------------------------------------ cleaning


def test_cleaning_rules_order_dedupe_filters_cap_and_source_priority():
    items = [
        ("Q1_10.jpg", "a dog on a red field", "original"),
        ("Q1_2.jpg", "a  large white  house", "original"),
        ("Q1_1.jpg", "a dog", "new"),                                          # too short
        ("Q1_3.jpg", "A large white house", "new"),                             # duplicate (case, spaces)
        ("Q1_4.jpg", "dog dog dog dog dog dog cat", "new"),                      # repetitive: 2 unique of 7
        ("Q1_5.jpg", "a map of the old city", "new"),
        ("Q1_6.jpg", "a flag with blue sky", "new"),                            # over the cap
    ]
    m = merge_descriptions(items, CleaningRules(max_per_entity=3))
    assert m.descriptions == ["a large white house", "a dog on a red field", "a map of the old city"]
    assert m.sources == ["original", "original", "new"]
    assert m.dropped == {"too_short": 1, "duplicate": 1, "repetitive": 1, "cap": 1}
    assert list(m.images)[:2] == ["Q1_2.jpg", "Q1_10.jpg"]  # natural order inside a source
    assert m.merged_text == "a large white house a dog on a red field a map of the old city"
    with pytest.raises(ConfigError, match="source_order"):
        merge_descriptions([("x", "a b c", "web")])
    with pytest.raises(ConfigError):
        CleaningRules(unique_ratio=1.5)


# ------------------------------------------------------------------------------------------------ captioning


class _CrashAfter:
    """Delegates to a real captioner and raises after ``k`` captioned images (an injected crash)."""

    def __init__(self, inner, k):
        self.inner, self.k, self.count = inner, k, 0
        self.settings, self.identity = inner.settings, inner.identity

    def caption(self, images):
        if self.count + len(images) > self.k:
            raise KeyboardInterrupt("injected crash")
        self.count += len(images)
        return self.inner.caption(images)


def test_caption_resume_after_crash_loses_and_duplicates_nothing(tmp_path, models):
    folder = _images(tmp_path / "img")
    coll = find_entity_images(folder, LABELS)
    captioner = Captioner(models["blip"], CaptionSettings(prompt="a photo of", max_new_tokens=6, batch_size=2))
    reference = tmp_path / "ref.jsonl"
    full = caption_images(coll, LABELS, captioner, reference)
    assert (full.images, full.captioned, full.skipped, full.entities) == (10, 9, 1, 3)
    assert "Cairo_9.png" in full.skipped_examples[0]

    crashed = tmp_path / "crash.jsonl"
    with pytest.raises(KeyboardInterrupt):
        caption_images(coll, LABELS, _CrashAfter(captioner, 4), crashed)
    partial = [r["image"] for r in read_journal(crashed, "image")][1:]
    assert 4 <= len(partial) < 10  # the finished batches (and the skipped file) are on disk
    again = caption_images(coll, LABELS, captioner, crashed)
    newly_skipped = 0 if "Cairo_9.png" in partial else 1
    assert again.resumed == len(partial) and again.captioned + again.resumed + newly_skipped == 10
    assert again.skipped == 1
    keys = [r["image"] for r in read_journal(crashed, "image")][1:]
    assert len(keys) == len(set(keys)) == 10  # nothing lost, nothing twice
    got = {r["image"]: r["caption"] for r in Journal(crashed, key="image")}
    want = {r["image"]: r["caption"] for r in Journal(reference, key="image")}
    assert got == want  # deterministic decoding: the resumed run equals the uninterrupted one
    caps = read_captions(crashed)
    assert [k for k, _, _ in caps[LABELS[0]]] == ["Alabama_0.png", "Alabama_1.png", "Alabama_2.png"]
    assert all(c and not c.lower().startswith("a photo of") for items in caps.values() for _, c, _ in items)
    # a resumed run with another prompt must not mix outputs
    other = Captioner(models["blip"], CaptionSettings(prompt="a map of", max_new_tokens=6))
    with pytest.raises(DataFormatError, match="other settings"):
        caption_images(coll, LABELS, other, crashed)


@pytest.mark.parametrize("family", ["blip", "git", "llava"])
def test_captioner_families_prompts_and_batching(models, family):
    imgs = [Image.fromarray(np.full((30, 40, 3), c, dtype=np.uint8)) for c in COLOURS[:3]]
    plain = Captioner(models[family], CaptionSettings(prompt=None, max_new_tokens=6))
    assert plain.model_type == family and (plain.text is None) == (family != "llava")
    one_by_one = [plain.caption([im])[0] for im in imgs]
    assert plain.caption(imgs) == one_by_one  # batching does not change captions
    assert all(isinstance(c, str) and c for c in one_by_one)
    prompted = Captioner(models[family], CaptionSettings(prompt="a photo of", max_new_tokens=6))
    assert not any(c.lower().startswith("a photo of") for c in prompted.caption(imgs))  # echoed prompt removed
    if family == "llava":  # the processor's chat template wraps the prompt; only new tokens are decoded
        assert prompted.text == "USER: <image> a photo of ASSISTANT:"
        assert not any(c.startswith("USER: a photo of") for c in prompted.caption(imgs))
    if family != "llava":
        chat = Captioner(models[family], CaptionSettings(prompt="a photo of", prompt_template="the {prompt}"))
        assert chat.text == "the a photo of" and chat.identity["prompt_text"] == "the a photo of"


def test_caption_settings_validate():
    with pytest.raises(ConfigError, match="prompt_template"):
        CaptionSettings(prompt="x", prompt_template="USER: <image>")
    with pytest.raises(ConfigError, match="dtype"):
        CaptionSettings(dtype="int3")


# ------------------------------------------------------------------------------------------------ fusion


@pytest.mark.parametrize("kind", ["t5", "lm"])
def test_fusion_keeps_whole_descriptions_and_resumes(tmp_path, models, kind):
    fuser = LLMFuser(models[kind], FusionSettings(max_input_tokens=1000, max_new_tokens=5,
                                                  num_beams=2 if kind == "t5" else 1))
    assert fuser.seq2seq == (kind == "t5")
    descs = ["a red dog near the river", "a small house in the city", "an old man with a flag",
             "a map of the street", "the blue sky and a tree"]
    budget = fuser._num_tokens(fuser.prompt("Alabama", descs[:3])) + 2  # room for 3 descriptions, not 4
    fuser.settings.max_input_tokens = budget
    prompt, used, cut = fuser.fit("Alabama", descs)
    assert used == 3 and not cut
    for d in descs[:used]:
        assert d in prompt  # whole descriptions only
    for d in descs[used:]:
        assert d not in prompt
    assert fuser._num_tokens(prompt) <= budget
    if kind == "lm":
        assert prompt.startswith("<s> system") and prompt.endswith("<s> assistant")
    long_one = ["a " + "red dog " * 40]
    prompt, used, cut = fuser.fit("Alabama", long_one)
    assert used == 1 and cut and fuser._num_tokens(prompt) <= budget and "red dog red dog" in prompt

    data = {LABELS[0]: descs, LABELS[1]: descs[::-1], LABELS[2]: [], LABELS[3]: descs[:2]}
    ref = fuse_entities(data, fuser, tmp_path / "ref.jsonl")
    assert ref["fused"] == 3 and ref["without_descriptions"] == 1

    class Crash:
        identity = fuser.identity

        def __init__(self):
            self.n = 0

        def summarise(self, entity, d):
            self.n += 1
            if self.n == 2:
                raise RuntimeError("injected crash")
            return fuser.summarise(entity, d)

    with pytest.raises(RuntimeError):
        fuse_entities(data, Crash(), tmp_path / "run.jsonl")
    rep = fuse_entities(data, fuser, tmp_path / "run.jsonl")
    assert rep["resumed"] == 1 and rep["fused"] == 2
    keys = [r["entity"] for r in read_journal(tmp_path / "run.jsonl", "entity")][1:]
    assert sorted(keys) == sorted([LABELS[0], LABELS[1], LABELS[3]]) and len(keys) == 3
    s1, s2 = read_summaries(tmp_path / "ref.jsonl"), read_summaries(tmp_path / "run.jsonl")
    assert {k: v for k, v in s1.items()} == {k: v for k, v in s2.items()}


# The paper's prompts, copied here from pengyu-zhang/Beyond-Images at commit daad1f8584ccb35a0b395332129b2d8ed58c4194:
# configs/paper.yaml (captioning.prompt, fusion.max_new_tokens) and src/beyond_images/fusion/fusers.py
# (CHAT_SYSTEM_PROMPT; CausalFuser.fuse's user message; PAPER_PROMPT + Seq2SeqFuser.fuse's list and answer cue).
REF_CAPTION_PROMPT = "Describe the scene, objects, colors, and other details in detail."
REF_CHAT_SYSTEM = ("You are an expert in summarizing and synthesizing information. Your task is to integrate a list "
                   "of visual descriptions about an entity into a single, rich, and detailed paragraph. Capture as "
                   "many key details as possible and ensure the final output is a coherent paragraph, not a list.")
REF_CHAT_USER = "Please synthesize the following descriptions for the entity 'Alabama':\n\na red dog\na small house"
REF_SEQ2SEQ = ("Your task is to integrate the following list of visual descriptions for the entity 'Alabama' into a "
               "rich, detailed, and coherent summary paragraph. Capture as many key details as possible, such as "
               "objects, colors, actions, and settings. Your final output must be a single paragraph, not a list."
               "\n\nList of descriptions to summarize:\na red dog\na small house\n\nDetailed Summary Paragraph:")


def test_default_prompts_and_lengths_are_the_papers(models):
    from mmkgc.cli.enrich import _FUSION_MAX_NEW_TOKENS
    from mmkgc.features.enrich.fuse import PAPER_MAX_NEW_TOKENS

    assert CaptionSettings().prompt == REF_CAPTION_PROMPT and CaptionSettings().max_new_tokens == 100
    assert CaptionSettings(prompt="").prompt is None  # '' = unprompted (GIT-coco)
    s = FusionSettings()
    assert s.system_prompt == REF_CHAT_SYSTEM and s.max_new_tokens == 512 == PAPER_MAX_NEW_TOKENS
    assert _FUSION_MAX_NEW_TOKENS == PAPER_MAX_NEW_TOKENS and s.num_beams == 1 and s.max_input_tokens is None
    two = ["a red dog", "a small house"]
    assert s.user_template.format(entity="Alabama", descriptions="\n".join(two)) == REF_CHAT_USER
    t5 = LLMFuser(models["t5"], FusionSettings(max_new_tokens=5))
    assert t5.prompt("Alabama", two) == REF_SEQ2SEQ and t5.input_budget == 1024  # the paper's Flan-T5 truncation
    lm = LLMFuser(models["lm"], FusionSettings(max_new_tokens=6))
    assert lm.prompt("Alabama", two) == (f"<s> system {REF_CHAT_SYSTEM} </s><s> user {REF_CHAT_USER} </s>"
                                         "<s> assistant")


def test_cli_sets_fusion_prompts_and_defaults_to_the_papers(tmp_path, monkeypatch):
    import mmkgc.features.enrich.fuse as fuse_module
    import mmkgc.features.enrich.stages as stages

    seen = []
    monkeypatch.setattr(fuse_module, "LLMFuser", lambda model, settings, device=None: seen.append(settings))
    monkeypatch.setattr(stages, "run_fuse", lambda wd, fuser, progress=None: {"fused": 0})
    (tmp_path / "descriptions.json").write_text("{}")
    _invoke("fuse", "--workdir", str(tmp_path), "--model", "m")
    _invoke("fuse", "--workdir", str(tmp_path), "--model", "m", "--fusion-system-prompt", "S",
            "--fusion-prompt", "U {entity}: {descriptions}", "--seq2seq-prompt", "Q {entity} {descriptions}",
            "--max-input-tokens", "77", "--max-new-tokens", "9")
    default, custom = seen
    assert (default.system_prompt, default.max_new_tokens, default.max_input_tokens) == (REF_CHAT_SYSTEM, 512, None)
    assert default.user_template.format(entity="Alabama", descriptions="a red dog\na small house") == REF_CHAT_USER
    assert (custom.system_prompt, custom.user_template, custom.seq2seq_template) == (
        "S", "U {entity}: {descriptions}", "Q {entity} {descriptions}")
    assert (custom.max_input_tokens, custom.max_new_tokens) == (77, 9)


def test_chat_models_get_every_description_up_to_their_context(tmp_path):
    from model_builders import tiny_causal_lm

    fuser = LLMFuser(tiny_causal_lm(tmp_path / "lm4k", context=4096), FusionSettings(max_new_tokens=4))
    assert fuser.context_length == 4096 and fuser.input_budget == 4092
    descs = [f"a red dog number {i} near the old river with a small house and a tree" for i in range(100)]
    prompt, used, cut = fuser.fit("Alabama", descs)
    tokens = fuser._num_tokens(prompt)
    assert used == 100 and not cut and 1024 < tokens <= 4092  # longer than the old 1,024-token cut
    summary, info = fuser.summarise("Alabama", descs)
    assert info["used"] == info["total"] == 100 and info["input_tokens"] == tokens
    # beyond the context (minus the summary's room) whole descriptions are dropped, never a cut mid-text
    prompt, used, cut = fuser.fit("Alabama", descs * 4)
    assert 100 < used < 400 and not cut and fuser._num_tokens(prompt) <= 4092
    with pytest.raises(ConfigError, match="context"):
        _ = LLMFuser(tmp_path / "lm4k", FusionSettings(max_new_tokens=4096)).input_budget
    # an explicit budget still applies to chat models
    assert LLMFuser(tmp_path / "lm4k", FusionSettings(max_input_tokens=300, max_new_tokens=4)).fit(
        "Alabama", descs)[1] < 100


# ------------------------------------------------------------------------------------------------ import / encode


def _released(tmp_path: Path) -> list[Path]:
    original = {
        "Alabama": {"entity_name": "Alabama", "entity_qid": "Q173", "dbpedia_url": "http://dbpedia.org/resource/Alabama",
                    "wikidata_url": "http://www.wikidata.org/entity/Q173",
                    "images": {"Q173_0.jpg": {"image_description_detail": "a red flag with a white cross"},
                               "images_t5_descriptions": "Alabama is shown by its flag."},
                    "merged_descriptions": "a red flag with a white cross"},
        "Berlin": {"entity_name": "Berlin", "entity_qid": "Q64", "dbpedia_url": "", "wikidata_url": "",
                   "images": {"Q64_0.jpg": {"image_blip2_detail": "a city skyline"}},
                   "merged_descriptions": "a city skyline"},
        "Nowhere": {"entity_name": "Nowhere", "images": {}, "merged_descriptions": "nothing"},
    }
    new = {"Berlin": {"entity_name": "Berlin", "images": {"Q64_1.jpg": {"image_description_detail": "a tower"}},
                      "merged_descriptions": "a tower"},
           "Q99": {"entity_name": "Dover", "entity_qid": "Q99", "images": {"Q99_1.jpg": {"image_description_detail": "white cliffs"}},
                   "merged_descriptions": ""}}
    paths = [tmp_path / "DB_img_original_summary_blip.json", tmp_path / "DB_img_new_summary_blip.json"]
    paths[0].write_text(json.dumps(original))
    paths[1].write_text(json.dumps(new))
    return paths


def test_released_layout_import_alignment_and_coverage(tmp_path):
    paths = _released(tmp_path)
    entries = read_enrichment_files(paths)
    assert entries["Berlin"].merged_descriptions == "a city skyline a tower"
    assert list(entries["Berlin"].images) == ["Q64_0.jpg", "Q64_1.jpg"]
    name_map = {"Q99": LABELS[3]}
    aligned = align_enrichment(entries, LABELS, name_map=name_map)
    assert aligned.texts == ["Alabama is shown by its flag.", "a city skyline a tower", "", "white cliffs"]
    assert aligned.kinds == ["summary", "merged", None, "images"]
    r = aligned.report
    assert (r["entries"], r["matched"], r["unknown"], r["with_text"]) == (4, 3, 1, 3)
    assert r["unknown_examples"] == ["Nowhere"] and r["coverage"] == 0.75
    assert align_enrichment(entries, LABELS, text="merged").texts[0] == "a red flag with a white cross"
    # round trip through the writer keeps every field the reader knows
    out = write_enrichment_json(tmp_path / "rt.json", entries)
    again = read_enrichment_json(out)
    assert again["Alabama"].summary == entries["Alabama"].summary and again["Berlin"].images == entries["Berlin"].images
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"X": {"images": {"a.jpg": 3}}}))
    with pytest.raises(DataFormatError, match="bad.json.*entity 'X', image 'a.jpg'"):
        read_enrichment_json(bad)
    bad.write_text("{oops")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        read_enrichment_json(bad)


class _HashEncoder:
    """A deterministic bag-of-words encoder (stands in for MiniLM in unit tests)."""

    dim = 8
    identity = {"kind": "hash-test", "dim": 8}

    def encode(self, texts):
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                out[i, sum(map(ord, w)) % 8] += 1.0
        return out


def test_encode_texts_presence_cache_and_provenance(tmp_path):
    texts = ["a red flag", "", "white cliffs", "a tower"]
    t1 = encode_texts("toykg", LABELS, texts, _HashEncoder(), report={"with_text": 3}, cache_dir=tmp_path)
    assert t1.values.shape == (4, 8) and t1.present.tolist() == [True, False, True, True]
    assert float(t1.values[1].abs().sum()) == 0.0
    assert np.allclose(t1.values[0].numpy(), _HashEncoder().encode(["a red flag"])[0])
    assert t1.provenance["options"]["enrichment"] == {"with_text": 3}
    t2 = encode_texts("toykg", LABELS, texts, _HashEncoder(), cache_dir=tmp_path)
    assert t2.provenance["options"]["cache_key"] == t1.provenance["options"]["cache_key"]
    t3 = encode_texts("toykg", LABELS, ["a red flag", "", "white cliffs", "a mast"], _HashEncoder(), cache_dir=tmp_path)
    assert t3.provenance["options"]["cache_key"] != t1.provenance["options"]["cache_key"]


# ------------------------------------------------------------------------------------------------ audit page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_audit_page_escapes_text_and_renders_in_headless_chromium(tmp_path):
    from mmkgc.features.enrich.audit import write_audit_html

    folder = _images(tmp_path / "img", per_entity=1, corrupt=False)
    evil = '<img src=x onerror="document.body.setAttribute(\'data-pwned\',1)"><b id="pwned">x</b>'
    entries = {
        "Alabama": EnrichedEntity(key="Alabama", entity_name="Alabama", dbpedia_url="http://dbpedia.org/resource/Alabama",
                                  images={"Alabama_0.png": "a red flag & a <white> cross", "gone.png": "lost"},
                                  merged_descriptions="a red flag", summary=evil),
        "Berlin": EnrichedEntity(key="Berlin", entity_name="Berlin", images={"Berlin_0.png": "too short"}),
    }
    page = write_audit_html(tmp_path / "out" / "audit.html", entries,
                            image_paths={"Alabama_0.png": folder / "Alabama_0.png", "gone.png": folder / "gone.png",
                                         "Berlin_0.png": folder / "Berlin_0.png"},
                            kept={"Alabama": ["a red flag & a <white> cross"], "Berlin": []},
                            reports={"encode": {"coverage": 0.5, "with_text": 1}})
    text = page.read_text()
    assert "&lt;white&gt;" in text and 'id="pwned"' not in text and "data:image/jpeg;base64," in text
    assert text.count("<section class=\"entity\"") == 2 and "no file" in text
    linked = write_audit_html(tmp_path / "out" / "linked.html", entries, embed=False,
                              image_paths={"Alabama_0.png": folder / "Alabama_0.png"})
    assert 'src="../img/Alabama_0.png"' in linked.read_text()

    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    profile = tmp_path / "profile"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=2000",
           "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = done.stdout
    assert done.returncode == 0, done.stderr[-2000:]
    assert '<b id="pwned">' not in dom and '&lt;b id="pwned"&gt;' in dom  # shown as text, not markup
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert dom.count('class="entity"') == 2 and "Summary:" in dom and "coverage" in dom
    assert "caption dropped" in dom  # Berlin's caption was not kept by cleaning
    shot = tmp_path / "shot.png"
    subprocess.run(cmd[:-2] + [f"--screenshot={shot}", "--window-size=1000,800", page.resolve().as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and Image.open(shot).size == (1000, 800)


# ------------------------------------------------------------------------------------------------ CLI


def _dataset(root: Path) -> Path:
    d = root / "toykg"
    d.mkdir()
    (d / "entity2id.txt").write_text(f"{len(LABELS)}\n" + "".join(f"{e}\t{i}\n" for i, e in enumerate(LABELS)))
    (d / "relation2id.txt").write_text("1\n<http://dbpedia.org/ontology/near>\t0\n")
    (d / "train2id.txt").write_text("3\n0 1 0\n1 2 0\n2 3 0\n")
    (d / "valid2id.txt").write_text("1\n3 0 0\n")
    (d / "test2id.txt").write_text("1\n0 2 0\n")
    return d


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"CI": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "MMKGC_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mmkgc", "enrich", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env)


def _invoke(*args: str):
    """Run ``mmkgc enrich ...`` in this process (the models are loaded once per test, not per command)."""
    from typer.testing import CliRunner

    from mmkgc.cli import app

    result = CliRunner().invoke(app, ["enrich", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output[-3000:]
    return result


def test_cli_all_stages_then_resume_and_errors(tmp_path, models, monkeypatch):
    monkeypatch.setenv("MMKGC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    ds = _dataset(tmp_path)
    folder = _images(tmp_path / "img")
    enc = tmp_path / "enc"
    from model_builders import tiny_word_tokenizer  # a tiny BERT encoder for the encode stage
    from transformers import BertConfig, BertModel

    tok = tiny_word_tokenizer(enc, bert_style=True)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64)).save_pretrained(enc)
    work = tmp_path / "work"
    args = ["all", str(ds), "--images", str(folder), "--caption-model", str(models["blip"]), "--fusion-model",
            str(models["t5"]), "--workdir", str(work), "--encoder", str(enc), "--max-new-tokens", "8",
            "--fusion-max-new-tokens", "8", "--min-words", "1", "--batch-size", "4"]
    _invoke(*args)
    for name in ("captions-original.jsonl", "merged.json", "descriptions.json", "fusion.jsonl", "enriched.json",
                 "reports.json", "audit.html"):
        assert (work / name).is_file(), name
    reports = json.loads((work / "reports.json").read_text())
    assert reports["caption-original"]["captioned"] == 9 and reports["caption-original"]["skipped"] == 1
    assert reports["encode"]["matched"] == 3 and reports["encode"]["num_entities"] == 4
    from mmkgc.features.io import load_feature_table

    table = load_feature_table(tmp_path / "home" / "features" / "toykg" / "generated_text.safetensors")
    assert table.values.shape == (4, 16) and table.present.tolist()[3] is False
    enriched = read_enrichment_json(work / "enriched.json")
    assert set(enriched) == {"Alabama", "Berlin", "Cairo"}

    _invoke(*args)  # everything resumes: no image and no entity is processed twice
    reports = json.loads((work / "reports.json").read_text())
    assert reports["caption-original"]["captioned"] == 0 and reports["caption-original"]["resumed"] == 10
    assert reports["fuse"]["fused"] == 0
    lines = [json.loads(x)["image"] for x in (work / "captions-original.jsonl").read_text().splitlines()]
    assert len(lines) == len(set(lines)) == 11  # header + 10 images

    out = _invoke("encode", str(ds), "--from", str(_released(tmp_path)[0]), "--encoder", str(enc),
                  "--output", "released")
    assert "matched" in out.output
    assert (tmp_path / "home" / "features" / "toykg" / "released.safetensors").is_file()
    bad = _cli(tmp_path, "fuse", "--workdir", str(tmp_path / "nowhere"), "--model", str(models["t5"]))
    assert bad.returncode != 0 and "run `mmkgc enrich merge` first" in bad.stderr
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name, backbone", [("paper_native_db15k", "native/db15k"),
                                            ("paper_adamf_db15k", "adamf_mat/db15k_released")])
def test_paper_presets_are_the_backbone_plus_bert_base_generated_text(name, backbone):
    from mmkgc.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = load_config(root / "beyond_images" / f"{name}.yaml")
    ref = load_config(root / f"{backbone}.yaml")
    model, base = cfg.model.model_dump(), ref.model.model_dump()
    enrichment = model.pop("enrichment")
    base.pop("enrichment")
    assert model == base and cfg.training.model_dump() == ref.training.model_dump()
    assert cfg.evaluation.model_dump() == ref.evaluation.model_dump()
    assert enrichment["encoder"] == "bert-base-uncased"  # the paper's encoder (BERT-base, mean pooling, 768-d)
    assert enrichment["policy"] == "extra_modality" and enrichment["text"] == "auto"
    assert [p.name for p in enrichment["source"]] == ["DB15K_img_original_summary_blip.json",
                                                      "DB15K_img_new_summary_blip.json"]
