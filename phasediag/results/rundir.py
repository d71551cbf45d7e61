"""A run directory as one unit: one writer at a time, all-or-nothing commits, a verified manifest.

Layout of a run directory ``<out>/``:

- the committed result: the data files, the figures, exported tables and ``meta.json``, whose ``manifest``
  records the size and SHA-256 of every other file (readers verify it, see :mod:`phasediag.results.store`);
- while a writer works: ``.phasediag.lock`` (an advisory ``flock``: a second writer fails at once),
  ``.phasediag.txn/`` (the files of the commit in progress), ``.partial-<config_hash>/`` (the checkpoints
  of a sweep, kept for ``--resume`` if the run is stopped).

A commit is a redo log. The new files are written into ``.phasediag.txn/``, then its ``meta.json`` (with the
manifest) and ``previous.json`` (the manifest being replaced); the atomic creation of
``.phasediag.txn/COMMITTED`` is the commit point. Then the files are moved into place with ``os.replace``,
meta.json last, the previous run's files that the new manifest drops are removed (only regular files of the
tool's own kinds whose bytes are still the ones it recorded), and ``.phasediag.txn/`` is deleted. A process
killed before the commit point leaves the previous result untouched (the next writer discards the staged
files); killed after it, the next process to open the directory finishes the moves, which are idempotent.

The tool never overwrites or deletes a file it did not write. Its files are meta.json (if it is one the tool
wrote) and the files that meta.json lists (:func:`tool_files`), read when a writer takes the directory, before
it does anything; a writer refuses (:func:`check_owned`, and again in :meth:`Transaction.commit`) to create a
file whose name another file already has, and the clean-up of leftovers removes only names of the tool's own
making (:meth:`RunDirectory.clean_leftovers`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Iterator

from phasediag.errors import BusyError, FieldError, ResultsError
from phasediag.results.stream import RECORDS

__all__ = ["LOCK", "STAGING", "RunDirectory", "Transaction", "writer", "shard_writer", "file_entry", "hash_open",
           "plain_name", "check_regular_target", "tool_files", "check_owned", "recover", "commit_pending",
           "json_default"]

LOCK = ".phasediag.lock"
STAGING = ".phasediag.txn"
COMMITTED = "COMMITTED"
#: written into the staging folder when it is made: the folder is the tool's (see RunDirectory.recover)
STAGING_MARK = ".phasediag-staging"
PREVIOUS = "previous.json"
META_FILE = "meta.json"
PARTIAL_PREFIX = ".partial-"

#: a file the tool may name inside a run directory: a plain name, no path, not hidden
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
#: the files a later run may remove when its manifest drops them (figures and exported tables, never data)
REMOVABLE_SUFFIXES = frozenset({".png", ".pdf", ".svg", ".csv"})
#: temporary files of an interrupted atomic write (tempfile.mkstemp names, see results/atomic.py)
TEMPORARY = re.compile(r"\.(?P<final>[A-Za-z0-9][A-Za-z0-9_.-]*)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?")
#: the kinds of file a run directory's temporaries can become (data, meta.json, figures, tables)
TEMPORARY_SUFFIXES = frozenset({".npz", ".json"}) | REMOVABLE_SUFFIXES
#: what the tool writes into its lock file: nothing (a shard) or a writer's pid
_LOCK_TEXT = re.compile(rb"[0-9]{1,20}\n?")
_PARTIAL = re.compile(r"\.partial-[0-9a-f]{16}")
#: what a checkpoint folder holds: the results.npz being filled and its record of finished chunks (and the
#: chunk files of earlier versions, which kept each chunk in a file of its own)
_CHUNK = re.compile(rf"results\.npz|{RECORDS.pattern}|chunk-\d{{15}}-\d{{15}}\.npz"
                    r"|\.chunk-\d{15}-\d{15}\.npz\.[a-z0-9_]{8}\.tmp\.npz")  # (the checkpoint's files)
_HASH_BLOCK = 1 << 22


def plain_name(name: object, what: str = "file name") -> str:
    """`name` if it is a plain file name the tool may create inside a run directory, else ResultsError:
    paths are never built from file contents without this check."""
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or name == META_FILE and what != "meta":
        raise ResultsError(f"{name!r} is not a plain {what} (letters, digits, '_', '-', '.'; no path)")
    return name


def file_entry(path: Path) -> dict:
    """The manifest entry of a file: its size and SHA-256."""
    with open(path, "rb") as fh:
        return hash_open(fh)


def hash_open(fh) -> dict:
    """The manifest entry of an open binary file, read from its start (and left there)."""
    fh.seek(0)
    digest = hashlib.sha256()
    size = 0
    buffer = memoryview(bytearray(_HASH_BLOCK))  # (reused: no fresh memory per block)
    while done := fh.readinto(buffer):
        digest.update(buffer[:done])
        size += done
    fh.seek(0)
    return {"size": size, "sha256": digest.hexdigest()}


def check_regular_target(path: Path) -> None:
    """ResultsError if `path` exists and is not a regular file (a symlink, a device, a FIFO, a directory):
    phasediag replaces regular files only, and never writes through a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        above = next((p for p in reversed(Path(path).parents) if p.exists() and not p.is_dir()), Path(path).parent)
        raise ResultsError(f"{path}: {above} is a file, not a directory") from None
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ResultsError(f"{path}: is {kind}; phasediag writes and replaces regular files only")


