"""Named models and the download cache shared by the CLI, the ComfyUI nodes and the Blender extension.

Everything that takes a checkpoint takes a model name as well as a path, by one rule
(`is_path`): a value with a path separator or a .pkl/.safetensors suffix, or naming an existing
file, is a path; otherwise it is a name (`[a-z0-9][a-z0-9_-]*`). Names are `default` (the bundled
model), the known downloads (`KNOWN`, e.g. `lhq1024`) and whatever `download(URL, name=...)` cached.

    path = hub.resolve("lhq1024")                      # downloads on first use, then the cached file
    path = hub.download("lhq1024", progress=cb, cancel=flag.is_set)

The cache (`cache_root()`: $ALIS_HOME, else the platform's cache folder) holds `models/NAME.safetensors`,
partial downloads under `downloads/`, prepared training data under `datasets/` and `index.json`
(size, mtime and sha256 of every cached model, so later corruption is caught). Downloads use
urllib only, resume with HTTP Range requests, retry dropped connections, are verified (size,
the strict loaders' structural checks, a known model's architecture) and renamed into place only
when complete; official pickles are converted once by the safe converter. A lock per name keeps
two processes from downloading the same model at once. Nothing here touches the network at import.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import outputs
from .errors import AlisError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total or 0 when unknown); may raise to cancel
Cancel = Callable[[], bool]  # True once the user asked to stop (e.g. threading.Event().is_set)

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
BUNDLED_NAME = "default"
BUNDLED_PATH = Path(__file__).resolve().parent / "models" / "default.safetensors"  # = checkpoint.DEFAULT_CHECKPOINT
RESERVED_NAMES = frozenset({BUNDLED_NAME, "bundled", "none", "all", "index", "models", "downloads", "datasets"})
CHECKPOINT_SUFFIXES = (".safetensors", ".pkl")
ENV_HOME = "ALIS_HOME"
ENV_OFFLINE = "ALIS_OFFLINE"
INDEX_NAME = "index.json"
INDEX_KIND = "model-index"
MAX_DOWNLOAD_BYTES = 4 << 30  # the safe unpickler's bound (legacy.MAX_PICKLE_BYTES); LHQ 1024 is far below
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0  # per socket operation: a stalled transfer is a dropped one
RETRY_WAIT_S = (0.0, 1.0, 2.0, 5.0, 10.0)  # before each retry of a dropped transfer (then give up)
LOCK_WAIT_S = 3600.0  # how long a second process waits for the download another one is doing
LOCK_POLL_S = 0.5


@dataclass(frozen=True)
class KnownModel:
    """A model `alis download NAME` knows: where it lives and what it must be once loaded."""

    name: str
    url: str
    description: str
    licence: str
    architecture: dict = field(default_factory=dict)  # GeneratorConfig fields the download must have

    @property
    def env(self) -> str:
        """The environment variable that overrides the URL (a mirror, or a local copy served over http)."""
        return "ALIS_URL_" + self.name.upper().replace("-", "_")

    def current_url(self) -> str:
        return os.environ.get(self.env) or self.url


KNOWN: dict[str, KnownModel] = {m.name: m for m in (
    KnownModel(
        name="lhq1024",
        url="https://kaust-cair.s3.amazonaws.com/alis/lhq1024-snapshot.pkl",
        description="the ALIS authors' model of Landscapes HQ: photographic 1024 px frames, anchors 2048 px apart",
        licence="published by the ALIS authors with their code (github.com/universome/alis), whose licence is "
                "non-commercial; check it before any commercial use",
        architecture={"img_resolution": 1024, "z_dim": 512, "w_dim": 512, "grid_size": 2}),
)}


class DownloadCancelled(AlisError):
    """The user stopped a download; its partial file is kept and the next download resumes it."""


# ---------------------------------------------------------------------------------------------
# The cache folder and names


def cache_root() -> Path:
    """$ALIS_HOME, else the platform's cache folder + alis (XDG_CACHE_HOME/alis, ~/Library/Caches/alis,
    %LOCALAPPDATA%/alis)."""
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "alis"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "alis"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alis"


def models_dir() -> Path:
    return cache_root() / "models"


def model_path(name: str) -> Path:
    """Where the cached model `name` lives (whether or not it is there yet)."""
    return models_dir() / f"{name}.safetensors"


def offline() -> bool:
    """ALIS_OFFLINE=1 (or true/yes) turns downloading on first use off."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def is_path(value: str | os.PathLike) -> bool:
    """The one rule: a path separator, a checkpoint suffix, or an existing file makes a path."""
    if isinstance(value, os.PathLike):
        return True
    text = str(value)
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return (any(s in text for s in seps) or text.lower().endswith(CHECKPOINT_SUFFIXES)
            or os.path.exists(text) or not NAME_PATTERN.fullmatch(text))


