"""The ``textgym`` command line: train (batched and SB3), eval, list, config files and bad input."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from agents.cli import main
from agents.trainers.checkpoint import read_state
from agents.trainers.metrics import read_metrics

SMALL = ["--steps", "60", "--num-envs", "4", "--minibatch-size", "2", "--epochs", "1", "--device", "cpu", "--quiet",
         "--sample-prompts", "2"]


def test_train_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "textgym/Arithmetic-v0", "--algo", "rloo", "--group-size", "2", "--out", str(out), *SMALL]) == 0
    assert {"metrics.csv", "learning_curve.png", "samples.md", "checkpoint", "tensorboard"} <= {
        p.name for p in out.iterdir()}
    assert read_state(out / "checkpoint")["config"]["algo"] == "rloo"
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "6", "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "textgym/Arithmetic-v0 (test), 6 episodes" in printed and "score mean" in printed
    assert printed.count("\n- ") == 2


def test_yaml_config_sets_fields_and_flags_override_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("env_id: textgym/Arithmetic-v0\nalgo: grpo\ngroup_size: 2\nlr: 0.001\nkl_coef: 0.2\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--lr", "0.0005", "--out", str(out), *SMALL]) == 0
    saved = read_state(out / "checkpoint")["config"]
    assert (saved["env_id"], saved["algo"], saved["kl_coef"], saved["lr"]) == ("textgym/Arithmetic-v0", "grpo", 0.2,
                                                                               0.0005)


def test_resume_continues_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["train", "textgym/Arithmetic-v0", "--out", str(out), *SMALL]
    assert main(args) == 0
    steps = read_state(out / "checkpoint")["steps"]
    assert main([*args, "--resume", "--steps", "120"]) == 0
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["step"] >= 120 and read_state(out / "checkpoint")["steps"] > steps
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1))


@pytest.mark.parametrize("algo", ["sb3-ppo", "sb3-maskable-ppo"])
def test_train_with_stable_baselines3(tmp_path, algo):
    out = tmp_path / "run"
    assert main(["train", "textgym/Arithmetic-v0", "--algo", algo, "--out", str(out), "--steps", "48",
                 "--num-envs", "2", "--minibatch-size", "1", "--epochs", "1", "--device", "cpu", "--quiet"]) == 0
    assert {"model.zip", "model.safetensors"} <= {p.name for p in (out / "checkpoint").iterdir()}
    assert main(["train", "--resume", "--out", str(out)]) == 2  # SB3 runs start afresh
    rows = read_metrics(out / "metrics.csv")
    assert rows and 0 <= rows[-1]["objective/score"] <= 1 and "val/clipfrac" in rows[-1]


@pytest.mark.parametrize(("args", "message"), [
    (["train", "textgym/Nope-v0"], "unknown env id 'textgym/Nope-v0'; registered textgym ids are"),
    (["train", "--lr", "-1"], "lr must be > 0, got -1.0"),
    (["train", "--algo", "grpo", "--group-size", "1"], "group_size must be >= 2"),
    (["train", "--kl-target", "0"], "kl_target must be > 0"),
    (["train", "--kl-horizon", "0"], "kl_horizon must be a positive int, got 0"),
    (["train", "--num-envs", "6", "--minibatch-size", "4"], "must be a multiple of minibatch_size"),
    (["eval", "tiny"], "is not a textgym run; pass --env ID"),
    (["train", "--env-kwargs", '{"max_new_tokens": 0}'], "max_new_tokens must be >= 1, got 0"),
    (["train", "--reward-mode", "dense"], "reward_mode must be one of ['sparse', 'immediate', 'learned'"),
    (["train", "--resume", "--out", "no/such/run"], "no/such/run holds no checkpoint to resume from"),
    (["train", "--config", "no/such.yaml"], "config file 'no/such.yaml' does not exist"),
    (["train", "--config", "tests"], "config file 'tests' is a directory"),
    (["train", "--out", "pyproject.toml"], "out 'pyproject.toml' is a file; expected a directory"),
    (["train", "--seed", "-1"], "seed must be an int >= 0, got -1"),
    (["train", "--sample-prompts", "0"], "sample_prompts must be a positive int, got 0"),
    (["train", "--lr", "nan"], "lr must be a finite number, got nan"),
    (["train", "--vf-coef", "-0.5"], "vf_coef must be >= 0, got -0.5"),
    (["train", "--env-kwargs", "{max_new_tokens: 3}"], "expected a JSON object such as"),
    (["train", "--env-kwargs", "[1]"], "expected a JSON object, got '[1]'"),
    (["train", "--steps", "many"], "argument --steps: invalid int value: 'many'"),
    (["eval", "tests"], "tests is neither a textgym run (no checkpoint/) nor a saved model"),
    (["eval", "tiny", "--env", "textgym/Nope-v0"], "unknown env id 'textgym/Nope-v0'"),
    (["eval", "tiny", "--env", "textgym/Arithmetic-v0", "--split", "val"], "split must be one of ['train', 'test']"),
    (["eval", "tiny", "--env", "textgym/Arithmetic-v0", "--seed", "-1"], "--seed >= 0, got 64 and -1"),
])
def test_bad_input_is_one_clear_line(args, message, capsys):
    assert main(args) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def test_bad_config_files_and_checkpoints_name_the_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("lr: [1e-3\n")
    assert main(["train", "--config", str(config)]) == 2
    assert f"config file '{config}' is not valid YAML" in capsys.readouterr().err
    config.write_text("lr: 1e-3\nsteps: lots\n")  # YAML reads 1e-3 as a string: converted; "lots" is not an int
    assert main(["train", "--config", str(config)]) == 2
    assert "field steps must be int, got str 'lots'" in capsys.readouterr().err

    out = tmp_path / "run"
    assert main(["train", "textgym/Arithmetic-v0", "--out", str(out), *SMALL]) == 0
    weights = out / "checkpoint" / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--steps", "120", "--quiet"]) == 2
    assert f"checkpoint file {weights} is corrupt (truncated?)" in capsys.readouterr().err
    (out / "checkpoint" / "state.json").write_text('{"config": ')
    assert main(["eval", str(out)]) == 2
    assert f"checkpoint file {out / 'checkpoint' / 'state.json'} is corrupt" in capsys.readouterr().err


def test_resume_refuses_flags_that_differ_from_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "textgym/Arithmetic-v0", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.001", "--algo", "grpo", "--seed", "0"]) == 2
    error = capsys.readouterr().err
    assert "these flags differ: --lr 0.001 (the run's: 1e-05), --algo 'grpo' (the run's: 'ppo')" in error
    assert "--seed" not in error  # the same value as the run's is no change


def test_train_into_a_finished_run_is_refused_and_keeps_it(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "textgym/Arithmetic-v0", "--out", str(out), *SMALL]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"done: {out} (checkpoint/, learning_curve.png, metrics.csv, model/, samples.json, samples.md, tensorboard/)")
    metrics = (out / "metrics.csv").read_text()
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds a run" in error and "--resume" in error
    assert (out / "metrics.csv").read_text() == metrics


@pytest.mark.slow
def test_list_and_the_console_script(capsys):
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in ["Sentiment", "Keywords", "Summarize", "Arithmetic", "Preference", "TextGeneration"]:
        assert f"textgym/{name}-v0" in listed
    script = shutil.which("textgym")
    assert script, "the textgym console script is not installed"
    result = subprocess.run([script, "list"], capture_output=True, text=True, check=True)
    assert result.stdout == listed


def test_train_help_gives_every_config_field_a_line_of_help(capsys):
    from dataclasses import fields

    from agents.trainers import TrainConfig

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for f in fields(TrainConfig):
        if f.name != "env_id":
            flag = "--" + f.name.replace("_", "-")
            assert f"{flag} " in text and f"{f.metadata['help']} (default:" in text, f.name
