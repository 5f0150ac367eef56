"""Checkpoints from the hub: the files serving reads, fetched into the hub library's cache.

A model name is a checkpoint folder or a hub id (``ORG/NAME``). For a hub id,
`checkpoint_folder` returns the cache's snapshot folder for the revision,
downloading what serving reads (the config, the tokenizer files and one set of
weights, safetensors preferred; see `needed_files`) when it is missing, with
the hub library's download progress bars on stderr. Offline
(``HF_HUB_OFFLINE=1``) or when the hub cannot be reached, the snapshot comes
from the cache alone. Everything the hub library reads from its environment
applies: ``HF_TOKEN`` or the stored login, ``HF_HUB_CACHE`` / ``HF_HOME``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_PROGRESS_BARS``. Every
failure is a `HubError` with a one-line message saying what to do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import transformers
from huggingface_hub import HfApi, constants, get_cached_repo_tree, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    IncompleteSnapshotError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hub_tqdm

log = logging.getLogger(__name__)

CONFIG_FILES = ("config.json",)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)
# Weight layouts in order of preference: one file, or an index and its shards.
_WEIGHTS = (
    ("model.safetensors", "model.safetensors.index.json", re.compile(r"model-\d+-of-\d+\.safetensors")),
    ("pytorch_model.bin", "pytorch_model.bin.index.json", re.compile(r"pytorch_model-\d+-of-\d+\.bin")),
)
_DENIED = (401, 403)
_HTTP_LOGGER = httpx2.__name__


class HubError(Exception):
    """A model cannot be had from the hub or its cache; the message is one line saying why and what to do."""


def is_folder(model: str) -> bool:
    """Whether `model` names a local checkpoint folder (else it is a hub id)."""
    return Path(model).expanduser().is_dir()


def needed_files(names: Iterable[str]) -> list[str]:
    """The files of a repository that serving reads: config, tokenizer files, one set of weights.

    Weights are ``model.safetensors`` (or its index and shards) when the
    repository has them, else ``pytorch_model.bin`` (or its index and
    shards). Raises `HubError` without a config or weights.
    """
    available = set(names)
    files = [name for name in (*CONFIG_FILES, *TOKENIZER_FILES) if name in available]
    if "config.json" not in available:
        raise HubError("it has no config.json: not a transformers checkpoint")
    for single, index, shard in _WEIGHTS:
        if single in available:
            return [*files, single]
        if index in available:
            return [*files, index, *sorted(name for name in available if shard.fullmatch(name))]
    raise HubError("it has no weights in model.safetensors or pytorch_model.bin")


def cache_location(cache_dir: Path | str | None) -> Path:
    """The hub cache in use: `cache_dir`, else the hub library's own (``HF_HUB_CACHE``, ``HF_HOME``/hub)."""
    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()


def checkpoint_folder(
    model: str, *, revision: str | None = None, cache_dir: Path | str | None = None, progress: bool = True
) -> Path:
    """A folder `from_pretrained` can load: `model` itself when it is a folder, else its hub snapshot."""
    if is_folder(model):
        if revision is not None:
            log.warning("%s is a local folder: the revision %s is ignored", model, revision)
        return Path(model).expanduser()
    return fetch(model, revision=revision, cache_dir=cache_dir, progress=progress)


def fetch(
    model: str, *, revision: str | None = None, cache_dir: Path | str | None = None, progress: bool = True
) -> Path:
    """The cache's snapshot folder of hub id `model` at `revision`, with what `needed_files` names.

    Missing files are downloaded (download bars on stderr unless `progress`
    is false or ``HF_HUB_DISABLE_PROGRESS_BARS`` is set; the hub library shows
    them only on a terminal). Offline or with the hub out of reach, the
    snapshot must already be in the cache. Raises `HubError`.
    """
    shown = revision or constants.DEFAULT_REVISION
    try:
        with _requests_unlogged():
            files = _files_on_hub(model, revision)
            offline = files is None
            if offline:
                files = _files_in_cache(model, revision, cache_dir)
            folder = snapshot_download(
                model,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=files,
                local_files_only=offline,
                tqdm_class=None if progress else _NoBars,
            )
    except HubError as error:
        raise HubError(f"{model} (revision {shown}): {error}") from None
    except (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError) as error:
        raise HubError(_explain(error, model, shown, cache_dir)) from None
    except OSError as error:
        where = cache_location(cache_dir)
        raise HubError(f"{model} (revision {shown}): cannot use the hub cache {where}: {error}") from None
    if offline and not constants.is_offline_mode():
        log.warning("%s (revision %s): the hub cannot be reached; using the cached snapshot %s", model, shown, folder)
    return Path(folder)