def check_name(name: str, option: str = "--name") -> str:
    """A name a download may be cached under: the name pattern, and not a reserved name."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise AlisError(f"{option} {str(name)[:80]!r} is not a model name: use lower-case letters, digits, '-' and "
                        "'_' (starting with a letter or digit, at most 64), no paths or suffixes")
    if name in RESERVED_NAMES:
        raise AlisError(f"{option} {name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))}); choose another name")
    return name


# ---------------------------------------------------------------------------------------------
# The index: what was downloaded, from where, with which size, mtime and sha256


def read_index() -> dict:
    """{name: entry} of the cache's index.json (empty when missing or unreadable)."""
    try:
        data = json.loads((cache_root() / INDEX_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    models = data.get("models") if isinstance(data, dict) else None
    return {k: v for k, v in models.items() if isinstance(v, dict)} if isinstance(models, dict) else {}


def _update_index(name: str, entry: dict | None, cancel: Cancel | None = None) -> None:
    """Set (or with None drop) one entry, under the index lock so that processes do not lose entries."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _wait_for_lock(outputs.FolderLock(root, "model cache", name=".index.lock"), 60.0, cancel):
        models = read_index()
        if entry is None:
            models.pop(name, None)
        else:
            models[name] = entry
        outputs.write_json(root / INDEX_NAME, {"version": 1, "models": dict(sorted(models.items()))}, INDEX_KIND)


def file_sha256(path: Path, cancel: Cancel | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            if cancel is not None and cancel():
                raise DownloadCancelled(f"checking {path} cancelled")
            h.update(chunk)
    return h.hexdigest()


def verify_cached(name: str, full: bool = False) -> Path:
    """The cached model's file, checked against the index: size, then (if the mtime changed, or
    `full`) its sha256. A mismatch is one AlisError line saying how to download it again."""
    path = model_path(name)
    entry = read_index().get(name)
    try:
        st = path.stat()
    except OSError:
        raise AlisError(f"model {name} is not in the cache ({path}); run `alis download {name}`") from None
    if entry is None:
        return path  # placed by hand: nothing recorded to compare with
    again = f"; run `alis download {name} --force` to download it again"
    if st.st_size != entry.get("size"):
        raise AlisError(f"cached model {name} ({path}) has {st.st_size} bytes, the index recorded "
                        f"{entry.get('size')}: it is damaged{again}")
    if full or st.st_mtime_ns != entry.get("mtime_ns"):
        if file_sha256(path) != entry.get("sha256"):
            raise AlisError(f"cached model {name} ({path}) no longer matches the sha256 recorded when it was "
                            f"downloaded: it is damaged{again}")
        if st.st_mtime_ns != entry.get("mtime_ns"):
            _update_index(name, {**entry, "mtime_ns": st.st_mtime_ns})
    return path


def cached_names() -> list[str]:
    """Names of the models in the cache (files models/NAME.safetensors with a valid name)."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors")
                  if NAME_PATTERN.fullmatch(p.stem) and p.stem not in RESERVED_NAMES and p.is_file())


@dataclass
class ModelEntry:
    """One line of `alis models`: status is bundled, cached or download (known, not cached yet)."""

    name: str
    status: str
    path: Path | None
    size: int | None
    url: str | None = None
    description: str = ""


def list_models() -> list[ModelEntry]:
    """The bundled model, the known models and the cached ones, in that order."""
    index = read_index()
    out = [ModelEntry(BUNDLED_NAME, "bundled", BUNDLED_PATH, _size(BUNDLED_PATH), None, "the model shipped with alis")]
    cached = cached_names()
    for name, known in KNOWN.items():
        here = name in cached
        out.append(ModelEntry(name, "cached" if here else "download", model_path(name) if here else None,
                              _size(model_path(name)) if here else None, known.current_url(), known.description))
    for name in cached:
        if name not in KNOWN:
            out.append(ModelEntry(name, "cached", model_path(name), _size(model_path(name)),
                                  index.get(name, {}).get("url"), ""))
    return out


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Names -> files


