"""Upload a run's saved folder (the adapter, or the fully fine-tuned model) with its model card to the Hub.

With `push_to_hub` a run checks, before anything loads, that the Hub can be reached and a token is there,
and uploads after its report (huggingface_hub's HfApi.create_repo and upload_folder). `tunelab push RUN_DIR`
uploads a finished run later. The token is huggingface_hub's own (`hf auth login` or HF_TOKEN): tunelab
never reads, prints or saves it.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tunelab.console import say
from tunelab.errors import TunelabError

NOT_UPLOADED = ("training_args.bin",)  # the Trainer's pickled arguments: nothing a user of the model needs


def check_hub_access() -> None:
    """Refuse at once, on one line, what would make an upload fail after training: offline mode, no token,
    no answer from the Hub."""
    import huggingface_hub.constants
    from huggingface_hub import get_token

    from tunelab.network import hub_reachable

    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise TunelabError("push_to_hub needs the Hugging Face Hub, but HF_HUB_OFFLINE is set: unset it, or set "
                           "--push_to_hub false and upload later with `tunelab push RUN_DIR`")
    if get_token() is None:
        raise TunelabError("push_to_hub needs a Hugging Face token with write access: run `hf auth login` or set "
                           "HF_TOKEN, or set --push_to_hub false")
    if not hub_reachable():
        raise TunelabError("push_to_hub needs the Hugging Face Hub, which does not answer (no network?): connect, "
                           "or set --push_to_hub false and upload later with `tunelab push RUN_DIR`")


def push_folder(folder: Path, repo_id: str, private: bool) -> str:
    """Create the Hub repository (if missing) and upload `folder` into it; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    # offline mode and file errors are OSErrors; network errors those of the HTTP library HfHubHTTPError extends
    failures = (OSError, ValueError, *HfHubHTTPError.__bases__)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=folder, repo_id=repo_id, ignore_patterns=list(NOT_UPLOADED),
                                   commit_message=f"Upload {folder.name} and model card (tunelab)")
    except failures as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise TunelabError(f"uploading {folder} to the Hub repository {repo_id} failed ({type(error).__name__}: "
                           f"{reason}): check the network and that your token may write to {repo_id}, then run "
                           f"`tunelab push {folder.parent}`") from None
    return commit.commit_url


def push_run(run_dir: str | Path, repo_id: str | None = None, private: bool | None = None) -> str:
    """Upload a run's saved folder and card to `repo_id` (default: the run's hub_model_id); returns the URL."""
    from tunelab.report.card import saved_folder

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    repo_id = repo_id or config.get("hub_model_id")
    folder = saved_folder(run_dir)
    if folder is None or not (folder / "README.md").is_file():
        raise TunelabError(f"{run_dir} has no trained adapter or model with its card: finish the run first "
                           "(its train and report stages)")
    if not repo_id:
        raise TunelabError(f"{config_path} names no hub_model_id: give the repository, --hub_model_id OWNER/NAME")
    url = push_folder(folder, repo_id, config.get("hub_private", True) if private is None else private)
    say(f"Uploaded {folder} to https://huggingface.co/{repo_id} ({url})")
    return url
