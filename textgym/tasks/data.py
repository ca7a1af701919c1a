"""Prompt sets of the registered tasks, generated from the corpus grammar with fixed seeds.

Each builder returns ``(prompts, references)`` for a split. Where the grammar can be enumerated
(review openings, keyword triples, sums), all items are listed, shuffled with a fixed seed and
cut 80/20 into disjoint train and test sets; passages are drawn per split with their own seed,
and test passages that also occur in train are dropped.

Example:
    >>> from textgym.tasks.data import arithmetic
    >>> prompts, answers = arithmetic("test")
    >>> prompts[0], answers[0]
    ('60 + 9 =', '69')
"""

from __future__ import annotations

import functools
import itertools
import random

from textgym.models.corpus import (
    ACTIONS, ADJECTIVES, FLAWS, PLACES, REVIEW_KINDS, WHEN, WHEN_PAST, arithmetic_problems, flawed, passage_parts,
    review_body, scene, seeded_split,
)

SPLITS = ("train", "test")
Data = tuple[list[str], list | None]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    return split


def _cut(items: list, split: str, seed: int) -> list:
    return seeded_split(items, check_split(split), seed)


@functools.lru_cache(maxsize=None)
def sentiment(split: str) -> Data:
    """Neutral review openings; the model must continue them positively."""
    openings = sorted({
        f"{kind} review: " + opener.format(thing=thing, when=when, when_past=when_past)
        for kind, spec in REVIEW_KINDS.items()
        for opener, thing, when, when_past in itertools.product(spec["openers"], spec["things"], WHEN, WHEN_PAST)
    })
    return _cut(openings, split, seed=11), None


@functools.lru_cache(maxsize=None)
def keywords(split: str) -> Data:
    """Three concepts (an object, an action, a place; shown shuffled) that one scene must use."""
    triples = sorted({  # as word sets: "clean the kitchen in the room" and the reverse are one task
        tuple(sorted((obj, verb, place.split()[-1])))
        for verb, (_, _, objects) in ACTIONS.items() for obj in objects for place in PLACES
    })
    chosen = _cut(triples, split, seed=12)
    rng = random.Random(13)
    prompts, references = [], []
    for triple in chosen:
        shown = rng.sample(triple, 3)
        prompts.append(f"Words: {', '.join(shown)}. Scene:")
        references.append(list(triple))
    return prompts, references


@functools.lru_cache(maxsize=None)
def summarize(split: str) -> Data:
    """Short passages; the reference says who did what, where *and when* ("Tom bought bread at
    the market in Rome on Monday."), while the corpus taught only who, what and where."""
    def draw(seed: int, n: int) -> dict[str, str]:
        rng, found = random.Random(seed), {}
        while len(found) < n:
            parts = passage_parts(rng)
            found[f"{parts.text} Summary:"] = parts.full_summary
        return found

    train = draw(21, 2000)
    items = train if check_split(split) == "train" else {
        p: s for p, s in draw(22, 400).items() if p not in train
    }
    return list(items), [[s] for s in items.values()]


def arithmetic(split: str) -> Data:
    """Every ``a + b =`` and ``a - b =`` (a >= b) for a in 0..99 and b in 0..9; the reference is the answer.

    The split is the corpus's (``textgym.models.corpus.arithmetic_problems``): the embedded model
    was trained on train problems only, so its test accuracy measures arithmetic, not recall.
    """
    chosen = arithmetic_problems(check_split(split))
    return [p for p, _ in chosen], [answer for _, answer in chosen]


# --- preferences ----------------------------------------------------------------------------------

def polite_answer(rng: random.Random, kind: str) -> str:
    """A polite, on-topic, complete review body for ``kind``."""
    return review_body(rng, kind, rng.choice(list(ADJECTIVES)), aspects=rng.choice([1, 2]))


def _rejected(rng: random.Random, kind: str, chosen: str) -> str:
    """A worse answer to the same prompt: off-topic, or ``chosen`` cut off, made rude or repetitive."""
    flaw = rng.choice(["off-topic", *FLAWS])
    if flaw == "off-topic":
        other = rng.choice([k for k in REVIEW_KINDS if k != kind])
        return rng.choice([polite_answer(rng, other), " " + scene(rng).split("Scene: ")[1]])
    return flawed(rng, chosen, flaw)


@functools.lru_cache(maxsize=None)
def preference_pairs(split: str) -> list[tuple[str, str, str]]:
    """Seeded ``(prompt, chosen, rejected)`` triples: polite, on-topic, complete answers preferred."""
    rng = random.Random({"train": 31, "test": 32}[check_split(split)])
    prompts = sentiment(split)[0]  # disjoint review openings per split
    pairs = []
    for prompt in prompts * 2:
        kind = prompt.split(" review:")[0]
        chosen = polite_answer(rng, kind)
        pairs.append((prompt, chosen, _rejected(rng, kind, chosen)))
    return pairs


@functools.lru_cache(maxsize=None)
def preference(split: str) -> Data:
    """Review openings whose answers a learned reward model judges (``textgym/Preference-v0``)."""
    return sentiment(split)


# --- gold and floor completions -------------------------------------------------------------------
# A gold completion is what a good policy writes for a prompt; a floor is what a bad one writes.
# ``benchmarks/task_baselines.py`` scores both, to place the base model between them.

Completions = tuple[list[str], list[str], list | None]  # prompts, completions, references


def reference_gold(prompt: str, references) -> str:
    """The reference itself: the right answer, the reference summary."""
    return " " + (references[0] if isinstance(references, list) else references)


def positive_gold(prompt: str, references) -> str:
    return " The staff was wonderful and the food was excellent. I would recommend it to everyone."


def scene_gold(prompt: str, references) -> str:
    """A scene that uses each of the three words once."""
    words = set(references)
    verb = next(v for v in ACTIONS if v in words)
    place = next(p for p in PLACES if p.split()[-1] in words - {verb})
    obj = next(iter(words - {verb, place.split()[-1]}))
    return f" The boy {ACTIONS[verb][0]} the {obj} {place}."


def polite_gold(prompt: str, references) -> str:
    return polite_answer(random.Random(prompt), prompt.split(" review:")[0])


def empty_floor(data: Data, count: int) -> Completions:
    """The empty completion for the first ``count`` prompts."""
    prompts, references = data
    return prompts[:count], [""] * len(prompts[:count]), None if references is None else references[:count]


def rejected_floor(split: str, count: int) -> Completions:
    """The held-out rejected answers of the preference pairs (off-topic, cut off, rude, repetitive)."""
    prompts, _, rejected = zip(*preference_pairs(split)[:count])
    return list(prompts), list(rejected), None