def resolve(value: str | os.PathLike | None, download: bool | None = None, progress: Progress | None = None,
            cancel: Cancel | None = None) -> Path | None:
    """A checkpoint argument -> its file: None stays None (the caller's default), a path is
    returned as it is, `default` is the bundled model, a cached name its verified file, and a
    known name not cached yet is downloaded first (unless `download` is False, or None with
    ALIS_OFFLINE=1)."""
    if value is None or str(value) == "":
        return None
    if is_path(value):
        return Path(value).expanduser()
    name = str(value)
    if name == BUNDLED_NAME:
        return BUNDLED_PATH
    if model_path(name).is_file():
        return verify_cached(name)
    if name not in KNOWN:
        cached = ", ".join(cached_names()) or "none"
        raise AlisError(f"unknown model name {name!r} (known: {', '.join([BUNDLED_NAME, *KNOWN])}; cached: {cached}); "
                        f"give a .safetensors/.pkl path, or cache a file with `alis download URL --name {name}`")
    if download is False or (download is None and offline()):
        why = "--no-download" if download is False else f"{ENV_OFFLINE}=1"
        raise AlisError(f"model {name} is not downloaded yet and downloading is off ({why}); run "
                        f"`alis download {name}`, or fetch {KNOWN[name].current_url()} by hand and pass the file")
    return download_model(name, progress=progress, cancel=cancel)


def download(source: str, name: str | None = None, *, force: bool = False, keep_pickle: bool = False,
             progress: Progress | None = None, cancel: Cancel | None = None) -> Path:
    """Download a known model (`source` = its name) or any http(s) .pkl/.safetensors URL (`name`
    required) into the cache; returns the cached .safetensors. A name already cached is returned
    without any transfer unless `force`.

    progress(done_bytes, total_bytes) is called as bytes arrive (total 0 when the server does not
    say) and may raise to cancel; cancel() returning True stops the download with
    DownloadCancelled. Either way the partial file stays and the next call resumes it."""
    if "://" in source:
        scheme = urllib.parse.urlsplit(source).scheme.lower()
        if scheme not in ("http", "https"):
            raise AlisError(f"download {source[:120]}: only http:// and https:// URLs are downloaded")
        if name is None:
            raise AlisError(f"download {source[:120]}: give the model a name with --name NAME")
        return download_model(check_name(name), url=source, force=force, keep_pickle=keep_pickle,
                              progress=progress, cancel=cancel)
    if source not in KNOWN:
        raise AlisError(f"{source[:80]!r} is neither a known model ({', '.join(KNOWN)}) nor an http(s) URL; "
                        "`alis models` lists the known ones")
    return download_model(check_name(name or source), known=KNOWN[source], force=force, keep_pickle=keep_pickle,
                          progress=progress, cancel=cancel)


def download_model(name: str, url: str | None = None, known: KnownModel | None = None, force: bool = False,
                   keep_pickle: bool = False, progress: Progress | None = None,
                   cancel: Cancel | None = None) -> Path:
    """Download `url` (default: the known model's) and cache it as `name`; see `download`."""
    known = known or KNOWN.get(name) if url is None else known
    url = url or known.current_url()
    final = model_path(name)
    if final.is_file() and not force:
        return verify_cached(name)
    folder = models_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (cache_root() / "downloads").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AlisError(f"cannot create the model cache {folder}: {e.strerror or e}; set {ENV_HOME} to a writable "
                        "folder") from None
    with _wait_for_lock(outputs.FolderLock(folder, "model cache", name=f".{name}.lock"), LOCK_WAIT_S, cancel):
        if final.is_file() and not force:  # another process finished it while this one waited
            return verify_cached(name)
        part = cache_root() / "downloads" / f"{name}.part"
        log.info("downloading %s from %s into %s", name, url, folder)
        size = _transfer(url, part, progress, cancel, f" (or set {known.env} to a mirror)" if known else "")
        return _install(name, url, known, part, size, keep_pickle, cancel)