def _refusal(field: str | None, message: str) -> Exception:
    """Bad input about the run directory: named by the option that chose it (`field`, e.g. out), or, for
    one given as the command's argument (field None), by its own path, which the message starts with."""
    return FieldError(field, message) if field else ResultsError(message)


def _tool_meta(meta) -> bool:
    """Whether parsed meta.json content is one phasediag wrote: an object with a name and the tool's config
    hash (16 hex digits), or its schema and a manifest of sizes and SHA-256s, or its kind and a list of files
    naming meta.json."""
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        return False
    digest = meta.get("config_hash")
    if isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{16}", digest):
        return True
    manifest, files = meta.get("manifest"), meta.get("files")
    if isinstance(manifest, dict) and isinstance(meta.get("schema"), int):
        return all(_is_entry(e) and re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in manifest.values())
    return isinstance(meta.get("kind"), str) and isinstance(files, list) and META_FILE in files


def _is_entry(entry) -> bool:
    """Whether `entry` has the shape of a manifest entry: {"size": int, "sha256": str}."""
    return isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)


def tool_files(directory: Path) -> set[str]:
    """The names of the files in run directory `directory` that phasediag wrote: meta.json if the tool wrote
    it, and the plain names it lists (manifest, files, figures, tables; a directory of the first versions, which
    listed no files: its data file). Empty if there is no meta.json of the tool's."""
    path = Path(directory) / META_FILE
    try:
        regular = stat.S_ISREG(os.lstat(path).st_mode)  # (never read through a link, a FIFO, a device)
    except OSError:
        regular = False
    meta = _read_json(path) if regular else None
    if not _tool_meta(meta):
        return set()
    names = {META_FILE}
    for key in ("manifest", "files", "figures", "tables"):
        listed = meta.get(key)
        if isinstance(listed, (list, dict)):
            names |= {n for n in listed if isinstance(n, str) and FILE_NAME.fullmatch(n)}
    if not isinstance(meta.get("files"), list) and not isinstance(meta.get("manifest"), dict):
        names.add("validation.json" if "settings" in meta else "results.npz")
    return names


def check_owned(directory: Path, names, owned: set[str] | None = None, *, field: str | None = "out",
                hint: str = "move it or choose another output directory") -> None:
    """Refuse (FieldError of `field`; ResultsError if None) to create or replace any of the files `names` of
    `directory` that exists and is not the tool's (`owned`, default :func:`tool_files`): phasediag never
    overwrites a file it did not write; nor anything but a regular file (ResultsError, check_regular_target)."""
    directory = Path(directory)
    owned = tool_files(directory) if owned is None else owned
    for name in names:
        path = directory / name
        if not os.path.lexists(path):
            continue
        check_regular_target(path)  # (a link, FIFO or device at the name: refused, even at a name of the tool's)
        if name in owned:
            continue
        if name == META_FILE:
            raise _refusal(field, f"{path} was not written by phasediag; {hint}")
        where = (f"not in {directory / META_FILE}" if META_FILE in owned
                 else f"{directory} has no {META_FILE} of phasediag")
        raise _refusal(field, f"{path} was not written by phasediag ({where}); {hint}")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


