"""Where a sweep's values go as its chunks finish: straight into place, written once.

:class:`StreamedResult` is the results.npz of a run in progress, in the run directory's checkpoint folder
(``.partial-<config_hash>/``): its structure is written first (:mod:`phasediag.results.npz`), every chunk is
written into its rows by whichever process computed it, and the record ``chunks`` lists the flat ranges
that are on disk. The file is its own checkpoint: a resumed run reads the record and computes only the rest;
the finished file is committed by moving it, not by writing it again. :class:`MemoryResult` is the same
for a run that writes nothing (``out=None``): arrays in memory, for forked workers the mappings of files in
memory.

Both are written from worker processes forked after they are opened, with ``os.pwrite`` to an inherited
file descriptor, so a worker's chunk lands in its place with one copy and the parent holds at most its own
chunk, whatever the size of the grid.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from phasediag.errors import ResultsError
from phasediag.results import npz

__all__ = ["StreamedResult", "MemoryResult", "RECORD", "RECORDS", "DATA", "shard_record"]

DATA = "results.npz"
RECORD = "chunks"
RECORDS = re.compile(r"chunks(-[0-9]{4,}-of-[0-9]{4,})?")  # this run's record, and shards' (shard_record)
_RECORD_VERSION = 1  # (a line "lo hi <CRC-32s>"; a line "lo hi" of an older record claims nothing)
_CRC_FIELD = re.compile(rb"[0-9a-f]+")
_VERIFY_BLOCK = 8 << 20  # bytes read at a time when a resumed run checks its recorded rows


def shard_record(index: int, count: int) -> str:
    """The record of shard `index` of `count` writing into a result shared by all shards."""
    return f"{RECORD}-{index:04d}-of-{count:04d}"


class MemoryResult:
    """Result arrays in memory (`arrays`: name -> array whose first index is the flat point minus `start`).

    `files`: name -> the descriptor of the file in memory whose mapping that array is (`MemoryResult.for_workers`),
    which forked workers write their chunks into with os.pwrite; arrays without one are written in place."""

    def __init__(self, arrays: dict[str, np.ndarray], start: int, files: dict[str, int] | None = None):
        self.arrays, self.start, self.files = arrays, start, dict(files or {})

    @classmethod
    def for_workers(cls, specs: dict[str, tuple], start: int) -> "MemoryResult":
        """Zeros, name -> (shape, dtype) of `specs`, each array the shared mapping of its own file in memory
        (memfd; elsewhere an unlinked temporary file) that a forked worker writes with os.pwrite: this process
        sees the values. Why files and not shared anonymous memory written through the mapping: a writer
        then maps every 4 KiB page of its chunks into its own page tables (which fork does not copy for
        shared memory), and that cost --workers 2 about a third more time here (benchmarks/bench.py); a
        pwrite sets up no mapping in the worker. One file per array: writers of one file take turns on its
        lock."""
        result = cls({}, start)
        if _MAPPINGS_KEEP_FILES:
            _room_for(2 * len(specs))
        try:
            for name, (shape, dtype) in specs.items():
                dtype = np.dtype(dtype)
                count = int(np.prod(shape))
                size = max(count * dtype.itemsize, 1)
                fd = result.files[name] = _memory_file(name)
                os.ftruncate(fd, size)
                result.arrays[name] = np.frombuffer(_map_file(fd, size), dtype=dtype, count=count).reshape(shape)
        except BaseException:
            result.close()
            raise
        return result

    def write(self, lo: int, hi: int, chunk: dict[str, np.ndarray]) -> None:
        """Write the chunk of flat points [lo, hi); no receipt (see StreamedResult.write)."""
        for name, values in chunk.items():
            rows = self.arrays[name][lo - self.start:hi - self.start]
            fd = self.files.get(name)
            if fd is None:
                rows[...] = values
                continue
            data = np.ascontiguousarray(np.broadcast_to(values, rows.shape), dtype=rows.dtype)
            npz.pwrite_all(fd, data, (lo - self.start) * (rows.nbytes // len(rows) if len(rows) else 0))

    def discard(self) -> None:
        self.close()

    def record(self, finished: list[tuple[int, int, None]]) -> None:
        """Map the `finished` rows that workers wrote through the files into this process now, while they
        compute the next chunks: left to the first read after the run, those page faults (0.1-0.15 s per
        1.5 GB here, fault-around included) would be serial. Nothing is recorded: a run in memory cannot be
        resumed."""
        for lo, hi, _ in finished:
            for name in self.files:
                _map_pages(self.arrays[name][lo - self.start:hi - self.start])

    def finish(self) -> dict[str, np.ndarray]:
        self.close()  # (the mappings keep the files' memory)
        return self.arrays

    def close(self) -> None:
        for fd in self.files.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self.files.clear()


def _map_pages(rows: np.ndarray) -> None:
    """Read one byte of every memory page of the contiguous array `rows`, so that its pages are mapped."""
    flat = rows.reshape(-1).view(np.uint8)
    flat[::mmap.PAGESIZE].max(initial=0)
    flat[-1:].max(initial=0)  # (the last page, when the rows do not start on a page boundary)


#: before Python 3.13 (mmap's trackfd) a mapping of a file keeps a duplicate of its descriptor while it lives
_MAPPINGS_KEEP_FILES = sys.version_info < (3, 13)


def _map_file(fd: int, size: int) -> mmap.mmap:
    """The shared mapping of the file `fd`, keeping no descriptor of its own where Python allows (see
    `_room_for` where it does not)."""
    if _MAPPINGS_KEEP_FILES:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, trackfd=False)


def _room_for(count: int) -> None:
    """Make room for `count` more open files: before Python 3.13 every array of a workers' result in memory
    keeps a descriptor while it lives (20-odd per result), so a program that keeps many such results would
    reach the usual soft limit of 1,024 open files. The soft limit is raised towards the hard limit, which
    it never passes, and only when the open files plus `count` would not fit."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError):  # (not Linux: the limit stays as it is)
        return
    need = used + count + 64
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    wanted = max(need, 2 * soft)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))


