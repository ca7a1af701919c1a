"""Build the embedded "tiny" model: corpus -> BPE tokenizer (with a chat template) -> 4-layer GPT-2, trained on CPU.

The shipped weights in ``textgym/models/tiny`` were made by::

    python -m textgym.models.build_tiny

and ``build_record.json`` next to them records the command, seed, corpus size, final validation
loss and the measured share of positive review continuations.

Example (a smoke build on a tiny corpus, a few optimizer steps):
    >>> import tempfile
    >>> from textgym.models.build_tiny import BuildConfig, build
    >>> out = tempfile.mkdtemp() + "/tiny"
    >>> record = build(BuildConfig(out=out, corpus_tokens=3000, vocab_size=400, n_embd=32, n_layer=1,
    ...                            n_head=2, max_steps=2, batch_tokens=256, sentiment_prompts=4))
    150 documents, vocab 400, 22 train batches
    >>> record["train_steps"]
    2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from textgym.models import save_pretrained_atomically, tiny_path
from textgym.models.corpus import REVIEW_KINDS, iter_documents, review_opening, vocabulary_size
from textgym.models.dialogues import CHAT_TEMPLATE, CHAT_TOKENS

EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass
class BuildConfig:
    out: str = str(tiny_path())
    seed: int = 0
    corpus_tokens: int = 5_000_000  # total; the validation split is taken from it
    val_fraction: float = 0.05
    vocab_size: int = 4096  # an upper bound: BPE stops early once every word is one token
    n_embd: int = 192
    n_layer: int = 4
    n_head: int = 6
    n_positions: int = 256
    block_size: int = 128  # documents are cut to this many tokens (EOS included)
    batch_tokens: int = 4096  # positions per batch (rows x the longest row)
    lr: float = 2e-3
    warmup_steps: int = 30
    epochs: float = 2.2
    max_steps: int | None = None  # overrides epochs (smoke builds)
    max_minutes: float = 30.0  # hard stop for the training loop
    sentiment_prompts: int = 400  # review prompts for the measured positive share
    threads: int = 2


# --- tokenizer -------------------------------------------------------------------------------------

def train_tokenizer(documents: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with the chat template; digits are split one by one so sums are spelled digit
    by digit, and the chat's role and end-of-turn markers are single special tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=PAD, padding_side="left",
        additional_special_tokens=CHAT_TOKENS, chat_template=CHAT_TEMPLATE,
    )


def corpus(cfg: BuildConfig) -> tuple[list[str], list[list[int]], PreTrainedTokenizerFast]:
    """Draw documents until they hold ``corpus_tokens`` tokens (under a tokenizer trained on them).

    The tokenizer is trained on a first draw sized by a words-per-token estimate, then the draw is
    extended until the token count is reached.
    """
    stream = iter_documents(cfg.seed)
    documents = [next(stream) for _ in range(max(50, cfg.corpus_tokens // 30))]
    tokenizer = train_tokenizer(documents, cfg.vocab_size)
    token_lists = tokenizer(documents)["input_ids"]
    total = sum(len(ids) + 1 for ids in token_lists)  # +1: the EOS after each document
    while total < cfg.corpus_tokens:
        more = [next(stream) for _ in range(max(50, (cfg.corpus_tokens - total) // 25))]
        more_ids = tokenizer(more)["input_ids"]
        documents += more
        token_lists += more_ids
        total += sum(len(ids) + 1 for ids in more_ids)
    return documents, token_lists, tokenizer


def batch_rows(token_lists: list[list[int]], block_size: int, batch_tokens: int, eos_id: int,
               pad_id: int) -> list[torch.Tensor]:
    """One document (then EOS) per row, rows of similar length batched together.

    Every document starts at position 0, as every textgym prompt does: with absolute position
    embeddings, a skill learnt only at other offsets transfers poorly (a sum learnt inside packed
    rows was learnt several times slower in trials). Sorting by length keeps padding, which the
    loss ignores, small; each batch holds at most ``batch_tokens`` positions.
    """
    docs = sorted(([*ids[: block_size - 1], eos_id] for ids in token_lists), key=len)
    batches, start = [], 0
    while start < len(docs):
        end = start + 1
        while end < len(docs) and (end + 1 - start) * len(docs[end]) <= batch_tokens:
            end += 1
        width = len(docs[end - 1])
        batches.append(torch.tensor([d + [pad_id] * (width - len(d)) for d in docs[start:end]]))
        start = end
    return batches


# --- model --------------------------------------------------------------------------------------

def lm_loss(model: GPT2LMHeadModel, rows: torch.Tensor, pad_id: int) -> torch.Tensor:
    mask = rows != pad_id
    labels = rows.masked_fill(~mask, -100)
    return model(input_ids=rows, attention_mask=mask.long(), labels=labels).loss


@torch.no_grad()
def validation_loss(model: GPT2LMHeadModel, batches: list[torch.Tensor], pad_id: int) -> float:
    """Mean loss per token over ``batches``."""
    model.eval()
    losses = [(lm_loss(model, rows, pad_id).item(), int((rows != pad_id).sum())) for rows in batches]
    model.train()
    return sum(loss * n for loss, n in losses) / sum(n for _, n in losses)


def train(cfg: BuildConfig, train_batches: list[torch.Tensor], val_batches: list[torch.Tensor], tokenizer) -> tuple:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    steps_per_epoch = len(train_batches)
    total_steps = cfg.max_steps or max(1, round(cfg.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(cfg.warmup_steps, total_steps // 10), total_steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    start, step = time.time(), 0
    model.train()
    while step < total_steps and time.time() - start < cfg.max_minutes * 60:
        if step % steps_per_epoch == 0:
            order = torch.randperm(steps_per_epoch, generator=generator).tolist()
        loss = lm_loss(model, train_batches[order[step % steps_per_epoch]], tokenizer.pad_token_id)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % 100 == 0:
            print(f"step {step}/{total_steps} loss {loss.item():.3f} {time.time() - start:.0f}s", flush=True)
    minutes = (time.time() - start) / 60
    model.eval()
    return model, step, validation_loss(model, val_batches, tokenizer.pad_token_id), minutes


# --- the measured base rate ---------------------------------------------------------------------

@torch.no_grad()
def positive_share(model, tokenizer, n_prompts: int, seed: int) -> tuple[float, list[str]]:
    """Share of sampled review continuations that VADER calls positive (compound >= 0.05)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    rng = random.Random(seed)
    prompts = [review_opening(rng, rng.choice(list(REVIEW_KINDS))) for _ in range(n_prompts)]
    torch.manual_seed(seed)
    completions = []
    for i in range(0, n_prompts, 50):
        batch = tokenizer(prompts[i : i + 50], return_tensors="pt", padding=True)
        max_new_tokens = min(48, model.config.n_positions - batch["input_ids"].shape[1])  # stay in context
        out = model.generate(**batch, do_sample=True, top_k=0, max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
        completions += tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    analyzer = SentimentIntensityAnalyzer()
    positive = [analyzer.polarity_scores(text)["compound"] >= 0.05 for text in completions]
    samples = [p + c for p, c in zip(prompts[:5], completions[:5])]
    return float(np.mean(positive)), samples


# --- the build ---------------------------------------------------------------------------------

def build(cfg: BuildConfig, command: str = "") -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    documents, token_lists, tokenizer = corpus(cfg)
    n_val = max(1, int(len(token_lists) * cfg.val_fraction))
    val_batches, train_batches = (
        batch_rows(lists, cfg.block_size, cfg.batch_tokens, tokenizer.eos_token_id, tokenizer.pad_token_id)
        for lists in (token_lists[:n_val], token_lists[n_val:])
    )
    print(f"{len(documents)} documents, vocab {len(tokenizer)}, {len(train_batches)} train batches", flush=True)
    model, steps, val_loss, minutes = train(cfg, train_batches, val_batches, tokenizer)
    share, samples = positive_share(model, tokenizer, cfg.sentiment_prompts, cfg.seed)
    record = {
        "command": command or "python -m textgym.models.build_tiny",
        "config": dataclasses.asdict(cfg) | {"out": None},
        "corpus_documents": len(documents),
        "corpus_words": vocabulary_size(cfg.seed),
        "train_tokens": sum(int((rows != tokenizer.pad_token_id).sum()) for rows in train_batches),
        "val_tokens": sum(int((rows != tokenizer.pad_token_id).sum()) for rows in val_batches),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_steps": steps,
        "train_minutes": round(minutes, 2),
        "final_val_loss": round(val_loss, 4),
        "review_positive_share": round(share, 4),
        "review_positive_share_prompts": cfg.sentiment_prompts,
        "samples": samples,
    }
    save_pretrained_atomically(cfg.out, model, tokenizer, {"build_record.json": json.dumps(record, indent=2) + "\n"})
    return record


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for field in dataclasses.fields(BuildConfig):
        default = field.default
        kind = {"int | None": int, "float": float, "int": int, "str": str}[str(field.type)]
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=default)
    return BuildConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    record = build(parse_args(argv), command=" ".join(["python -m textgym.models.build_tiny", *argv]))
    print(json.dumps({k: v for k, v in record.items() if k != "config"}, indent=2))


if __name__ == "__main__":
    main()