@contextlib.contextmanager
def _wait_for_lock(lock: outputs.FolderLock, wait_s: float, cancel: Cancel | None):
    """Hold `lock`, first waiting while another live process holds it (at most `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            lock.__enter__()
            break
        except AlisError:
            if not lock.path.exists() or time.monotonic() > deadline:
                raise
        if cancel is not None and cancel():
            raise DownloadCancelled(f"waiting for {lock.path} cancelled")
        time.sleep(LOCK_POLL_S)
    try:
        yield lock
    finally:
        lock.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------
# The transfer: resumable, retried, bounded


class _Dropped(Exception):
    """The connection broke off or stalled; the partial file is good so far. `reached`: the server
    answered (so a retry makes sense), as opposed to no connection at all."""

    def __init__(self, reason: str, reached: bool = True):
        super().__init__(reason)
        self.reached = reached


def _no_network(url: str, reason: str) -> AlisError:
    return AlisError(f"cannot download {url} ({reason}); without network, fetch that file by hand (browser, wget), "
                     "then `alis convert FILE.pkl FILE.safetensors` and pass --checkpoint FILE.safetensors "
                     "(or `alis download http://.../FILE --name NAME` from a local server)")


def _transfer(url: str, part: Path, progress: Progress | None, cancel: Cancel | None, hint: str = "") -> int:
    """Bring `url` into `part`, continuing what `part` holds (its `.json` sidecar records the URL
    and the server's validators); returns the verified size."""
    sidecar = part.with_suffix(".json")
    meta = _read_json(sidecar)
    if meta.get("url") != url:  # another source: what is there is not a prefix of this one
        part.unlink(missing_ok=True)
        meta = {"url": url}
    failures, received_any = 0, False
    while True:
        have = part.stat().st_size if part.exists() else 0
        total = meta.get("total")
        if total and have == total:
            return have
        try:
            got = _fetch_once(url, part, have, meta, sidecar, progress, cancel, hint)
            if got is not None:
                return got
            received_any = True
        except _Dropped as e:
            grew = (part.stat().st_size if part.exists() else 0) > have
            received_any = received_any or e.reached
            if not received_any:  # never reached the server: no network, or a wrong host or port
                raise _no_network(url, str(e)) from None
            failures = 0 if grew else failures + 1
            if failures >= len(RETRY_WAIT_S):
                raise AlisError(f"download of {url} broke off after {have} bytes ({e}) and did not resume after "
                                f"{failures} tries; run the same command again to continue it") from None
            log.warning("download of %s broke off (%s); resuming", url, e)
            time.sleep(RETRY_WAIT_S[failures])


def _fetch_once(url, part: Path, have: int, meta: dict, sidecar: Path, progress, cancel, hint: str) -> int | None:
    """One request: the whole file, or the rest of it. Returns the size once complete, None to ask
    again at once (the server restarted or refused the range), raises _Dropped on a broken transfer."""
    from . import __version__
    headers = {"User-Agent": f"alis/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator  # a changed file is sent whole (200), never spliced
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # what we hold is not a prefix any more: start again
            e.close()
            part.unlink(missing_ok=True)
            return None
        raise AlisError(f"download of {url} failed: HTTP {e.code} {e.reason}; check the URL{hint}") from None
    except urllib.error.URLError as e:
        raise _Dropped(_reason(e.reason), reached=False) from None
    except (OSError, http.client.HTTPException) as e:
        raise _Dropped(_reason(e), reached=False) from None
    with resp:
        if urllib.parse.urlsplit(resp.geturl()).scheme.lower() not in ("http", "https"):
            raise AlisError(f"download of {url} was redirected to {resp.geturl()[:120]}; only http(s) is followed")
        status = getattr(resp, "status", 200)
        length = _int_header(resp.headers.get("Content-Length"))
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have or (meta.get("total") and total != meta.get("total")):
                part.unlink(missing_ok=True)  # not the rest of what we hold
                return None
        elif status == 200:
            start, total = 0, length  # the whole file (a server that ignores Range restarts it)
        else:
            raise AlisError(f"download of {url} failed: unexpected HTTP status {status}")
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise AlisError(f"download of {url}: the server announces {total} bytes, more than a checkpoint "
                            f"this alis reads ({MAX_DOWNLOAD_BYTES >> 30} GiB); check the URL")
        meta.update(url=url, total=total, etag=resp.headers.get("ETag"),
                    last_modified=resp.headers.get("Last-Modified"))
        outputs.write_bytes(sidecar, json.dumps(meta).encode())
        done = start
        if progress is not None:
            progress(done, total or 0)
        try:
            f = open(part, "ab" if start else "wb")
        except OSError as e:
            raise AlisError(f"cannot write {part}: {e.strerror or e}; free some space or set {ENV_HOME}") from None
        with f:
            while True:
                if cancel is not None and cancel():
                    raise DownloadCancelled(f"download of {url} cancelled after {done} bytes; the partial file "
                                            "is kept and the next download resumes it")
                try:
                    chunk = resp.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as e:
                    raise _Dropped(_reason(e)) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:
                    raise AlisError(f"cannot write {part}: {e.strerror or e}; free some space or set "
                                    f"{ENV_HOME}") from None
                done += len(chunk)
                if done > (total if total is not None else MAX_DOWNLOAD_BYTES):
                    raise AlisError(f"download of {url}: the server sent more than the {total or MAX_DOWNLOAD_BYTES} "
                                    "bytes it announced; check the URL")
                if progress is not None:
                    progress(done, total or 0)
        if total is not None and done < total:
            raise _Dropped(f"{done} of {total} bytes received")
        if total is None:
            meta["total"] = done
            outputs.write_bytes(sidecar, json.dumps(meta).encode())
        return done


def _reason(e) -> str:
    if isinstance(e, socket.timeout):
        return f"no data for {TIMEOUT_S:g} s"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:160]


def _int_header(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _content_range(value: str | None) -> tuple[int, int | None]:
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m:
        return -1, None
    return int(m.group(1)), None if m.group(3) == "*" else int(m.group(3))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------------------
# Verification and installation


def _install(name: str, url: str, known: KnownModel | None, part: Path, size: int, keep_pickle: bool,
             cancel: Cancel | None) -> Path:
    """Check the complete download, convert an official pickle, move the result into place and
    record it in the index. A file that fails any check is removed and nothing is installed."""
    final = model_path(name)
    source_sha = file_sha256(part, cancel)
    try:
        with open(part, "rb") as f:
            head = f.read(16)
        if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
            _convert_pickle(part, final, url, known)
            if keep_pickle:
                os.replace(part, final.with_suffix(".pkl"))
        elif len(head) > 9 and head[8:9] == b"{":
            _check_safetensors(part, url, known)
            os.replace(part, final)
        else:
            raise AlisError(f"download of {url} is neither an official .pkl snapshot nor a .safetensors checkpoint "
                            f"(it starts with {head[:8]!r}); check the URL")
    except BaseException:
        _discard(part)
        raise
    _discard(part)
    st = final.stat()
    _update_index(name, {"file": final.name, "url": url, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                         "sha256": file_sha256(final), "source_size": size, "source_sha256": source_sha,
                         "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         **({"licence": known.licence} if known else {})})
    return final


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    part.with_suffix(".json").unlink(missing_ok=True)


def _check_architecture(cfg, url: str, known: KnownModel | None) -> None:
    if known is None:
        return
    wrong = {k: getattr(cfg, k, None) for k, v in known.architecture.items() if getattr(cfg, k, None) != v}
    if wrong:
        got = ", ".join(f"{k} {v}" for k, v in wrong.items())
        want = ", ".join(f"{k} {known.architecture[k]}" for k in wrong)
        raise AlisError(f"download of {url} is not the {known.name} model: it has {got} where {known.name} has {want}; "
                        f"check the URL (or {known.env})")


def _named(url: str, e: AlisError) -> AlisError:
    return AlisError(f"download of {url} is not a valid ALIS checkpoint: {e}")


def _convert_pickle(part: Path, final: Path, url: str, known: KnownModel | None) -> None:
    """Official snapshot -> the cached .safetensors (G_ema and, when the snapshot has one, D)."""
    from .checkpoint import load_official_pickle, save_generator
    try:
        try:
            G, D = load_official_pickle(part, with_discriminator=True)
        except AlisError as e:
            if "holds no discriminator" not in str(e):
                raise
            G, D = load_official_pickle(part)[0], None
    except AlisError as e:
        raise _named(url, e) from None
    _check_architecture(G.config, url, known)
    save_generator(G, final, D=D, metadata={"converted_from": Path(urllib.parse.urlsplit(url).path).name[:200],
                                            "source_url": url[:1000]})


def _check_safetensors(part: Path, url: str, known: KnownModel | None) -> None:
    """The strict loaders' checks (config, tensor names and shapes, finite values)."""
    from .checkpoint import _read_header, load_discriminator, load_generator
    try:
        G = load_generator(part)
        if "discriminator_config" in _read_header(part)[0]:
            load_discriminator(part)
    except AlisError as e:
        raise _named(url, e) from None
    _check_architecture(G.config, url, known)
