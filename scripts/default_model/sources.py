"""Fetch the two public archives the default model's data comes from, and read files straight out of them.

* ``vaderSentiment==3.3.2`` (source distribution): its ``additional_resources/hutto_ICWSM_2014.tar.gz`` holds the
  human-rated sentences of Hutto & Gilbert (ICWSM 2014): movie-review snippets, tweets, Amazon review sentences and
  New York Times editorial sentences.
* ``allennlp==0.9.0`` (wheel): its test fixture ``squad.json`` holds five real SQuAD v1.1 questions.

Both are fetched with ``pip download`` into a cache folder and verified against pinned SHA-256 digests; nothing is
extracted to disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_ARCHIVE = "vaderSentiment-3.3.2.tar.gz"
VADER_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
VADER_RESOURCES = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"

ALLENNLP_REQUIREMENT = "allennlp==0.9.0"
ALLENNLP_ARCHIVE = "allennlp-0.9.0-py3-none-any.whl"
ALLENNLP_SHA256 = "353752e7b78e48c450e27889d80a3000c4a9af34f70ff9091b3031ad01320940"
SQUAD_FIXTURE = "allennlp/tests/fixtures/data/squad.json"

# Collection name -> file prefix inside hutto_ICWSM_2014/.
GROUND_TRUTH_FILES = {
    "movie_reviews": "movieReviewSnippets",
    "tweets": "tweets",
    "amazon_reviews": "amazonReviewSnippets",
    "nyt_editorials": "nytEditorialSnippets",
}


@dataclass(frozen=True)
class Sources:
    """The two downloaded archives, with readers that open their members in place."""

    vader_sdist: Path
    allennlp_wheel: Path

    def read_ground_truth(self, collection: str) -> str:
        """Return the decoded ``<collection>_GroundTruth.txt`` file (tab separated: id, mean rating, text)."""
        if collection not in GROUND_TRUTH_FILES:
            raise KeyError(f"unknown collection {collection!r}; expected one of {sorted(GROUND_TRUTH_FILES)}")
        member = f"hutto_ICWSM_2014/{GROUND_TRUTH_FILES[collection]}_GroundTruth.txt"
        with tarfile.open(self.vader_sdist, "r:gz") as sdist:
            inner = _read_tar_member(sdist, VADER_RESOURCES)
        with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as resources:
            return decode_text(_read_tar_member(resources, member))

    def read_squad_fixture(self) -> dict[str, Any]:
        """Return the parsed SQuAD v1.1 fixture shipped in the allennlp wheel."""
        with zipfile.ZipFile(self.allennlp_wheel) as wheel:
            data: dict[str, Any] = json.loads(decode_text(wheel.read(SQUAD_FIXTURE)))
        return data


def decode_text(raw: bytes) -> str:
    """Decode bytes as UTF-8 (dropping a byte-order mark); lines that are not UTF-8 are read as Windows-1252."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(_decode_line(line) for line in raw.splitlines(keepends=True))


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("cp1252", errors="replace")


def _read_tar_member(archive: tarfile.TarFile, name: str) -> bytes:
    handle = archive.extractfile(name)
    if handle is None:
        raise FileNotFoundError(f"{name} is not a regular file in the archive")
    with handle:
        return handle.read()


def fetch_sources(cache_dir: Path) -> Sources:
    """Download both archives into ``cache_dir`` unless already there, verify their digests, and return them."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    vader = _fetch(cache_dir, VADER_ARCHIVE, VADER_SHA256, ["--no-binary", ":all:", VADER_REQUIREMENT])
    allennlp = _fetch(cache_dir, ALLENNLP_ARCHIVE, ALLENNLP_SHA256, [ALLENNLP_REQUIREMENT])
    return Sources(vader_sdist=vader, allennlp_wheel=allennlp)


def _fetch(cache_dir: Path, filename: str, sha256: str, pip_args: list[str]) -> Path:
    target = cache_dir / filename
    if not target.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            _pip_download(Path(tmp), pip_args)
            downloaded = Path(tmp) / filename
            if not downloaded.exists():
                raise FileNotFoundError(f"pip download did not produce {filename}")
            _check_digest(downloaded, sha256)
            shutil.move(str(downloaded), target)
    _check_digest(target, sha256)
    return target


def _pip_download(dest: Path, pip_args: list[str]) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(dest)]
    result = subprocess.run([*command, *pip_args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(pip_args)}: pip download failed:\n{result.stdout}{result.stderr}")


def _check_digest(path: Path, expected: str) -> None:
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise ValueError(f"{path}: SHA-256 {actual} does not match the pinned {expected}; delete it and re-run")
