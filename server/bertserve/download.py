"""`bertserve download`: fill the hub cache with a model ahead of time, for images and air-gapped hosts.

It fetches exactly what `serve` reads of a hub model (`bertserve.model.hub`)
into the hub cache, so that ``HF_HUB_OFFLINE=1 bertserve serve --model ID``
(same ``--revision`` and ``--model-cache-dir``) loads it with no network.
"""

from __future__ import annotations

import argparse
import os
import sys

from bertserve.model import hub
from bertserve.settings import add_setting_flags, config_or_exit
from bertserve.settings_table import SETTINGS_BY_KEY

DOWNLOAD_SETTINGS = ("model.revision", "model.cache_dir")


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``download`` on the CLI's subcommands."""
    download = commands.add_parser(
        "download",
        help="fetch a hub model into the hub cache (what serve reads), for offline use",
        description=(
            "Fetch what `serve` reads of a hub model (config, weights in safetensors when the model has them, "
            "tokenizer files) into the hub cache and print where they went. The token is HF_TOKEN or the hub "
            "library's stored login. Then `HF_HUB_OFFLINE=1 bertserve serve --model MODEL` loads it with no network."
        ),
    )
    download.add_argument(SETTINGS_BY_KEY["model.name"].dest, metavar="MODEL", help="hub id (ORG/NAME)")
    add_setting_flags(download, DOWNLOAD_SETTINGS)
    download.set_defaults(handler=_download)


def _download(args: argparse.Namespace) -> int:
    config = config_or_exit(args, os.environ)
    model = config.model or ""
    if hub.is_folder(model):
        print(f"download error: {model} is a local folder; give a hub id (ORG/NAME)", file=sys.stderr)
        return 2
    try:
        folder = hub.fetch(
            model,
            revision=config.revision,
            cache_dir=config.cache_dir,
            progress=config.logging.progress_bars,
        )
    except hub.HubError as error:
        print(f"download error: {error}", file=sys.stderr)
        return 1
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    revision = config.revision or "the default branch"
    print(f"{model} at {revision} (commit {folder.name}) in the hub cache: {', '.join(files)}")
    print(folder)
    return 0
