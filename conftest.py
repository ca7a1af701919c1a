"""Repository-wide pytest setup: tests never touch the network."""

import os

# huggingface_hub reads this when first imported, so it is set before any test module loads.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Importing a __main__ module runs it; doctest collection must not rewrite the shipped prompts.
collect_ignore = ["textgym/data/__main__.py"]
