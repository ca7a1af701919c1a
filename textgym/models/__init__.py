"""Tokenizers and causal LMs by name: ``"tiny"`` (embedded), a local directory, or an HF hub id.

``"tiny"`` is a 4-layer GPT-2 and a byte-level BPE tokenizer that ship inside the package, so
everything in textgym works offline. ``python -m textgym.models.build_tiny`` rebuilds it.

Example:
    >>> from textgym.models import load_tokenizer, load_causal_lm
    >>> tokenizer = load_tokenizer("tiny")
    >>> model = load_causal_lm("tiny", device="cpu")
    >>> tokenizer.pad_token != tokenizer.eos_token, tokenizer.padding_side
    (True, 'left')
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.activations import ACT2FN, NewGELUActivation

TINY = "tiny"
ACCEPTED = '"tiny" (the embedded model), a local directory saved with save_pretrained, or an HF hub id'


def tiny_path() -> Path:
    """Where the embedded model lives inside the installed package."""
    return Path(str(resources.files("textgym.models") / "tiny"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve(name_or_path: str | Path) -> str:
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"expected a model name or path ({ACCEPTED}), got {type(name_or_path).__name__}")
    name = str(name_or_path)
    if name == TINY:
        return str(tiny_path())
    if Path(name).is_dir():
        return name
    # An HF hub id has the form "name" or "org/name"; anything that looks like a path but does
    # not exist is a typo, and is reported as such rather than sent to the hub.
    if Path(name).suffix or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"unknown model or tokenizer {name!r}: no such directory. Accepted: {ACCEPTED}")
    return name


def _from_pretrained(loader, name_or_path: str | Path, what: str, **kwargs):
    source = _resolve(name_or_path)
    try:
        return loader(source, **kwargs)
    except OSError as error:  # transformers raises OSError for missing files and offline misses
        raise ValueError(
            f"could not load {what} {str(name_or_path)!r}. Accepted: {ACCEPTED}. Hub ids need network "
            "access or a local HF cache (HF_HUB_OFFLINE=1 forbids downloads)."
        ) from error


def load_tokenizer(name_or_path: str | Path, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer, padded on the left, with EOS as pad when it has no pad token."""
    tokenizer = _from_pretrained(
        AutoTokenizer.from_pretrained, name_or_path, "tokenizer", trust_remote_code=trust_remote_code
    )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {str(name_or_path)!r} has no EOS token; textgym episodes end at EOS")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # observations are left-padded, so the last column is the newest token
    return tokenizer


def _load_model(
    auto_class, what: str, name_or_path: str | Path, device, dtype, trust_remote_code: bool
) -> PreTrainedModel:
    model = _from_pretrained(
        auto_class.from_pretrained, name_or_path, what, dtype=dtype, trust_remote_code=trust_remote_code
    )
    use_fused_gelu(model)
    return model.to(device or default_device()).eval()


def use_fused_gelu(model: nn.Module) -> None:
    """Swap GPT-2's ``gelu_new`` (the tanh-approximate GELU as a chain of elementwise ops) for
    PyTorch's fused kernel of the same function: one kernel instead of a chain is faster, and
    logits agree to ~1e-5. The config follows, so a saved model reloads the same way.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16))
        >>> use_fused_gelu(model)
        >>> type(model.transformer.h[0].mlp.act) is type(ACT2FN["gelu_pytorch_tanh"]), model.config.activation_function
        (True, 'gelu_pytorch_tanh')
    """
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, ACT2FN["gelu_pytorch_tanh"])  # GELUTanh (PytorchGELUTanh before 4.57)
    if getattr(model.config, "activation_function", None) == "gelu_new":
        model.config.activation_function = "gelu_pytorch_tanh"


def load_causal_lm(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM in eval mode on ``device`` (default: CUDA when present, else CPU)."""
    return _load_model(AutoModelForCausalLM, "causal LM", name_or_path, device, dtype, trust_remote_code)


def load_sequence_classifier(
    name_or_path: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a sequence-classification model (a reward model or a classifier) in eval mode."""
    return _load_model(
        AutoModelForSequenceClassification, "sequence classifier", name_or_path, device, dtype, trust_remote_code
    )


def _siblings(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")


def recover_directory(out: str | Path) -> None:
    """Finish or undo an ``atomic_directory`` swap that a kill interrupted.

    A kill between the swap's two renames leaves only ``out.old`` (the previous version): it is
    renamed back. A kill after them leaves a stale ``out.old`` beside the new ``out``: it is
    removed. A half-written ``out.tmp`` is always removed.
    """
    out = Path(out)
    tmp, old = _siblings(out)
    shutil.rmtree(tmp, ignore_errors=True)
    if old.is_dir() and not out.exists():
        old.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield a sibling temp dir to fill; on success it is swapped in for ``out``.

    A crash or a kill at any point (or an exception inside the block) leaves either the previous
    ``out`` or the new one, never a half-written one: the swap is two renames (``out`` to
    ``out.old``, then the temp dir to ``out``), and ``recover_directory``, run first, repairs a
    swap that a kill interrupted.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> out = Path(tempfile.mkdtemp()) / "model"
        >>> with atomic_directory(out) as tmp:
        ...     _ = (tmp / "weights").write_text("v1")
        >>> (out / "weights").read_text()
        'v1'
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"cannot save into {str(out)!r}: it is a file; expected a directory path")
    recover_directory(out)
    tmp, old = _siblings(out)
    tmp.mkdir(parents=True)
    yield tmp
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def save_pretrained_atomically(out: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                               extra_files: dict[str, str] | None = None,
                               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save ``model`` (with ``state_dict`` as its weights, when given) and ``tokenizer`` in HF format
    (safetensors), with ``extra_files`` (name -> text) beside them, atomically (see
    ``atomic_directory``)."""
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return Path(out)