class Transaction:
    """The files of one commit, staged in ``<out>/.phasediag.txn/`` until :meth:`commit`."""

    def __init__(self, run: "RunDirectory"):
        self.run = run
        self.dir = run.path / STAGING

    def path(self, name: str) -> Path:
        """Where to write file `name` of this commit (checked to be a plain name)."""
        return self.dir / plain_name(name)

    def commit(self, meta: dict, keep: dict[str, dict] | None = None) -> list[str]:
        """Make the staged files, the `keep` files already in the directory (name -> manifest entry) and
        `meta` (written last, with ``files`` and ``manifest`` set here) the directory's result, atomically.
        Returns the names of the committed files, meta.json last."""
        keep = dict(keep or {})
        staged = sorted(p.name for p in self.dir.iterdir()
                        if p.is_file() and not p.is_symlink() and FILE_NAME.fullmatch(p.name))
        order = [n for n in meta.get("files", []) if n in staged or n in keep]
        names = list(dict.fromkeys(order + sorted(set(staged) | set(keep))))
        names = [n for n in names if n != META_FILE]
        for name in names:
            check_regular_target(self.run.path / plain_name(name))
        check_regular_target(self.run.path / META_FILE)
        manifest = {}
        for name in names:
            manifest[name] = file_entry(self.dir / name) if name in staged else keep[name]
            if name in staged:
                _fsync(self.dir / name)
        meta["files"] = names + [META_FILE]
        meta["manifest"] = manifest
        if not isinstance(meta.get("schema"), int) or meta["schema"] < 2:
            meta["schema"] = 2  # (a directory of an older version: it has a manifest from now on)
        previous = self.run.manifest() or self.run.unrecorded()
        self._write(PREVIOUS, {"manifest": previous})
        self._write(META_FILE, meta)
        # (refused before the commit point, and as late as can be: a user's file that appears after this check,
        # in the milliseconds until its name is taken, is the one race left; hashing the data takes longer)
        self.run.check_owned([*staged, META_FILE])
        self._write(COMMITTED, {"committed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        _fsync(self.dir, directory=True)
        self.run.roll_forward()
        self.run.owned.update(meta["files"])  # (the tool's now)
        return meta["files"]

    def _write(self, name: str, data) -> None:
        tmp = self.dir / f".{name}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, allow_nan=False, default=json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / name)

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def json_default(value):
    """numpy scalars and arrays as JSON (json.dump's `default`)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class RunDirectory:
    """A run directory held by this process's writer lock (see :func:`writer`); `field`: the option that
    names it (None: the command's argument), for the messages of what it refuses."""

    def __init__(self, path: Path, field: str | None = "out"):
        self.path = Path(path)
        self.field = field
        self._owned: set[str] | None = None

    @property
    def owned(self) -> set[str]:
        """The files of the directory the tool wrote (:func:`tool_files`), as they were when the writer took
        it (:func:`writer` reads them before anything is done), and those it has committed since."""
        if self._owned is None:
            self._owned = tool_files(self.path)
        return self._owned

    def check_owned(self, names, hint: str = "move it or choose another output directory") -> None:
        """Refuse to create or replace any of the files `names` that exists and is not the tool's."""
        check_owned(self.path, names, self.owned, field=self.field,
                    hint=hint if self.field else "move it out of the run directory")

    def manifest(self) -> dict[str, dict]:
        """The committed manifest (name -> size and SHA-256); {} for none or a directory of older versions."""
        meta = _read_json(self.path / META_FILE)
        manifest = meta.get("manifest") if isinstance(meta, dict) else None
        if not isinstance(manifest, dict):
            return {}
        return {n: e for n, e in manifest.items() if isinstance(n, str) and FILE_NAME.fullmatch(n) and _is_entry(e)}

    def unrecorded(self) -> dict[str, dict]:
        """A directory of the first versions (a meta.json of the tool's without a manifest): the manifest it
        would have had, for the figures and tables its meta.json lists (name -> entry of the bytes there now)
        that are regular files not changed since that meta.json was written; a commit that drops them
        removes them as it removes those of a manifest (a file changed later is somebody else's: kept)."""
        try:
            written = os.lstat(self.path / META_FILE).st_mtime_ns
        except OSError:
            return {}
        found = {}
        for name in sorted(self.owned - {META_FILE}):
            path = self.path / name
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if (Path(name).suffix in REMOVABLE_SUFFIXES and stat.S_ISREG(info.st_mode)
                        and info.st_mtime_ns <= written):
                    found[name] = file_entry(path)
        return found

    def begin(self) -> Transaction:
        """A new, empty transaction (an earlier uncommitted one is discarded)."""
        txn = Transaction(self)
        if _own_folder(txn.dir):
            self._check_staging(txn.dir)
        txn.discard()
        txn.dir.mkdir()
        (txn.dir / STAGING_MARK).write_bytes(b"")
        return txn

    def roll_forward(self) -> None:
        """Finish a committed transaction: move its files into place (meta.json last), drop the files the
        new manifest no longer lists, delete the staging folder. Idempotent: safe to repeat after a crash."""
        staging = self.path / STAGING
        meta = _read_json(staging / META_FILE)
        if meta is None and (self.path / META_FILE).is_file():
            meta = _read_json(self.path / META_FILE)  # moved already: only the clean-up was left
        previous = (_read_json(staging / PREVIOUS) or {}).get("manifest") or {}
        files = [n for n in (meta or {}).get("files", []) if isinstance(n, str) and FILE_NAME.fullmatch(n)]
        for name in [n for n in files if n != META_FILE] + [META_FILE]:
            source = staging / name
            if source.is_file() and not source.is_symlink():
                check_regular_target(self.path / name)
                os.replace(source, self.path / name)
        _fsync(self.path, directory=True)
        self._remove_dropped(previous, set(files))
        digest = (meta or {}).get("config_hash")
        if isinstance(digest, str) and _PARTIAL.fullmatch(PARTIAL_PREFIX + digest):  # its checkpoints are done
            self.remove_partial(self.path / (PARTIAL_PREFIX + digest))
        shutil.rmtree(staging, ignore_errors=True)

    def _remove_dropped(self, previous: dict, kept: set[str]) -> None:
        """Remove the files of the previous manifest that the new one drops: regular files of the tool's own
        kinds (figures, tables) whose size and hash are still what the tool recorded; never data or meta."""
        for name, entry in previous.items():
            if name in kept or not isinstance(name, str) or not FILE_NAME.fullmatch(name):
                continue
            if Path(name).suffix not in REMOVABLE_SUFFIXES or not isinstance(entry, dict):
                continue
            path = self.path / name
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode) or file_entry(path) != {
                        "size": entry.get("size"), "sha256": entry.get("sha256")}:
                    continue  # changed since the tool wrote it: somebody else's now
                path.unlink()
            except OSError:
                continue

    def recover(self) -> None:
        """Finish a commit a killed process left (COMMITTED present), or discard its uncommitted files."""
        staging = self.path / STAGING
        if not _own_folder(staging):
            return
        self._check_staging(staging)
        if (staging / COMMITTED).is_file():
            self.roll_forward()
        else:
            shutil.rmtree(staging, ignore_errors=True)

    def _check_staging(self, staging: Path) -> None:
        """Refuse (before it is finished or deleted) a staging folder that is not the tool's: the tool's holds
        its mark from the moment it is made (an empty folder is taken as one whose mark was never written)."""
        try:
            entries = list(os.scandir(staging))
        except OSError as exc:
            raise _refusal(self.field, f"{staging}: cannot read it: {exc.strerror}") from None
        if entries and not any(e.name == STAGING_MARK and e.is_file(follow_symlinks=False) for e in entries):
            held = sorted(e.name for e in entries)[0]
            raise _refusal(self.field, f"{staging} is not a folder phasediag made (it holds {held}); move it "
                                       f"out of the run directory")

    def clean_leftovers(self, keep_partial: str | None = None) -> None:
        """Remove what interrupted runs of the tool left: temporary files of atomic writes, and checkpoint
        folders (all but `keep_partial`) that hold nothing but the tool's own chunk files."""
        for entry in os.scandir(self.path):
            if _tool_temporary(entry):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            elif (_PARTIAL.fullmatch(entry.name) and entry.name != keep_partial
                  and entry.is_dir(follow_symlinks=False)):
                self.remove_partial(Path(entry.path))

    @staticmethod
    def remove_partial(folder: Path) -> None:
        """Remove a checkpoint folder if it holds only the tool's chunk files (else leave it alone)."""
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        if all(_CHUNK.fullmatch(e.name) and e.is_file(follow_symlinks=False) for e in entries):
            for e in entries:
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
            with contextlib.suppress(OSError):
                folder.rmdir()

    def partial(self, config_hash: str) -> Path:
        """The checkpoint folder of a run of config `config_hash` (the others are removed)."""
        name = f"{PARTIAL_PREFIX}{config_hash}"
        self.clean_leftovers(keep_partial=name)
        return self.path / name


def _tool_temporary(entry: os.DirEntry) -> bool:
    """Whether `entry` is a temporary file an interrupted atomic write of the tool left (the current version
    stages everything in .phasediag.txn/; older ones wrote beside the files): exactly the name atomic_path
    gives (``.<final>.<8 characters of mkstemp>.tmp<the final's suffix>``) of a kind of file the tool writes in
    a run directory (data, meta.json, a figure, a table), a regular file, the user's own. A look-alike that is
    not all of these is left alone."""
    match = TEMPORARY.fullmatch(entry.name)
    if not match:
        return False
    suffix = Path(match.group("final")).suffix
    if suffix not in TEMPORARY_SUFFIXES or not entry.name.endswith(f".tmp{suffix}"):
        return False
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def final_name(filename, out: Path) -> Path | None:
    """The file of run directory `out` that a staged or temporary file `filename` was to become (for error
    messages: out/results.npz, not out/.phasediag.txn/.results.npz.x1y2z3w4.tmp.npz); None if it is neither."""
    if not filename:
        return None
    path = Path(str(filename))
    if path.name in (STAGING, LOCK) and path.parent == out or path.name == STAGING_MARK and path.parent.name == STAGING:
        return out
    if _PARTIAL.fullmatch(path.name) and path.parent == out or _PARTIAL.fullmatch(path.parent.name) \
            and path.parent.parent == out:  # a checkpoint folder and its files: the results being written
        return out / "results.npz"
    if path.parent.name == STAGING:
        name = path.name
        if name.startswith(".") and name.endswith(".tmp"):  # Transaction._write's own temporaries
            name = name[1:-4]
        if name in (PREVIOUS, COMMITTED):  # the commit's own records: what it was committing is meta.json
            name = META_FILE
    elif path.parent == out:
        name = path.name
    else:
        return None
    match = TEMPORARY.fullmatch(name)
    if match:
        name = match.group("final")
    return out / name if name and name != STAGING else None


def commit_pending(directory: Path) -> bool:
    """True while a committed transaction is not yet (or never was) moved into place."""
    return (Path(directory) / STAGING / COMMITTED).is_file()


def recover(directory: Path) -> bool:
    """Finish an interrupted commit in `directory` if no writer holds it (for readers that find one);
    True if the directory is now settled."""
    directory = Path(directory)
    if not commit_pending(directory):
        return True
    try:
        with writer(directory, create=False) as run:
            run.recover()
        return True
    except (BusyError, OSError, FieldError):
        return False


def _own_folder(path: Path) -> bool:
    """Whether the tool's folder `path` exists; ResultsError if something else (a file, a link) has its name:
    the tool neither deletes it nor writes through it."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(mode):
        check_regular_target(path)  # names the kind: a symbolic link, a device, ...
        raise ResultsError(f"{path}: is a file where phasediag keeps a folder of its own; remove it")
    return True


def _make_dirs(path: Path) -> list[Path]:
    """mkdir -p `path`; the folders it created (deepest last), so that a run that fails can remove them."""
    created = []
    for parent in reversed([path, *path.parents]):
        if parent.is_dir():
            continue
        try:
            parent.mkdir()
            created.append(parent)
        except FileExistsError:
            if not parent.is_dir():
                raise FieldError("out", f"{parent} is a file, not a directory") from None
    return created


def _lock(path: Path, shared: bool = False, field: str | None = "out") -> int:
    """Take the writer lock of run directory `path` (BusyError at once if another process holds it);
    `shared`: one of several shards writing into one result (they exclude writers, not each other). A file
    of the lock's name that holds anything but what the tool writes there (nothing, or a pid) is refused."""
    lock = path / LOCK
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
                check_regular_target(lock)
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO or device opened without blocking
            os.close(fd)
            check_regular_target(lock)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            what = "another phasediag process" + who if who or not shared else "a phasediag process"
            raise BusyError(f"{path}: {what} is writing this run directory; wait for it to finish or choose "
                            f"another output directory") from None
        info = os.fstat(fd)
        try:
            same = os.path.samestat(info, os.lstat(lock))
        except FileNotFoundError:
            same = False
        if same and (info.st_size > 64 or info.st_nlink != 1
                     or not _LOCK_TEXT.fullmatch(os.pread(fd, 64, 0) or b"0")):
            os.close(fd)  # (not the tool's file: neither written to nor removed)
            raise _refusal(field, f"{lock} was not written by phasediag (it holds what a lock file of phasediag "
                                  f"does not, or has other names); move it or choose another output directory")
        if same and shared:  # (the pid is a writer's: shards leave it alone)
            return fd
        if same:  # (not a lock file its previous holder removed while we waited for it)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError as exc:  # a full disk: the pid is only for messages, but leave nothing behind
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                os.close(fd)
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            return fd
        os.close(fd)


def _take(out: Path, *, create: bool, shared: bool = False, field: str | None = "out") -> tuple[list[Path], int]:
    """Create `out` (if `create`) and take its lock: (the folders created, the lock's descriptor); a path
    that cannot be written is a FieldError naming `field` (None: a ResultsError naming `out`, a directory the
    command was given as its argument)."""
    named = "" if field else f"{out}: "
    if out.exists() and not out.is_dir():
        raise _refusal(field, f"{out} is a file, not a directory")
    try:
        created = _make_dirs(out) if create else []
        return created, _lock(out, shared=shared, field=field)
    except PermissionError as exc:
        raise _refusal(field, f"{named}cannot write {exc.filename or out}: permission denied") from None
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.ENOTDIR):
            raise _refusal(field, f"{named}cannot write {exc.filename or out}: {exc.strerror}") from None
        raise


@contextlib.contextmanager
def shard_writer(out: str | Path) -> Iterator[Path]:
    """Hold `out` as one of the shards writing into one shared result: beside other shards, never beside
    a writer (a writer, or a shard while a writer works, fails at once with BusyError). The last holder out
    removes the lock file (:func:`_release_shared`), whichever way it leaves."""
    out = Path(out)
    _, fd = _take(out, create=True, shared=True)
    try:
        yield out
    finally:
        _release_shared(out, fd)


def _release_shared(out: Path, fd: int) -> None:
    """Release a shard's shared lock; if no other process holds the lock (the exclusive lock is free to take
    at once), remove the lock file too, as a writer does: a process that opened it meanwhile finds it gone
    once it holds it (see :func:`_lock`) and takes a new one."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (conversion: ours is given up first, then tried)
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), os.lstat(out / LOCK)):
                os.unlink(out / LOCK)
    except OSError:  # another shard (or a writer) holds it: the last one out removes it
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer(out: str | Path, *, create: bool = True, field: str | None = "out") -> Iterator[RunDirectory]:
    """Hold `out` as its one writer: create it (`create`), take the lock, finish or discard what an
    interrupted process left, and read which of its files are the tool's (:attr:`RunDirectory.owned`) before
    anything else is done. On exit an uncommitted transaction is discarded, the lock released and removed, and
    the folders this call created are removed again if nothing was committed in them. `field`: the option
    that named `out`, for messages (None: the command's argument, named by its path)."""
    out = Path(out)
    created, fd = _take(out, create=create, field=field)
    try:
        run = RunDirectory(out, field)
        run.recover()
        run.owned  # (read now: what the tool wrote, before this writer writes anything)
        yield run
    finally:
        with contextlib.suppress(OSError, ResultsError, FieldError):  # an uncommitted transaction goes
            RunDirectory(out).recover()
        with contextlib.suppress(OSError):
            os.unlink(out / LOCK)
        os.close(fd)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: nothing was committed there
