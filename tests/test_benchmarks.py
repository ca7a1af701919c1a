"""Smoke runs of the benchmarks' ``--quick`` modes: they run from a clone and write their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark script in a subprocess

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run_quick(script: str, out: Path, *args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out), *args], check=True,
                   env=env, cwd=out, timeout=900)


def test_immediate_vs_sparse_quick_covers_every_task_algo_and_mode(tmp_path, monkeypatch):
    from textgym.rewards import RewardModelScore
    from textgym.tasks import REWARD_MODES, TASKS

    run_quick("immediate_vs_sparse.py", tmp_path)
    record = json.loads((tmp_path / "immediate_vs_sparse.json").read_text())
    assert set(record["results"]) == set(TASKS) == set(record["sources"]) == set(record["goal"])
    for task, algos in record["results"].items():
        assert set(algos) == {"ppo", "grpo"}
        # attention credit only where the score is a reward model's
        expected = {*REWARD_MODES, "online"} - (set() if isinstance(TASKS[task].scorer(), RewardModelScore) else {"attention"})
        for modes in algos.values():
            assert set(modes) == expected
            for stats in modes.values():
                assert len(stats["tokens_to_threshold"]) == record["seeds"]
                assert isinstance(stats["test_score_mean"], float) and isinstance(stats["final_kl_mean"], float)
        assert all(source["rollout_tokens"] > 0 for source in record["sources"][task].values())
        assert (tmp_path / f"immediate_vs_sparse_{task.lower()}.png").stat().st_size > 0
    assert {r["mode"] for r in record["runs"]} == {*REWARD_MODES, "online"}
    assert all(r["steps"][-1] >= record["budgets"][r["task"]] for r in record["runs"])
    assert not (tmp_path / "immediate_vs_sparse.runs.jsonl").exists()  # the log is gone once the results hold it
    # A run logged before (a study killed part-way) is not run again: a marked copy of seed 0 stands for it.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from immediate_vs_sparse import Run, RunLog

    logged = next(r for r in record["runs"] if (r["task"], r["algo"], r["mode"]) == ("Sentiment", "grpo", "sparse"))
    log = RunLog(tmp_path / "immediate_vs_sparse.runs.jsonl")
    run = Run("Sentiment", "grpo", "sparse", 0, record["budgets"]["Sentiment"], record["test_episodes"], {})
    log.add(run, record["sources"]["Sentiment"], {**logged, "test_score": 7.0})
    # Re-running some cells of one task replaces their results and runs and keeps every other cell.
    run_quick("immediate_vs_sparse.py", tmp_path, "--tasks", "Sentiment", "--algos", "grpo", "--modes", "sparse",
              "online", "--update")
    updated = json.loads((tmp_path / "immediate_vs_sparse.json").read_text())
    assert updated["results"]["Sentiment"]["grpo"]["sparse"]["test_score_mean"] == 7.0
    assert set(updated["results"]) == set(TASKS) and len(updated["runs"]) == len(record["runs"])
    # Each task records every study that its cells come from: Sentiment's first study still holds PPO.
    first, second = updated["study"]["Sentiment"]
    assert first == record["study"]["Sentiment"][0] and first["tasks"] == list(TASKS)
    assert second["modes"] == ["sparse", "online"] and second["resumed_runs"] == 1
    assert updated["study"]["Keywords"] == record["study"]["Keywords"]
    assert updated["results"]["Keywords"] == record["results"]["Keywords"]
    assert updated["results"]["Sentiment"]["ppo"] == record["results"]["Sentiment"]["ppo"]
    assert set(updated["results"]["Sentiment"]["grpo"]) == set(record["results"]["Sentiment"]["grpo"])
    new_runs = [r for r in updated["runs"] if r not in record["runs"]]
    assert {(r["task"], r["algo"], r["mode"]) for r in new_runs} == {("Sentiment", "grpo", m) for m in ("sparse", "online")}
    # A study that re-runs all of a task's cells leaves it only its own record.
    from immediate_vs_sparse import updated as merged

    entry = {**second, "algos": ["ppo", "grpo"], "modes": list(REWARD_MODES) + ["online"]}
    rerun = {**updated, "runs": [r for r in updated["runs"] if r["task"] == "Sentiment"], "study": {"Sentiment": [entry]}}
    assert merged(updated, rerun)["study"]["Sentiment"] == [entry]
    # Re-analysing runs nothing and summarises the same runs to the same tables.
    run_quick("immediate_vs_sparse.py", tmp_path, "--reanalyse")
    again = json.loads((tmp_path / "immediate_vs_sparse.json").read_text())
    assert again["runs"] == updated["runs"] and again["results"] == updated["results"]
    assert again["goal"] == updated["goal"]


def test_vs_trl_quick_compares_our_grpo_with_trls(tmp_path):
    run_quick("vs_trl.py", tmp_path)
    record = json.loads((tmp_path / "vs_trl.json").read_text())
    assert record["throughput_ratio_vs_trl"] > 0 and record["wall_time_ratio_trl_over_ours"] > 0
    results = record["results"]
    assert set(results) == {"textgym-grpo", "textgym-ppo", "trl-grpo"}
    steps = {r["optimizer_steps"] for r in results.values()}
    assert steps == {16}  # 2 generations x 4 passes x 2 minibatches, for every contender
    for r in results.values():
        assert r["tokens"] > 0 and r["peak_mib"] > 0 and 0 <= r["test_score"] <= 1 and r["test_score_std"] == 0  # 1 seed


def test_rollout_throughput_quick_measures_every_contender(tmp_path):
    run_quick("rollout_throughput.py", tmp_path)
    record = json.loads((tmp_path / "rollout_throughput.json").read_text())
    tiny = record["models"]["tiny"]
    assert set(tiny) >= {"env_rollout", "env_rollout_immediate", "generate", "iteration"}
    assert all(tiny[k]["tokens_per_s"] > 0 for k in ("env_rollout", "env_rollout_immediate", "generate", "iteration"))
    assert record["ratio_vs_generate"] == tiny["ratio_vs_generate"] > 0


def test_rollout_profile_quick_splits_each_loop_into_parts_that_add_up(tmp_path):
    run_quick("rollout_profile.py", tmp_path)
    record = json.loads((tmp_path / "rollout_profile_tiny.json").read_text())
    results = record["results"]
    assert set(results) == {"env_rollout", "sampler", "generate"} and record["parts"][-1] == "other"
    for loop, r in results.items():
        s = r["seconds"]
        assert r["tokens_per_s"] > 0 and s["forward"] > 0 and s["attention"] > 0, loop
        assert s["cache_update"] + s["attention"] < s["forward"] and s["other"] >= 0, loop  # nothing counted twice
    assert results["env_rollout"]["seconds"]["env"] > 0 == results["sampler"]["seconds"]["env"]
    assert results["generate"]["seconds"]["draw"] > 0 and results["sampler"]["seconds"]["draw"] > 0


def test_env_throughput_quick_reports_both_goals(tmp_path):
    run_quick("env_throughput.py", tmp_path)
    record = json.loads((tmp_path / "env_throughput.json").read_text())
    assert set(record["goals_met"]) == {"single_vs_minimal", "vector64_vs_single"}
    assert all(r["token_steps_per_s"] > 0 for r in record["results"].values())


def test_reward_overhead_quick_measures_every_component(tmp_path):
    run_quick("reward_overhead.py", tmp_path)
    results = json.loads((tmp_path / "reward_overhead.json").read_text())["results"]
    assert "bare vector env" in results and len(results) > 1
    assert results["bare vector env"]["overhead_us_per_token"] == 0


def test_task_baselines_quick_scores_every_task(tmp_path):
    from textgym import TASK_NAMES
    from textgym.tasks.conversations import GAMES

    run_quick("task_baselines.py", tmp_path)
    results = json.loads((tmp_path / "task_baselines.json").read_text())["results"]
    assert set(results) == set(TASK_NAMES) | set(GAMES)
    assert all(r["episodes"] == 8 and r["gold_mean"] >= r["base_mean"] for r in results.values())
    for r in results.values():  # the position is the base's place between floor and gold
        assert r["floor_mean"] < r["gold_mean"]
        assert r["base_position"] == pytest.approx((r["base_mean"] - r["floor_mean"]) / (r["gold_mean"] - r["floor_mean"]))
    assert results["Sentiment"]["floor_mean"] == 0.5  # the empty completion is neutral


def test_learnability_quick_trains_every_task_and_scores_it_against_its_base(tmp_path):
    from textgym.tasks import TASKS

    run_quick("learnability.py", tmp_path)
    record = json.loads((tmp_path / "learnability.json").read_text())
    assert set(record["results"]) == set(TASKS)
    for task, r in record["results"].items():
        assert r["reached"] in ("0/1", "1/1") and r["base_test_score"] < r["threshold"]
        assert r["gain_mean"] == pytest.approx(r["test_score_mean"] - r["base_test_score"])
    for run in record["runs"]:  # stopped by the budget (200 tokens) or the threshold, whichever came first
        assert run["config"]["reward_mode"] == "sparse" and run["config"]["env_id"] == TASKS[run["task"]].env_id
        assert run["tokens"] >= 200 or run["tokens_to_threshold"] is not None
    assert (tmp_path / "learnability.png").stat().st_size > 0


def test_conversation_learning_quick_trains_every_game_with_ppo_and_grpo(tmp_path):
    from textgym import CONVERSATION_NAMES

    run_quick("conversation_learning.py", tmp_path)
    record = json.loads((tmp_path / "conversation_learning.json").read_text())
    assert set(record["results"]) == {f"{game}/{algo}" for game in CONVERSATION_NAMES for algo in ("ppo", "grpo")}
    for r in record["results"].values():
        assert r["gain_mean"] == pytest.approx(r["test_score_mean"] - r["base_test_score"])
    assert all(run["tokens"] >= 100 and len(run["curve"]["score"]) >= 1 for run in record["runs"])
    assert (tmp_path / "conversation_learning.png").stat().st_size > 0


def test_conversation_throughput_quick_compares_a_game_with_the_single_turn_rollout(tmp_path):
    run_quick("conversation_throughput.py", tmp_path)
    record = json.loads((tmp_path / "conversation_throughput.json").read_text())
    assert set(record["results"]) == {"single_turn", "GuessNumber", "lm_user"}
    for name in ("GuessNumber", "lm_user"):  # a scripted game, and a model writing the user's replies
        multi = record["results"][name]
        assert multi["policy_tokens_per_s"] > 0 and multi["all_tokens_per_s"] > multi["policy_tokens_per_s"]
        assert record["ratio_vs_single_turn"][name] == pytest.approx(
            multi["policy_tokens_per_s"] / record["results"]["single_turn"]["policy_tokens_per_s"])


def test_learning_quick_trains_and_scores_every_run(tmp_path):
    run_quick("learning.py", tmp_path)
    runs = json.loads((tmp_path / "learning.json").read_text())["runs"]
    assert set(runs) == {"sentiment-ppo", "sentiment-grpo"}
    assert all(r["tokens"] > 0 and 0 <= r["test_score"] <= 1 for r in runs.values())
    assert (tmp_path / "learning.png").stat().st_size > 0


def test_trainer_memory_quick_runs_each_contender_in_its_own_process(tmp_path):
    run_quick("trainer_memory.py", tmp_path)
    record = json.loads((tmp_path / "trainer_memory.json").read_text())
    contenders = record["contenders"]
    assert set(contenders) == {"lora_without_reference", "lora_with_kl", "full_with_kl", "textgym_grpo", "trl_grpo",
                               "textgym_grpo_glibc_default", "textgym_grpo_fixed_mmap", "trl_grpo_fixed_mmap"}
    assert contenders["lora_with_kl"]["trainable_parameters"] < contenders["full_with_kl"]["trainable_parameters"]
    assert record["ratio_lora_kl_vs_no_reference"] > 0
    # our GRPO and TRL's took one pass over one generation of the same shape
    assert contenders["textgym_grpo"]["optimizer_steps"] == contenders["trl_grpo"]["optimizer_steps"] == 2
    assert record["peak_memory_ratio_vs_trl"] == pytest.approx(
        contenders["textgym_grpo"]["peak_mib"] / contenders["trl_grpo"]["peak_mib"])
    assert record["peak_memory_ratio_vs_trl_glibc_default"] == pytest.approx(
        contenders["textgym_grpo_glibc_default"]["peak_mib"] / contenders["trl_grpo"]["peak_mib"])
    assert record["peak_memory_ratio_vs_trl_fixed_mmap"] == pytest.approx(
        contenders["textgym_grpo_fixed_mmap"]["peak_mib"] / contenders["trl_grpo_fixed_mmap"]["peak_mib"])


def test_sb3_throughput_quick_compares_cached_and_naive_policies(tmp_path):
    run_quick("sb3_throughput.py", tmp_path)
    record = json.loads((tmp_path / "sb3_throughput.json").read_text())
    assert len(record["results"]) == 2 and record["ratio"] > 0


def test_sb3_learning_quick_evaluates_before_and_after(tmp_path):
    run_quick("sb3_learning.py", tmp_path)
    record = json.loads((tmp_path / "sb3_learning_ppo.json").read_text())
    assert len(record["curve"]) == 2 and record["curve"][1]["env_steps"] > 0
    assert (tmp_path / "sb3_learning_ppo.png").stat().st_size > 0


def test_study_goal_counts_runs_short_of_the_threshold_as_the_whole_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from immediate_vs_sparse import goal

    def cell(reached, score=0.9, std=0.01, earliest=4_000):
        return {"tokens_to_threshold": reached, "test_score_mean": score, "test_score_std": std,
                "reached": f"{sum(t is not None for t in reached)}/{len(reached)}", "earliest_tokens_mean": earliest}

    # Sparse never reaches it within 200k: dense's 60k is at most 0.3x (sparse's true tokens are >= 200k).
    met = goal({"sparse": cell([None, None]), "immediate": cell([60_000, 60_000])}, 200_000)
    assert met == {"best": "immediate", "token_ratio": 0.3, "sparse_reached": "0/2", "met": True,
                   "floor_ratio": 0.02, "resolvable": True}
    # Sparse crosses at 6k, and no run can cross before its 4th iteration at 4k: 0.5x is out of reach.
    early = goal({"sparse": cell([6_000]), "immediate": cell([4_000]), "learned": cell([5_000], earliest=3_500)},
                 200_000)
    assert early["floor_ratio"] == 3_500 / 6_000 and not early["resolvable"] and not early["met"]
    # One lucky seed is no longer a mean of 10k: the other counts as the budget, and a mode with a
    # run short of the threshold cannot meet the goal.
    partial = goal({"sparse": cell([100_000, 100_000]), "learned": cell([10_000, None]),
                    "immediate": cell([90_000, 90_000])}, 200_000)
    assert partial["best"] == "immediate" and partial["token_ratio"] == 0.9 and not partial["met"]
    lucky = goal({"sparse": cell([100_000, 100_000]), "learned": cell([10_000, None])}, 1_000_000)
    assert lucky["best"] == "learned" and lucky["token_ratio"] > 0.5 and not lucky["met"]
    # Fast but worse than sparse by more than one std: not met.
    assert not goal({"sparse": cell([100_000]), "immediate": cell([10_000], score=0.5)}, 200_000)["met"]
    assert goal({"sparse": cell([100_000]), "immediate": cell([None])}, 200_000)["best"] is None


def test_study_update_refuses_before_any_run_to_keep_cells_of_another_threshold(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from immediate_vs_sparse import stale_cells

    old = {"thresholds": {"Keywords": 0.715, "Sentiment": 0.79}, "budgets": {"Keywords": 200_000, "Sentiment": 16_000},
           "runs": [{"task": "Keywords", "algo": a, "mode": m, "seed": 0} for a in ("ppo", "grpo")
                    for m in ("sparse", "online")] + [{"task": "Sentiment", "algo": "ppo", "mode": "sparse", "seed": 0}]}
    rebuilt = {"Keywords": 0.730}
    ppo = [("Keywords", "ppo", "sparse"), ("Keywords", "ppo", "online")]
    assert stale_cells(old, ppo, rebuilt, {"Keywords": 200_000}) == [
        "Keywords/grpo/online (threshold 0.715, budget 200,000)", "Keywords/grpo/sparse (threshold 0.715, budget 200,000)"]
    every_cell = ppo + [("Keywords", "grpo", "sparse"), ("Keywords", "grpo", "online")]
    assert stale_cells(old, every_cell, rebuilt, {"Keywords": 200_000}) == []  # Sentiment's cells are not its task
    assert stale_cells(old, ppo, {"Keywords": 0.715}, {"Keywords": 200_000}) == []  # same threshold: kept as they are
    assert len(stale_cells(old, ppo, {"Keywords": 0.715}, {"Keywords": 100_000})) == 2  # another budget


def test_study_run_log_survives_a_line_cut_short_by_a_kill(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from immediate_vs_sparse import Run, RunLog

    path, sources = tmp_path / "runs.jsonl", {"potential": {"rollout_tokens": 10, "report": {"r": 0.5}}}
    runs = [Run("Sentiment", "ppo", mode, 0, 100, 8, {}) for mode in ("sparse", "learned", "implicit")]
    RunLog(path).add(runs[0], sources, {"test_score": 0.1})
    with path.open("a") as log:
        log.write('{"key": "Sentiment/ppo/implicit')  # killed while writing
    log = RunLog(path)
    assert log.finished(runs[0], sources) == {"test_score": 0.1} and log.finished(runs[2], sources) is None
    log.add(runs[1], sources, {"test_score": 0.2})
    again = RunLog(path)
    assert again.finished(runs[1], sources) == {"test_score": 0.2}
    # A learned run stands only for one whose potential fitted the same; a sparse one needs no source.
    refit = {"potential": {"rollout_tokens": 10, "report": {"r": 0.6}}}
    assert again.finished(runs[1], refit) is None and again.finished(runs[0], refit) == {"test_score": 0.1}


def test_results_files_of_other_models_and_devices_never_overwrite_tiny_on_cpu(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from common import results_file

    out = Path("results")
    names = [results_file(out, "vs_trl", model, device).name
             for model in ("tiny", "gpt2-small") for device in ("cpu", "cuda")]
    assert names == ["vs_trl.json", "vs_trl_cuda.json", "vs_trl_gpt2-small.json", "vs_trl_gpt2-small_cuda.json"]


def test_loop_profile_quick_splits_both_loops_into_phases(tmp_path):
    run_quick("loop_profile.py", tmp_path)
    record = json.loads((tmp_path / "loop_profile.json").read_text())
    assert set(record["loops"]) == {"ours", "trl"}
    for loop in record["loops"].values():
        phases = loop["seconds_per_generation"]
        assert min(phases.values()) >= 0 and phases["generation"] > 0 and phases["update: backward"] > 0
        assert loop["total_per_generation"] == pytest.approx(sum(phases.values()))
        assert loop["total_per_generation"] < loop["loop_seconds"]  # the second of two generations


def test_calculator_habits_quick_counts_each_split(tmp_path):
    run_quick("calculator_habits.py", tmp_path)
    results = json.loads((tmp_path / "calculator_habits.json").read_text())["results"]
    assert set(results) == {"train", "test"}
    for counts in results.values():
        assert counts["episodes"] == 16 and counts["called"] <= 16
        assert counts["call_copies_question"] <= counts["called"] and counts["answer_copies_tool"] <= counts["called"]
        assert counts["right_with_miscopied_call"] <= counts["right"] <= 16


def test_calculator_habits_reads_a_copied_and_a_worked_out_game(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from calculator_habits import habits

    prompt = "<|user|>What is 87 plus 30?<|end|><|assistant|>"
    copied = habits(prompt, "<calc>87+30</calc><|end|><|tool|>117<|end|><|assistant|>The answer is 117.<|end|>", 1.0)
    assert copied == {"called": True, "call_copies_question": True, "answer_copies_tool": True, "right": True,
                      "right_with_miscopied_call": False}
    worked = habits(prompt, "<calc>86+30</calc><|end|><|tool|>116<|end|><|assistant|>The answer is 117.<|end|>", 1.0)
    assert worked["called"] and not worked["call_copies_question"] and not worked["answer_copies_tool"]
    assert worked["right_with_miscopied_call"]
    assert not habits(prompt, "The answer is 457.<|end|>", 0.0)["called"]