@contextmanager
def _requests_unlogged() -> Iterator[None]:
    """The hub library's HTTP client logs every request at INFO: a line per file, noise in the server's log."""
    http_log = logging.getLogger(_HTTP_LOGGER)
    previous = http_log.level
    if previous == logging.NOTSET:  # nobody chose its level
        http_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        http_log.setLevel(previous)


def _files_on_hub(model: str, revision: str | None) -> list[str] | None:
    """What to fetch, from the hub's file list; None when the hub is out of reach (offline, no network, 5xx)."""
    if constants.is_offline_mode():
        return None
    try:
        info = HfApi().model_info(model, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code in _DENIED:
            raise
        log.debug("the hub answered %s; looking in the cache", _status(error))
        return None
    except (httpx2.TransportError, OfflineModeIsEnabled) as error:
        log.debug("the hub cannot be reached (%r); looking in the cache", error)
        return None
    return needed_files(sibling.rfilename for sibling in info.siblings or [])


def _files_in_cache(model: str, revision: str | None, cache_dir: Path | str | None) -> list[str] | None:
    """What to expect in the snapshot, from the file list a download left in the cache (None if there is none)."""
    try:
        return needed_files(f.path for f in get_cached_repo_tree(model, revision=revision, cache_dir=cache_dir))
    except CachedRepoTreeNotFoundError:
        return None


def _explain(error: Exception, model: str, revision: str, cache_dir: Path | str | None) -> str:
    """One line for a hub library error: what went wrong and what to do."""
    token = "HF_TOKEN or the hub library's stored login"
    where = f"{model} (revision {revision})"
    if isinstance(error, HFValidationError):
        return f"{model!r} is neither a checkpoint folder nor a valid hub id (ORG/NAME)"
    if isinstance(error, RevisionNotFoundError):
        return f"{model}: revision {revision} not found on the hub (a branch, tag or commit)"
    if isinstance(error, GatedRepoError):
        return f"{model} is gated: accept its conditions on the hub, then give a token of that account ({token})"
    if isinstance(error, RepositoryNotFoundError):
        status = _status(error)
        return f"{model}: no such model on the hub ({status}); if it is private, give a token with access ({token})"
    if isinstance(error, HfHubHTTPError):
        if error.response is not None and error.response.status_code in _DENIED:
            return f"{where}: the hub refused the token ({_status(error)}); give one with access to it ({token})"
        return f"{where}: the hub answered {_status(error)}"
    cache = cache_location(cache_dir)
    reason = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the hub cannot be reached"
    state = "is only partly" if isinstance(error, IncompleteSnapshotError) else "is not"
    return (
        f"{where} {state} in the hub cache {cache} and {reason}: "
        f"run `bertserve download {model}` where the hub is reachable, or point --model-cache-dir at a cache holding it"
    )


def _status(error: HfHubHTTPError) -> str:
    response = error.response
    return f"HTTP {response.status_code}" if response is not None else "an HTTP error"


class _NoBars(hub_tqdm):
    """The hub library's progress bar, always off (``logging.format = json``: bars would break log lines)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' own loading bars and loading-info warnings off; the hub's download bars left alone."""
    previous_verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the encoder reports missing heads itself
    previous_hook = transformers.logging.set_tqdm_hook(_no_bar)
    try:
        yield
    finally:
        transformers.logging.set_tqdm_hook(previous_hook)
        transformers.logging.set_verbosity(previous_verbosity)


def _no_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return factory(*args, **{**kwargs, "disable": True})


__all__ = ["HubError", "cache_location", "checkpoint_folder", "fetch", "is_folder", "needed_files", "quiet_loading"]
