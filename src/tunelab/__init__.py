"""tunelab: LoRA/QLoRA fine-tuning recipes for small causal LMs, ending in a before/after report."""

import sys

from tunelab.console import quiet_third_party

__version__ = "0.1.0"

# A recipe file run directly imports tunelab before torch, transformers, PEFT and bitsandbytes, some of
# which log at import time; the entry points (cli.main, launch.recipe.run) call this again with their argv.
quiet_third_party(debug="--debug" in sys.argv)
