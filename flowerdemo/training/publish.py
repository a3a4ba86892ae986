"""Upload a model folder (``model.pt``, model card, metrics, plots) to the Hugging Face Hub.

    python -m flowerdemo.training.publish --folder weights --repo your-name/flowerdemo-lite0

Creates the repo if needed, uploads the folder in one commit and prints the commit's id and URL, so the app
can pin it: ``FLOWERDEMO_MODEL=hf://your-name/flowerdemo-lite0@<commit>``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from ..core.artifact import MODEL_FILE, ModelLoadError, load_artifact

UPLOADED_PATTERNS = ["model.pt", "README.md", "metrics.json", "*.png"]


class PublishError(RuntimeError):
    """Publishing failed for a reason the user can act on; the message says which."""


def _network_errors() -> tuple:
    """huggingface_hub raises its HTTP client's own errors for unreachable hosts (httpx or httpx2)."""
    errors = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token  # huggingface_hub: heavy to import, and only uploading needs it

    token = token or os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN, pass --token, or run `hf auth login` (needs write access)")
    return token


def check_folder(folder: Path) -> None:
    """Refuse to publish a folder the app could not load."""
    if not (folder / MODEL_FILE).is_file():
        raise PublishError(f"{folder} has no {MODEL_FILE}: export one with python -m flowerdemo.training.export")
    if not (folder / "README.md").is_file():
        raise PublishError(f"{folder} has no README.md model card: export writes one")
    try:
        load_artifact(folder / MODEL_FILE)
    except ModelLoadError as error:
        raise PublishError(f"refusing to publish an invalid model: {error}") from None


def publish(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False,
            revision: str | None = None, commit_message: str = "Upload flowerdemo model", api=None):
    """Create ``repo_id`` (if missing) and upload ``folder``; returns huggingface_hub's ``CommitInfo``."""
    from huggingface_hub import HfApi  # huggingface_hub: heavy to import, and only uploading needs it
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    check_folder(folder)
    api = api or HfApi(token=resolve_token(token))
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model", revision=revision,
                                 commit_message=commit_message, allow_patterns=UPLOADED_PATTERNS)
    except HfHubHTTPError as error:
        raise PublishError(f"the Hub refused the upload to {repo_id}: {str(error).splitlines()[0]}") from None
    except _network_errors() as error:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise PublishError(f"the Hub at {endpoint} is unreachable ({type(error).__name__}: {error}); "
                           "check the network or HF_ENDPOINT and try again") from None


def get_args_parser(add_help: bool = True, prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Publish a model folder to the Hugging Face Hub", add_help=add_help,
                                     prog=prog)
    parser.add_argument("--folder", default="weights", help="model folder written by flowerdemo.training.export")
    parser.add_argument("--repo", required=True, help="owner/name of the Hub model repo")
    parser.add_argument("--token", default=None, help="default: HF_TOKEN or the token saved by `hf auth login`")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", default=None, help="branch to commit to (default: main)")
    parser.add_argument("--message", default="Upload flowerdemo model")
    return parser


def main(args) -> int:
    try:
        info = publish(args.folder, args.repo, args.token, args.private, args.revision, args.message)
    except PublishError as error:
        print(f"publish failed: {error}", file=sys.stderr)
        return 1
    print(f"commit {info.oid}\n{info.commit_url}\npin it with FLOWERDEMO_MODEL=hf://{args.repo}@{info.oid}")
    return 0


def cli(argv=None, prog: str | None = None) -> int:
    return main(get_args_parser(prog=prog).parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
