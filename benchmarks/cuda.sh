#!/usr/bin/env bash
# The CUDA measurements in one go, for a GPU machine whose time is short: the sharded-policy test on
# CUDA, then loop_profile.py (where our GRPO loop and TRL's spend their time), rollout_throughput.py,
# vs_trl.py (GPT-2-small shape, then "tiny"), trainer_memory.py and conversation_throughput.py
# (whether a GPU reads the other side's replies nearly for free), each writing its *_cuda.json into
# OUT, most important first, each under its own time limit so that one overrun costs only its own
# figures.
#
# The limits add up to about 14 minutes, more than one 10-minute device call: PART 1 runs the first
# four steps (at most 7 minutes), PART 2 the other three; no PART runs all seven.
#
#     bash benchmarks/cuda.sh OUT [PART]
set -u
out=${1:?usage: bash benchmarks/cuda.sh OUT [1|2]}
part=${2:-all}
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

step() {  # step SECONDS COMMAND...: run it under a time limit, report its exit status and duration
    local limit=$1 start=$SECONDS
    shift
    echo "== $* (limit ${limit} s)"
    timeout "$limit" "$@"
    echo "== exit $? after $((SECONDS - start)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, trl, textgym, agents.trainers; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'cuda', torch.cuda.get_device_name())"
if [[ $part != 2 ]]; then
    step 60 python3 -m pytest -q -p no:cacheprovider tests/test_trainers.py -k "sharded_policy_trains"
    step 90 python3 benchmarks/loop_profile.py --generations 12 --skip 2 --out "$out"
    step 120 python3 benchmarks/rollout_throughput.py --gpt2-rounds 3 --out "$out"
    step 150 python3 benchmarks/vs_trl.py --model gpt2-small --generations 5 --rounds 2 --out "$out"
fi
if [[ $part != 1 ]]; then
    step 170 python3 benchmarks/trainer_memory.py --out "$out"
    step 120 python3 benchmarks/vs_trl.py --generations 10 --rounds 2 --episodes 128 \
        --contenders textgym-grpo trl-grpo --out "$out"
    step 120 python3 benchmarks/conversation_throughput.py --out "$out"
fi
