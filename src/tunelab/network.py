"""Detect once, before anything loads, that the Hugging Face Hub cannot be reached.

Without network, each Hub lookup waits for its own timeouts and retries (about a minute before a
model id fails); with HF_HUB_OFFLINE set, the libraries fail at once. So when a run names a Hub
model or dataset, one short connection attempt decides, and without an answer the run goes
offline: a cached copy still loads, anything else fails at once with its one-line error.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from tunelab.console import say

PROBE_TIMEOUT_S = 3.0


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub opens within `timeout` seconds, name lookup included (which
    ignores socket timeouts, hence the thread)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    answered = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
            answered.set()
        except OSError:
            pass

    threading.Thread(target=connect, daemon=True).start()
    return answered.wait(timeout)


def go_offline_unless_hub_reachable(hub_names: list[str]) -> None:
    """When `hub_names` (Hub ids the run needs) is not empty and the Hub does not answer, switch the Hub
    libraries to offline mode for this process and its children."""
    import huggingface_hub.constants

    if not hub_names or huggingface_hub.constants.HF_HUB_OFFLINE or hub_reachable():
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    say(f"no network: the Hugging Face Hub does not answer, so {', '.join(hub_names)} can only come from the "
        "local cache (working offline)")
