"""How the embedded model plays ``textgym/Calculator-v0``: does it copy, or does it compute?

A right answer can come two ways: copy the question's operands into the ``<calc>`` call and then
copy the tool's result into the answer, or work the sum out (or recall it) and ignore the tool.
RL can only sharpen the first into a skill that carries to new questions. This samples the base
model on the train and the test questions (temperature 1, the same seeds) and counts, per split:

- ``called``: games with a ``<calc>a+b</calc>`` or ``<calc>a-b</calc>`` call, a tool reply and a
  final answer;
- ``call_copies_question``: of those, calls whose operands and operator are the question's;
- ``answer_copies_tool``: of those, final answers equal to the tool's result;
- ``right``: games scored right (the final answer is the question's answer);
- ``right_with_miscopied_call``: right answers after a call with other operands, that is, worked
  out rather than copied.

A train split clearly above the test split would mean the corpus's questions are recalled.
Writes ``results/calculator_habits.json``.

    python benchmarks/calculator_habits.py [--episodes 512] [--model tiny]
    python benchmarks/calculator_habits.py --quick --out /tmp   # smoke run (CI)
"""

from __future__ import annotations

import argparse
import re
import warnings

import torch

import textgym  # noqa: F401  (registers the envs)
from agents.trainers.rollout import evaluate
from common import machine, parse_args, write_json
from textgym.models import load_causal_lm
from textgym.models.sampling import Sampling

QUESTION = re.compile(r"What is (\d+) (plus|minus) (\d+)\?")
CALL = re.compile(r"<calc>(\d+)([+-])(\d+)</calc>")
TOOL = re.compile(r"<\|tool\|>(-?\d+)<\|end\|>")
ANSWER = re.compile(r"The answer is (-?\d+)")
COUNTS = ("episodes", "called", "call_copies_question", "answer_copies_tool", "right", "right_with_miscopied_call")


def habits(prompt: str, completion: str, score: float) -> dict[str, bool]:
    """What one game did (``COUNTS`` but ``episodes``)."""
    a, word, b = QUESTION.search(prompt).groups()
    call, tool, answer = CALL.search(completion), TOOL.search(completion), ANSWER.search(completion)
    called, right = bool(call and tool and answer), score > 0.5
    copied = called and call.groups() == (a, "+" if word == "plus" else "-", b)
    return {"called": called, "call_copies_question": copied, "answer_copies_tool": called and answer[1] == tool[1],
            "right": right, "right_with_miscopied_call": called and right and not copied}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=512, help="games per split")
    parser.add_argument("--model", default="tiny")
    args = parse_args(parser, quick={"episodes": 16})
    warnings.filterwarnings("ignore")
    lm = load_causal_lm(args.model)
    results = {}
    for split in ("train", "test"):
        games = evaluate(lm, "textgym/Calculator-v0", {"tokenizer": args.model}, args.episodes, Sampling(),
                         seed=10_000, split=split)
        counts = dict.fromkeys(COUNTS, 0) | {"episodes": len(games)}
        for game in games:
            for key, done in habits(game["prompt"], game["completion"], game["score"]).items():
                counts[key] += done
        results[split] = counts
    print(f"\n{'split':<7}" + "".join(f"{key:>{len(key) + 2}}" for key in COUNTS) + f"   ({args.model}, temperature 1)")
    for split, counts in results.items():
        print(f"{split:<7}" + "".join(f"{counts[key]:>{len(key) + 2}}" for key in COUNTS))
    write_json(args.out / "calculator_habits.json", {"machine": machine(), "model": args.model,
                                                     "device": "cuda" if torch.cuda.is_available() else "cpu",
                                                     "episodes": args.episodes, "results": results})


if __name__ == "__main__":
    main()
