"""tunelab: LoRA/QLoRA fine-tuning recipes for small causal LMs, ending in a before/after report."""

__version__ = "0.1.0"
