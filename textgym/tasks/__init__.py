"""The registered tasks: prompt data + a score + defaults, in sparse or immediate reward mode.

``reward_mode="sparse"`` gives the task score at the last token only. ``"immediate"`` adds
``PotentialShaping`` of the task's potential (its score, unless it names another) and nothing
else: since Φ(end) = 0, an episode's immediate return is its sparse return minus Φ(prompt, ""),
whatever the actions, so the optimal policy is the same. Penalties are opt-in: wrap the env in
``textgym.wrappers`` components.

| id | the model must | score (range) | data (train + test) |
| --- | --- | --- | --- |
| ``textgym/Sentiment-v0`` | continue a review positively | VADER, [0, 1] | 1,668 + 416 review openings |
| ``textgym/Keywords-v0`` | write a scene that uses three given words | coverage − repeated bigrams, [−1, 1] | 5,465 + 1,366 word sets |
| ``textgym/Summarize-v0`` | summarize a passage: who, what, where, when | ROUGE-L F vs the reference, [0, 1] | 2,000 + 400 passages |
| ``textgym/Arithmetic-v0`` | answer ``a + b =`` / ``a - b =`` (a < 100, b < 10) | exact answer, {0, 1}; potential: answer digits right so far | 1,564 + 391 problems |
| ``textgym/Preference-v0`` | answer as a learned reward model prefers | the shipped reward model's r, real | 1,668 + 416 review openings |

``benchmarks/task_baselines.py`` measures each task's floor (the empty completion; for
Preference the held-out rejected answers), the embedded model's base score (sampled at
temperature 1) and a gold completion's score (the reference, the answer, a scene with the three
words, a positive review ending, a polite on-topic answer); the README lists them.

Every task has ``split="train"`` (80%) and ``split="test"`` (20%, disjoint), generated from the
corpus grammar with fixed seeds.

Example:
    >>> import gymnasium as gym, textgym
    >>> env = gym.make("textgym/Arithmetic-v0", reward_mode="immediate", split="test")
    >>> obs, info = env.reset(seed=0)
    >>> info["prompt"], info["references"]
    ('50 + 7 =', '57')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gymnasium.vector import AutoresetMode

from textgym.envs import TextGenerationEnv, TextGenerationVectorEnv
from textgym.envs.core import unexpected_arguments
from textgym.scorers.base import Scorer, scorer_name
from textgym.rewards import PREFERENCE_MODEL, AttentionCredit, ImplicitTokenReward, LearnedPotential, RewardModelScore
from textgym.scorers import AnswerDigits, KeywordCoverage, NumericMatch, Repetition, VaderSentiment, rouge, weighted
from textgym.tasks import data
from textgym.wrappers import PotentialShaping, TokenRewardWrapper, VectorTokenRewardWrapper

REWARD_MODES = ("sparse", "immediate", "learned", "implicit", "attention")
TRAINED_SOURCES = {"learned": "potential", "implicit": "implicit"}  # mode -> the kwarg naming its trained directory
OVERRIDABLE = ("tokenizer", "max_prompt_tokens", "max_new_tokens", "stop_on_eos", "disallowed_token_ids",
               "allow_masked_actions")


@dataclass(frozen=True)
class Task:
    """Everything about a task, in one place: its data, score, potential, env limits, what good and
    bad completions look like, and its token budget in the immediate-versus-sparse study."""

    name: str
    summary: str  # one line, for listings
    data: Callable[[str], data.Data]  # split -> (prompts, references)
    scorer: Callable[[], Scorer]
    gold: Callable[[str, Any], str]  # (prompt, references) -> a good completion
    study_tokens: int  # the study's token budget per run
    potential: Callable[[], Scorer] | None = None  # None: shape with the scorer itself
    floor: Callable[[str, int], data.Completions] | None = None  # (split, count); None: empty completions
    max_prompt_tokens: int = 64
    max_new_tokens: int = 48

    @property
    def env_id(self) -> str:
        return f"textgym/{self.name}-v0"

    def floor_completions(self, split: str, count: int) -> data.Completions:
        """What a bad policy writes for the first ``count`` prompts of ``split``."""
        return self.floor(split, count) if self.floor else data.empty_floor(self.data(split), count)

    def gold_completions(self, split: str, count: int) -> data.Completions:
        """What a good policy writes for the first ``count`` prompts of ``split``."""
        prompts, references = self.data(split)
        prompts, refs = prompts[:count], None if references is None else references[:count]
        return prompts, [self.gold(p, None if refs is None else refs[i]) for i, p in enumerate(prompts)], refs


TASKS = {
    task.name: task
    for task in [
        Task("Sentiment", "continue a review so that it is positive (VADER, [0, 1])",
             data.sentiment, VaderSentiment, data.positive_gold, study_tokens=16_000,
             max_prompt_tokens=24, max_new_tokens=48),
        Task("Keywords", "write a scene that uses three given words (coverage minus repetition, [-1, 1])",
             data.keywords,
             lambda: weighted({"coverage": (KeywordCoverage(), 1.0), "repetition": (Repetition(2), -1.0)}),
             data.scene_gold, study_tokens=200_000, max_prompt_tokens=24, max_new_tokens=32),
        Task("Summarize", "summarize a passage: who, what, where and when (ROUGE-L vs the reference, [0, 1])",
             data.summarize, lambda: rouge("rougeL"), data.reference_gold, study_tokens=12_000,
             max_prompt_tokens=64, max_new_tokens=24),
        Task("Arithmetic", "answer a + b = / a - b = problems, a < 100 and b < 10 (exact answer, {0, 1})",
             data.arithmetic, NumericMatch, data.reference_gold, study_tokens=120_000, potential=AnswerDigits,
             max_prompt_tokens=8, max_new_tokens=6),
        Task("Preference", "answer a review prompt as a learned reward model prefers (reward, real-valued)",
             data.preference, lambda: RewardModelScore(PREFERENCE_MODEL), data.polite_gold, study_tokens=12_000,
             floor=data.rejected_floor, max_prompt_tokens=24, max_new_tokens=32),
    ]
}


def _task_setup(task: str, kwargs: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """The env kwargs of ``task`` and the reward components of its reward mode."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    spec = TASKS[task]
    valid = ["split", "reward_mode", *TRAINED_SOURCES.values(), *OVERRIDABLE]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise unexpected_arguments(spec.env_id, unknown, valid)
    split, reward_mode = kwargs.pop("split", "train"), kwargs.pop("reward_mode", "sparse")
    if reward_mode not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {list(REWARD_MODES)}, got {reward_mode!r}")
    sources = {name: kwargs.pop(name, None) for name in TRAINED_SOURCES.values()}
    for mode, name in TRAINED_SOURCES.items():
        if (sources[name] is None) == (reward_mode == mode):
            raise ValueError(f"{name}=DIR goes with reward_mode={mode!r} and only with it (`textgym train "
                             f"{spec.env_id} --reward-mode {mode}` trains one); got reward_mode={reward_mode!r}, "
                             f"{name}={sources[name]!r}")
    prompts, references = spec.data(data.check_split(split))
    scorer = spec.scorer()
    config = {"prompts": prompts, "references": references, "scorer": scorer,
              "max_prompt_tokens": spec.max_prompt_tokens, "max_new_tokens": spec.max_new_tokens, **kwargs}
    return config, _reward_components(spec, reward_mode, scorer, sources)