def _memory_file(name: str) -> int:
    """A new, empty file in memory, open for reading and writing, not inherited by exec'd programs."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create(f"phasediag-{name}", os.MFD_CLOEXEC)
    import tempfile

    fd, path = tempfile.mkstemp(prefix="phasediag-")  # pragma: no cover - not Linux
    os.unlink(path)
    return fd


class StreamedResult:
    """results.npz of the flat points [start, stop), written in place in `folder` (see the module doc).

    `coords`: the coordinate arrays (written at once), `specs`: name -> (shape, dtype) of every data
    variable, in order (the first axis, or axes, spanning the points); `digest`: the config hash the record
    is kept for; `record`: the name of this writer's record (shards writing into one file: one each)."""

    def __init__(self, folder: Path, coords: dict[str, np.ndarray], specs: dict[str, tuple], digest: str,
                 start: int, stop: int, record: str = RECORD):
        self.folder, self.start, self.stop, self.digest = Path(folder), start, stop, digest
        self.record_name, self.shared = record, False
        self.coords = {name: np.asarray(values) for name, values in coords.items()}
        self.layout = npz.Layout([(n, a.shape, a.dtype) for n, a in self.coords.items()]
                                 + [(n, shape, dtype) for n, (shape, dtype) in specs.items()])
        self.path = self.folder / DATA
        self.fd: int | None = None
        self.done: list[tuple[int, int]] = []
        self.values = list(specs)  # the data variables, in the order of a record's CRC-32s
        self.crcs: dict[tuple[int, int], tuple[int, ...]] = {}  # a finished range -> its rows' CRC-32s

    # ---- opening: a new file, or the one an interrupted run left
    def open(self, warn: Callable[[str], None] | None = None) -> list[tuple[int, int]]:
        """Open the file: the one an interrupted run of the same config and range left (its records and
        structure checked; a file that does not pass is replaced, with one line to `warn` if a record claimed
        finished chunks), else a new one. Returns the finished ranges (those of every record in the folder:
        this run's and shards' that wrote into the same file). A failure (a full disk) leaves nothing behind."""
        try:
            return self._open(warn)
        except BaseException:
            self.done = []
            self.close()
            raise

    def open_shared(self, within: tuple[int, int], wait: float = 30.0) -> list[tuple[int, int]]:
        """Open the file as one of several shards writing into it at once (on a shared file system): the
        first lays it out (an exclusive create), the others wait up to `wait` seconds for its structure and
        check it. This writer's chunks go to its own record (`record_name`); nothing is ever removed, and a file
        that does not check out is an error, not replaced (another shard may be writing it). Returns the
        finished ranges of every record; those meeting this shard's flat range `within` are read back and
        checked against their CRC-32s first (`verify`)."""
        self.shared = True
        self._make_folder()
        with contextlib.suppress(FileExistsError), self._naming(self.path):
            npz.create(self.path, self.layout, self.coords)
        if self._records().get(self.record_name) is None:
            self._write_record_header()
        deadline = time.monotonic() + wait
        while (problem := self.check()) is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # (another shard is still laying the file out, or writing its record's header)
        if problem is not None:
            raise ResultsError(f"shared result {self.path}: {problem}; remove {self.folder} to start again")
        self.verify(within)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        return list(self.done)

    def _make_folder(self) -> None:
        """Create the checkpoint folder if it is missing; refuse one that is not a plain folder (a symbolic
        link would have the run write, and later remove, files elsewhere)."""
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir()
        if self.folder.is_symlink() or not self.folder.is_dir():
            raise ResultsError(f"{self.folder} is not a folder phasediag made (a symbolic link or a file); "
                               f"move it away to run here")

    def _open(self, warn) -> list[tuple[int, int]]:
        self._make_folder()
        if self.path.exists() or self._records():
            problem = self.check()
            if problem is None:
                dropped = self.verify()
                if dropped and warn is not None:
                    warn(f"checkpoint {self.path}: {dropped} recorded chunk(s) do not hold the values their record "
                         f"lists; their points are computed again")
                if self._records().get(self.record_name) is None:  # (a folder shards wrote into)
                    self._write_record_header()
                self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                return list(self.done)
            if warn is not None and self._claims_chunks():
                warn(f"checkpoint {self.path}: {problem}; its points are computed again")
        self._remove_files()
        with self._naming(self.path):
            npz.create(self.path, self.layout, self.coords)
        self._write_record_header()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        return []

    def _header(self) -> dict:
        return {"version": _RECORD_VERSION, "config_hash": self.digest, "start": self.start, "stop": self.stop,
                "bytes": self.layout.size}

    def _write_record_header(self) -> None:
        with open(self.folder / self.record_name, "w", encoding="ascii") as fh:
            fh.write(json.dumps(self._header()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _records(self) -> dict[str, list[bytes] | None]:
        """Every record file of the folder (this run's, shards'): name -> its lines (the header first), None
        for one whose header line is not complete (a writer killed while writing it: it claims nothing)."""
        out: dict[str, list[bytes] | None] = {}
        try:
            names = [e.name for e in os.scandir(self.folder) if RECORDS.fullmatch(e.name)]
        except OSError:
            return out
        for name in sorted(names):
            try:
                text = (self.folder / name).read_bytes()
            except OSError:
                continue
            head, newline, rest = text.partition(b"\n")
            out[name] = [head, *rest.split(b"\n")] if newline else None
        return out

    def _claims_chunks(self) -> bool:
        """Whether a record lists any finished chunk: a checkpoint that claims none (a run killed while it was
        being created) loses nothing when it is replaced, so that is done without a warning."""
        return any(lines and any(line.strip() for line in lines[1:]) for lines in self._records().values())

    def check(self) -> str | None:
        """None if the folder holds this run's file and records (self.done set from them), else what is
        wrong (nothing is opened or changed)."""
        records = {name: lines for name, lines in self._records().items() if lines is not None}
        if not records:
            return "its record of finished chunks is missing or unreadable"
        for lines in records.values():
            try:
                header = json.loads(lines[0].decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return "its record of finished chunks is missing or unreadable"
            if header != self._header():
                return "it was computed for another config or range"
        try:
            with open(self.path, "rb") as fh:
                info = os.fstat(fh.fileno())
                if info.st_nlink != 1:  # (committed already: never write into a committed result)
                    return "it is the file of a committed result"
                if info.st_size != self.layout.size:
                    return "it is not the size this run's results have"
                for member in self.layout.members.values():
                    fh.seek(member.offset)
                    expected = self.layout.expected_head(member)
                    if not npz.same_head(fh.read(len(expected)), expected):
                        return "its arrays are not the ones this run stores"
        except OSError as exc:
            return f"unreadable ({exc.strerror})"
        done, crcs = [], {}
        # A line cut short by a kill, or without the CRC-32s its rows are checked against (an older record), is
        # not a record: its points are computed again.
        for lines in records.values():
            for line in lines[1:]:
                parts = line.split()
                if len(parts) != 3 or not all(p.isdigit() for p in parts[:2]) or not _CRC_FIELD.fullmatch(parts[2]) \
                        or len(parts[2]) != 8 * len(self.values):
                    continue
                lo, hi = int(parts[0]), int(parts[1])
                if self.start <= lo < hi <= self.stop:
                    done.append((lo, hi))
                    crcs[(lo, hi)] = tuple(int(parts[2][k:k + 8], 16) for k in range(0, len(parts[2]), 8))
        self.done, self.crcs = done, crcs
        return None

    def verify(self, within: tuple[int, int] | None = None) -> int:
        """Read back the rows of every recorded range (those meeting the flat range `within`, if given) and
        keep only the ranges whose bytes have the CRC-32s their record gives: a resumed run then computes the
        others again instead of completing the file with values, or CRC-32s, that are not what was computed
        (a damaged disk or record). Ranges outside `within` stay listed, with no CRC-32s to complete the file
        from. Returns the number of ranges dropped."""
        keep, trusted, dropped = [], {}, 0
        with open(self.path, "rb") as fh:
            for lo, hi in self.done:
                if within is not None and not (lo < within[1] and within[0] < hi):
                    keep.append((lo, hi))
                    continue
                crcs = self.crcs[(lo, hi)]
                if all(self._rows_crc(fh, name, lo, hi) == crc for name, crc in zip(self.values, crcs)):
                    keep.append((lo, hi))
                    trusted[(lo, hi)] = crcs
                else:
                    dropped += 1
        self.done, self.crcs = keep, trusted
        return dropped

    def _rows_crc(self, fh, name: str, lo: int, hi: int) -> int:
        """The CRC-32 of the bytes of variable `name` at the flat points [lo, hi), read in bounded blocks."""
        member = self.layout.members[name]
        row = member.nbytes // (self.stop - self.start)
        fh.seek(member.data_offset + (lo - self.start) * row)
        crc, left = 0, (hi - lo) * row
        while left:
            block = fh.read(min(left, _VERIFY_BLOCK))
            if not block:
                return -1  # (shorter than its layout: `check` refuses such a file first)
            crc, left = zlib.crc32(block, crc), left - len(block)
        return crc

    # ---- writing
    def write(self, lo: int, hi: int, chunk: dict[str, np.ndarray]) -> tuple[int, ...] | None:
        """Write the chunk of flat points [lo, hi) into place (from any process that inherited the file).
        Returns the receipt that `record` keeps with the range: the CRC-32 of each data variable's rows, in
        the order of `values` (None if the chunk does not hold them all)."""
        with self._naming(self.path):
            crcs = {name: npz.write_rows(self.fd, self.layout.members[name], lo - self.start, values)
                    for name, values in chunk.items()}
        return tuple(crcs[name] for name in self.values) if crcs.keys() == set(self.values) else None

    @staticmethod
    @contextlib.contextmanager
    def _naming(path: Path):
        """An OSError of a write to a descriptor (a full disk) names the file."""
        try:
            yield
        except OSError as exc:
            if exc.filename is None and exc.errno is not None:
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise

    def record(self, finished: list[tuple[int, int, tuple[int, ...] | None]]) -> None:
        """Make the chunks `finished` ((lo, hi, the receipt `write` returned)) durable, then list them in the
        record with their CRC-32s (in that order: the record never claims a chunk whose values might not be
        on disk)."""
        if not finished:
            return
        with self._naming(self.path):
            os.fsync(self.fd)
        text = "".join(f"{lo} {hi}" + (" " + "".join(f"{c:08x}" for c in crcs) if crcs else "") + "\n"
                       for lo, hi, crcs in finished)
        fd = os.open(self.folder / self.record_name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            with self._naming(self.folder / self.record_name):
                os.write(fd, text.encode("ascii"))
                os.fsync(fd)
        finally:
            os.close(fd)
        self.done.extend((lo, hi) for lo, hi, _ in finished)
        self.crcs.update(((lo, hi), crcs) for lo, hi, crcs in finished if crcs)

    def finish(self) -> dict[str, np.ndarray]:
        """Complete the file (CRC-32s) and return its data variables, memory-mapped read-only."""
        with self._naming(self.path):
            npz.finish(self.path, self.layout, self._value_crcs())
        os.close(self.fd)
        self.fd = None
        arrays = npz.open_arrays(self.path)
        return {name: arrays[name] for name in self.layout.members if name not in self.coords}

    def _value_crcs(self) -> dict[str, int]:
        """name -> the CRC-32 of each data variable's values, combined from the records' CRC-32s of ranges
        that tile [start, stop) (from each start the longest range); {} where they do not (a record without
        them, ranges of different chunkings that do not line up): finish then reads the values back."""
        longest: dict[int, tuple[int, tuple[int, ...]]] = {}
        for (lo, hi), crcs in self.crcs.items():  # (every range in [start, stop), as `check` and `record` keep)
            if hi > longest.get(lo, (lo,))[0]:
                longest[lo] = (hi, crcs)
        pieces, at = [], self.start
        while at < self.stop:
            if at not in longest:
                return {}
            hi, crcs = longest[at]
            pieces.append((hi - at, crcs))
            at = hi
        out = {}
        for k, name in enumerate(self.values):
            row = self.layout.members[name].nbytes // (self.stop - self.start)
            crc = 0  # (of no bytes)
            for points, crcs in pieces:
                crc = npz.crc32_combine(crc, crcs[k], points * row)
            out[name] = crc
        return out

    def discard(self) -> None:
        """Close and remove the file and its record (a result that can never be completed: a bad value)."""
        self.done = []
        self.close()

    def close(self) -> None:
        """Close the file; a run stopped before any chunk was recorded leaves nothing behind."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if not self.done and not self.shared:
            self._remove_files()
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def _remove_files(self) -> None:
        if self.folder.is_symlink():  # (not ours: refused by _make_folder, never emptied)
            return
        for name in [DATA, *self._records()]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)
