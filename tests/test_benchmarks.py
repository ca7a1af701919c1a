"""Smoke runs of the benchmarks' ``--quick`` modes: they run from a clone and write their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run_quick(script: str, out: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out)], check=True, env=env,
                   cwd=out, timeout=900)


def test_immediate_vs_sparse_quick_covers_every_task_algo_and_mode(tmp_path):
    from textgym.tasks import TASKS

    run_quick("immediate_vs_sparse.py", tmp_path)
    record = json.loads((tmp_path / "immediate_vs_sparse.json").read_text())
    assert set(record["results"]) == set(TASKS)
    for task, algos in record["results"].items():
        assert set(algos) == {"ppo", "grpo"}
        for modes in algos.values():
            assert set(modes) == {"sparse", "immediate"}
            for stats in modes.values():
                assert len(stats["tokens_to_threshold"]) == record["seeds"]
                assert isinstance(stats["test_score_mean"], float) and isinstance(stats["final_kl_mean"], float)
        assert (tmp_path / f"immediate_vs_sparse_{task.lower()}.png").stat().st_size > 0
    assert {r["mode"] for r in record["runs"]} == {"sparse", "immediate"}
    assert all(r["steps"][-1] >= record["budgets"][r["task"]] for r in record["runs"])


def test_vs_trl_quick_compares_our_grpo_with_trls(tmp_path):
    run_quick("vs_trl.py", tmp_path)
    record = json.loads((tmp_path / "vs_trl.json").read_text())
    assert record["throughput_ratio_vs_trl"] > 0 and record["wall_time_ratio_trl_over_ours"] > 0
    results = record["results"]
    assert set(results) == {"textgym-grpo", "textgym-ppo", "trl-grpo"}
    steps = {r["optimizer_steps"] for r in results.values()}
    assert steps == {16}  # 2 generations x 4 passes x 2 minibatches, for every contender
    for r in results.values():
        assert r["tokens"] > 0 and r["peak_mib"] > 0 and 0 <= r["test_score"] <= 1


def test_rollout_throughput_quick_measures_every_contender(tmp_path):
    run_quick("rollout_throughput.py", tmp_path)
    record = json.loads((tmp_path / "rollout_throughput.json").read_text())
    tiny = record["models"]["tiny"]
    assert set(tiny) >= {"env_rollout", "env_rollout_immediate", "generate", "iteration"}
    assert all(tiny[k]["tokens_per_s"] > 0 for k in ("env_rollout", "env_rollout_immediate", "generate", "iteration"))
    assert record["ratio_vs_generate"] == tiny["ratio_vs_generate"] > 0