def _reward_components(spec: Task, reward_mode: str, scorer: Scorer, sources: dict[str, str | None]) -> list:
    """The per-token reward components of ``reward_mode`` (the score itself is the env's)."""
    if reward_mode == "immediate":
        return [PotentialShaping(spec.potential() if spec.potential else scorer)]
    if reward_mode == "learned":
        return [PotentialShaping(LearnedPotential(sources["potential"], env_id=spec.env_id))]
    if reward_mode == "implicit":
        return [ImplicitTokenReward(sources["implicit"], env_id=spec.env_id)]
    if reward_mode == "attention":
        if not isinstance(scorer, RewardModelScore):
            raise ValueError(f"reward_mode 'attention' spreads a reward model's score by its attention; {spec.name} "
                             f"scores with {scorer_name(scorer)!r}, not a reward model (use it with Preference)")
        return [AttentionCredit(scorer)]
    return []


def make_task_env(task: str, render_mode: str | None = None, **kwargs: Any) -> TokenRewardWrapper:
    """The single env of ``task`` (the ``entry_point`` of its registered id)."""
    config, components = _task_setup(task, kwargs)
    return TokenRewardWrapper(TextGenerationEnv(render_mode=render_mode, **config), *components)


def make_task_vector_env(num_envs: int, task: str, autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
                         render_mode: str | None = None, **kwargs: Any) -> VectorTokenRewardWrapper:
    """The vector env of ``task`` (the ``vector_entry_point`` of its registered id)."""
    config, components = _task_setup(task, kwargs)
    envs = TextGenerationVectorEnv(num_envs, autoreset_mode=autoreset_mode, render_mode=render_mode, **config)
    return VectorTokenRewardWrapper(envs, *components)
