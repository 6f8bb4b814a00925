"""Secrets never reach a log or a saved file: the values of environment variables whose names look like
credentials are replaced by <redacted> in what tunelab prints, writes to a config and gives W&B."""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)
MIN_SECRET_LENGTH = 6  # shorter values ("1", "true") would redact ordinary text
REDACTED = "<redacted>"


def secret_values(environ=os.environ) -> list[str]:
    """Values of environment variables whose names look like credentials (WANDB_API_KEY, HF_TOKEN, *_SECRET...)."""
    values = {value for name, value in environ.items() if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(data, secrets: list[str] | None = None):
    """`data` (dicts, lists, strings, numbers) with every secret value replaced by <redacted>."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(data, dict):
        return {redact(key, secrets): redact(value, secrets) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact(item, secrets) for item in data]
    if isinstance(data, str):
        for secret in secrets:
            data = data.replace(secret, REDACTED)
    return data
