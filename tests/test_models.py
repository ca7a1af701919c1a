"""The embedded "tiny" model, the loaders, the corpus and the build script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from textgym.data import PROMPT_SETS, generate, prompt_file
from textgym.models import atomic_directory, load_causal_lm, load_tokenizer, recover_directory, tiny_path
from textgym.models.build_tiny import BuildConfig, batch_rows, build
from textgym.models.corpus import generate_documents, prompt_starts
from tests.helpers import FS_OPS, Killed, kill_at


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((tiny_path() / "build_record.json").read_text())


def test_tiny_tokenizer_is_a_fast_bpe_with_pad_and_eos():
    tokenizer = load_tokenizer("tiny")
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert 2000 <= len(tokenizer) <= 8000
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    assert tokenizer.padding_side == "left"
    text = "Film review: The acting was great. 17 + 25 = 42"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert [t for t in tokenizer.tokenize("1742") if t.isdigit()] == ["1", "7", "4", "2"]  # digit by digit


def test_tiny_model_ships_as_safetensors_under_20_mb():
    files = {p.name: p.stat().st_size for p in tiny_path().iterdir()}
    assert "model.safetensors" in files and not any(n.endswith((".bin", ".pt", ".pkl")) for n in files)
    assert sum(files.values()) <= 20 * 2**20


def test_tiny_model_is_a_gpt2_that_continues_like_the_corpus():
    tokenizer, model = load_tokenizer("tiny"), load_causal_lm("tiny", device="cpu")
    assert isinstance(model, GPT2LMHeadModel) and not model.training
    assert model.config.vocab_size == len(tokenizer)
    batch = tokenizer(["12 + 30 =", "Restaurant review: We had dinner at this cafe last night."],
                      return_tensors="pt", padding=True)
    out = model.generate(**batch, do_sample=False, max_new_tokens=20, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert texts[0].strip().isdigit()  # an arithmetic prompt gets a number
    assert " was " in texts[1]  # a review goes on to say how something was


def test_load_causal_lm_takes_device_and_dtype():
    model = load_causal_lm("tiny", device="cpu", dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16 and model.device.type == "cpu"


def test_loaders_accept_a_local_directory(tmp_path):
    load_tokenizer("tiny").save_pretrained(tmp_path)
    load_causal_lm("tiny", device="cpu").save_pretrained(tmp_path)
    assert len(load_tokenizer(tmp_path)) == len(load_tokenizer("tiny"))
    assert isinstance(load_causal_lm(str(tmp_path), device="cpu"), GPT2LMHeadModel)


@pytest.mark.parametrize("name", ["./missing-dir", "/no/such/model", "weights.safetensors"])
def test_loaders_reject_missing_paths_with_what_is_accepted(name):
    for loader in (load_tokenizer, load_causal_lm):
        with pytest.raises(ValueError, match=f"unknown model or tokenizer '{name}'.*\"tiny\".*hub id"):
            loader(name)


def test_hub_ids_fail_offline_with_a_clear_message():
    with pytest.raises(ValueError, match="could not load causal LM 'textgym-test/absent'.*HF_HUB_OFFLINE"):
        load_causal_lm("textgym-test/absent")
    with pytest.raises(TypeError, match="expected a model name or path"):
        load_tokenizer(42)


def test_build_record_meets_the_issue(record):
    assert record["train_tokens"] >= 2_000_000
    assert record["train_minutes"] <= 30
    assert 0.3 <= record["review_positive_share"] <= 0.7  # room for RL to raise it
    assert record["vocab_size"] == len(load_tokenizer("tiny"))
    assert record["corpus_words"] >= 300 and record["command"].startswith("python -m textgym.models.build_tiny")
    assert np.isfinite(record["final_val_loss"])


# --- corpus, packing and the build script -----------------------------------------------------

def test_corpus_is_seeded_and_covers_every_document_kind():
    docs = generate_documents(400, seed=3)
    assert docs == generate_documents(400, seed=3) and docs != generate_documents(400, seed=4)
    for marker in ("Film review:", "Product review:", "Restaurant review:", "Scene:", "Words:", "Summary:", " + "):
        assert any(marker in d for d in docs), marker


def test_corpus_never_shows_a_test_sum_and_writes_every_summary_style_and_review_flaw():
    from textgym.models.corpus import DAYS, FLAWED_SHARE, RUDE, SUMMARY_STYLES, arithmetic_problems

    docs = generate_documents(4000, seed=0)
    test_problems = {problem for problem, _ in arithmetic_problems("test")}
    sums = [d for d in docs if "=" in d]
    assert len(sums) > 2000 and not any(d.rsplit(" ", 1)[0] in test_problems for d in sums)
    assert all(int(eval(d.split(" =")[0])) == int(d.split("= ")[1]) for d in sums)
    summaries = [d.split("Summary: ")[1] for d in docs if "Summary: " in d]
    full = [s for s in summaries if s.rstrip(".").endswith(tuple(DAYS))]  # who, what, where and when
    share = SUMMARY_STYLES["full"]  # the Summarize task's reference style, sometimes
    assert 0.5 * share < len(full) / len(summaries) < 1.5 * share
    assert sum(s.endswith(("had a busy day.", "went out.")) for s in summaries) > 0.1 * len(summaries)
    reviews = [d for d in docs if " review: " in d]
    rude = sum(any(r in d for r in RUDE) for d in reviews) / len(reviews)
    assert 0.05 < rude < FLAWED_SHARE


def test_scenes_use_their_header_words_with_the_verb_agreeing_or_as_written_after_an_intention():
    from textgym.models.corpus import ACTIONS, INTENTION_SHARE, INTENTIONS, PLURAL

    scenes = [d for d in generate_documents(6000, seed=0) if d.startswith("Words: ")]
    as_written = 0
    for doc in scenes:
        header, body = doc.removeprefix("Words: ").split(". Scene: ")
        sentence = body.split(".")[0].lower()
        words = header.split(", ")
        plural = any(sentence.startswith(person) for person in PLURAL)
        # A word can be a verb and an object ("paint"), so any verb of the header may be the one.
        verbs = [v for v in ACTIONS if v in words]
        base = [f"{intention[plural]} {verb} " for intention in INTENTIONS for verb in verbs]
        inflected = [f" {verb if plural else ACTIONS[verb][0]} the " for verb in verbs]
        assert any(form in sentence for form in base + inflected), doc
        as_written += any(form in sentence for form in base)
        assert sum(word in sentence for word in words) >= 2, doc  # the object and the place
    assert 0.7 * INTENTION_SHARE < as_written / len(scenes) < 1.3 * INTENTION_SHARE


def test_shipped_prompt_sets_are_regenerated_from_their_seeds():
    for name in PROMPT_SETS:
        assert prompt_file(name).read_text().splitlines() == generate(name)
    assert len(set(prompt_starts(40))) > 30


def test_batch_rows_puts_one_document_per_row_and_batches_by_length():
    batches = batch_rows([[5, 6, 7], [8, 9], [3] * 10, [4]], block_size=6, batch_tokens=9, eos_id=0, pad_id=1)
    # Sorted by length; a batch grows while rows x its longest row stays within 9 positions.
    assert [b.tolist() for b in batches] == [[[4, 0, 1], [8, 9, 0]], [[5, 6, 7, 0]], [[3, 3, 3, 3, 3, 0]]]


def test_build_script_end_to_end(tmp_path):
    out = tmp_path / "model"
    cfg = BuildConfig(out=str(out), corpus_tokens=6000, vocab_size=600, n_embd=32, n_layer=1, n_head=2,
                      n_positions=64, block_size=64, max_steps=4, batch_tokens=256, sentiment_prompts=4)
    record = build(cfg)
    assert record["train_steps"] == 4 and record["train_tokens"] > 5000
    assert np.isfinite(record["final_val_loss"]) and 0 <= record["review_positive_share"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dir left behind
    tokenizer, model = load_tokenizer(out), load_causal_lm(out, device="cpu")
    assert model.config.vocab_size == len(tokenizer) <= 600
    assert json.loads((out / "build_record.json").read_text())["train_steps"] == 4
    build(cfg)  # building over an existing model replaces it atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("kill_point", range(FS_OPS))
def test_atomic_directory_keeps_one_whole_version_when_killed_at_any_point(tmp_path, monkeypatch, kill_point):
    out = tmp_path / "model"
    with atomic_directory(out) as tmp:
        (tmp / "weights").write_text("v1")
    kill_at(monkeypatch, kill_point)
    with pytest.raises(Killed), atomic_directory(out) as tmp:
        (tmp / "weights").write_text("v2")
    monkeypatch.undo()
    recover_directory(out)
    # Until the new version is renamed into place (the 4th operation), the old one stands.
    assert (out / "weights").read_text() == ("v2" if kill_point >= FS_OPS - 1 else "v1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_directory(out) as tmp:  # and the next save works
        (tmp / "weights").write_text("v3")
    assert (out / "weights").read_text() == "v3" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_directory_refuses_to_replace_a_file(tmp_path):
    (tmp_path / "model").write_text("not a model")
    with pytest.raises(ValueError, match="it is a file; expected a directory path"), atomic_directory(tmp_path / "model"):
        pass
    assert (tmp_path / "model").read_text() == "not a model"


def test_loaded_models_run_the_fused_gelu_with_the_same_outputs():
    """load_causal_lm swaps gelu_new for PyTorch's fused tanh GELU: the same function."""
    as_saved = GPT2LMHeadModel.from_pretrained(tiny_path()).eval()
    fused = load_causal_lm("tiny", device="cpu")
    assert type(as_saved.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    assert type(fused.transformer.h[0].mlp.act).__name__ == "GELUTanh"
    ids = torch.randint(2, 2000, (4, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, as_saved(input_ids=ids).logits, atol=1e-4, rtol=0)
