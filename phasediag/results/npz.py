"""results.npz laid out before its values exist, so that every array is written into place, once.

An ``.npz`` file is a zip archive of ``.npy`` files. With no compression each member's bytes are contiguous,
so once the shapes and dtypes are known, the offset of every value is known: :class:`Layout` computes the
archive's headers, a run writes them and its coordinates first (:func:`create`, the rest of the file left
as a hole), its chunks go straight to their rows from any process (:func:`write_rows`, ``os.pwrite``), and
:func:`finish` fills in the one thing that needs the values, each member's CRC-32 (combined from the CRC-32s
of the chunks that :func:`write_rows` returns where the writer kept them, :func:`crc32_combine`; read back
otherwise). The file is
byte-for-byte what ``np.savez`` with fixed timestamps writes (``zipfile``, ZIP64 records forced), so
``np.load`` reads it, and :func:`open_arrays` maps it without reading it (``mmap_mode`` for an archive).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import os
import re
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["Member", "Layout", "create", "write_rows", "pwrite_all", "finish", "write", "extents", "open_arrays",
           "copy_bytes", "read_blocks", "code_counts", "same_head", "crc32_combine"]

_LOCAL = struct.Struct("<4s2B4HL2L2H")          # zipfile.structFileHeader
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")      # zipfile.structCentralDir
_END = struct.Struct("<4s4H2LH")                # zipfile.structEndArchive
_END64 = struct.Struct("<4sQ2H2L4Q")            # zipfile.structEndArchive64
_LOCATOR64 = struct.Struct("<4sLQL")            # zipfile.structEndArchive64Locator
_ZIP64_EXTRA = struct.Struct("<HHQQ")
_ZIP64_LIMIT = (1 << 31) - 1                    # zipfile.ZIP64_LIMIT
_VERSION = 45                                   # zipfile.ZIP64_VERSION: every member has a ZIP64 record
_DOS_DATE = (1980 - 1980) << 9 | 1 << 5 | 1     # 1980-01-01 00:00:00, the fixed timestamp of every entry
_ATTRIBUTES = 0o600 << 16                       # what zipfile gives a member written through ZipFile.open
_SYSTEM = 0 if sys.platform == "win32" else 3
_CRC_AT = 14                                    # byte offset of the CRC-32 in a local header
_BLOCK = 1 << 24
_READ_BLOCK = 1 << 22  # a block read back into one reused buffer: measured fastest here (4 MiB)


@dataclass(frozen=True)
class Member:
    """One array of the archive: `<name>.npy`, its local header at `offset`, its values at `data_offset`."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    npy_header: bytes

    @property
    def filename(self) -> bytes:
        return f"{self.name}.npy".encode("ascii")

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=object)) * self.dtype.itemsize

    @property
    def size(self) -> int:
        """Bytes of the member (the .npy file): its header and its values."""
        return len(self.npy_header) + self.nbytes

    @property
    def data_offset(self) -> int:
        return self.offset + _LOCAL.size + len(self.filename) + _ZIP64_EXTRA.size + len(self.npy_header)

    def local_header(self, crc: int) -> bytes:
        extra = _ZIP64_EXTRA.pack(1, 16, self.size, self.size)
        return _LOCAL.pack(b"PK\x03\x04", _VERSION, 0, 0, 0, 0, _DOS_DATE, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(self.filename), len(extra)) + self.filename + extra

    def central_header(self, crc: int) -> bytes:
        extra = []
        size = self.size
        if size > _ZIP64_LIMIT:
            extra += [size, size]
            size = 0xFFFFFFFF
        offset = self.offset
        if offset > _ZIP64_LIMIT:
            extra.append(offset)
            offset = 0xFFFFFFFF
        data = struct.pack("<HH" + "Q" * len(extra), 1, 8 * len(extra), *extra) if extra else b""
        return _CENTRAL.pack(b"PK\x01\x02", _VERSION, _SYSTEM, _VERSION, 0, 0, 0, 0, _DOS_DATE, crc, size, size,
                             len(self.filename), len(data), 0, 0, 0, _ATTRIBUTES, offset) + self.filename + data


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(buffer, header)
    except ValueError:  # a header longer than 64 KiB (very many dimensions): format 2.0
        buffer = io.BytesIO()
        np.lib.format.write_array_header_2_0(buffer, header)
    return buffer.getvalue()


class Layout:
    """Where everything of an archive of arrays `specs` ((name, shape, dtype), in order) lies."""

    def __init__(self, specs):
        self.members: dict[str, Member] = {}
        offset = 0
        for name, shape, dtype in specs:
            dtype = np.dtype(dtype)
            if dtype.hasobject:
                raise ValueError(f"{name}: object arrays cannot be stored")
            member = Member(name, tuple(int(n) for n in shape), dtype, offset, _npy_header(shape, dtype))
            self.members[name] = member
            offset = member.data_offset + member.nbytes
        self.central_offset = offset

    def central_directory(self, crcs: dict[str, int]) -> bytes:
        body = b"".join(m.central_header(crcs.get(m.name, 0)) for m in self.members.values())
        count, size, offset = len(self.members), len(body), self.central_offset
        tail = b""
        if count > 0xFFFF or offset > _ZIP64_LIMIT or size > _ZIP64_LIMIT:
            tail = (_END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)
                    + _LOCATOR64.pack(b"PK\x06\x07", 0, offset + size, 1))
            count, size, offset = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(offset, 0xFFFFFFFF)
        return body + tail + _END.pack(b"PK\x05\x06", 0, 0, count, count, size, offset, 0)

    @property
    def size(self) -> int:
        return self.central_offset + len(self.central_directory({}))

    def expected_head(self, member: Member) -> bytes:
        """The bytes before `member`'s values with its CRC still unset (how :func:`create` leaves them)."""
        return member.local_header(0) + member.npy_header


def same_head(found: bytes, expected: bytes) -> bool:
    """Whether a member's local header and .npy header are `expected` but for the CRC (set by `finish`)."""
    return (len(found) == len(expected) and found[:_CRC_AT] == expected[:_CRC_AT]
            and found[_CRC_AT + 4:] == expected[_CRC_AT + 4:])


def _raw(data) -> memoryview:
    """The bytes of a C-contiguous array (or bytes) as a flat view."""
    return memoryview(data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data)


def pwrite_all(fd: int, data, offset: int) -> None:
    """Write all of `data` (bytes, or a C-contiguous array's bytes) at `offset` of the file `fd`."""
    view = _raw(data)
    while view.nbytes:  # (a single pwrite may write less, e.g. above 2 GiB)
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


def create(path: Path, layout: Layout, values: dict[str, np.ndarray]) -> None:
    """Write the archive's structure and the arrays in `values` (the rest stay a hole of zeros, to be
    filled by :func:`write_rows`); the file must not exist."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        _write_archive(fd, layout, values, {})
    finally:
        os.close(fd)


def _write_archive(fd: int, layout: Layout, values: dict[str, np.ndarray], crcs: dict[str, int]) -> None:
    """Every member's headers (with its CRC-32 from `crcs`, else 0), the whole arrays in `values`, the
    central directory."""
    for name, member in layout.members.items():
        pwrite_all(fd, member.local_header(crcs.get(name, 0)) + member.npy_header, member.offset)
        if name in values:
            pwrite_all(fd, np.ascontiguousarray(values[name], dtype=member.dtype), member.data_offset)
    pwrite_all(fd, layout.central_directory(crcs), layout.central_offset)


def write_rows(fd: int, member: Member, lo: int, values: np.ndarray) -> int:
    """Write `values` into `member` as its flat rows lo, lo+1, ... (a row: one point; its size is that of
    values[0]; broadcast views are expanded). Returns the CRC-32 of the bytes written, computed while they
    are in the cache, so that :func:`finish` need not read them back (:func:`crc32_combine`)."""
    data = np.ascontiguousarray(values, dtype=member.dtype)
    row = data.nbytes // len(data) if len(data) else 0
    if lo < 0 or (lo + len(data)) * row > member.nbytes:
        raise ValueError(f"{member.name}: rows [{lo}, {lo + len(data)}) are outside the array")
    pwrite_all(fd, data, member.data_offset + lo * row)
    return zlib.crc32(_raw(data))


_CRC_POLYNOMIAL = 0xEDB88320  # CRC-32's, bit-reflected (zlib's POLY)


def _multiply_mod(a: int, b: int) -> int:
    """a * b modulo the CRC-32 polynomial, both bit-reflected; a != 0 (zlib's multmodp)."""
    m, product = 1 << 31, 0
    while True:
        if a & m:
            product ^= b
            if not a & (m - 1):
                return product
        m >>= 1
        b = (b >> 1) ^ _CRC_POLYNOMIAL if b & 1 else b >> 1


@functools.lru_cache(maxsize=64)  # (a result's chunks have a few lengths: each power is computed once)
def _shift(length: int) -> int:
    """x^(8 length) modulo the CRC-32 polynomial: appending `length` bytes multiplies a CRC by it."""
    power, square = 1 << 31, 1 << 30  # x^0, and x^1 squared below to x^(2^k)
    bits = 8 * length
    while bits:
        if bits & 1:
            power = _multiply_mod(square, power)
        square = _multiply_mod(square, square)
        bits >>= 1
    return power


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of the bytes a + b from crc1 = zlib.crc32(a), crc2 = zlib.crc32(b) and length2 = len(b)
    (zlib's crc32_combine, which Python's zlib does not offer). CRC-32 is linear over GF(2): appending b
    multiplies crc(a) by x^(8 len(b)) modulo the polynomial and adds crc(b)."""
    return _multiply_mod(_shift(length2), crc1) ^ crc2


def member_crc(fd: int, member: Member) -> int:
    """CRC-32 of the member's bytes (its .npy header and values), read back from the file."""
    crc = zlib.crc32(member.npy_header)
    start, stop = member.data_offset, member.data_offset + member.nbytes
    buffer = memoryview(bytearray(min(_READ_BLOCK, member.nbytes)))  # (reused: no fresh memory per block)
    while start < stop:
        done = os.preadv(fd, [buffer[:min(len(buffer), stop - start)]], start)
        if not done:
            raise OSError(errno.EIO, f"the file ends inside {member.filename.decode()}")  # (callers add its name)
        crc = zlib.crc32(buffer[:done], crc)
        start += done
    return crc


def finish(path: Path, layout: Layout, value_crcs: dict[str, int] | None = None) -> None:
    """Complete an archive whose values are all written: set every member's CRC-32, flush it to disk.
    `value_crcs`: name -> the CRC-32 of a member's values (without its .npy header) where the writers know
    it (combined from what :func:`write_rows` returned); the other members are read back."""
    known = value_crcs or {}
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        _check_length(fd, layout)
        crcs = {}
        for member in layout.members.values():
            if member.name in known:
                crc = crc32_combine(zlib.crc32(member.npy_header), known[member.name], member.nbytes)
            else:
                crc = member_crc(fd, member)
            crcs[member.name] = crc
            pwrite_all(fd, struct.pack("<L", crc), member.offset + _CRC_AT)
        pwrite_all(fd, layout.central_directory(crcs), layout.central_offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_length(fd: int, layout: Layout) -> None:
    """OSError if the file is shorter than its layout (cut short by someone else): completing it would
    extend it with zeros where values were."""
    length = os.fstat(fd).st_size
    if length < layout.size:
        inside = next((m.filename.decode() for m in layout.members.values() if length < m.data_offset + m.nbytes),
                      "its central directory")
        raise OSError(errno.EIO, f"the file ends inside {inside}")  # (callers add its name)


def write(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The archive of `arrays` (already in memory), written in one go (replacing what `path` holds)."""
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    layout = Layout([(name, a.shape, a.dtype) for name, a in arrays.items()])
    crcs = {name: zlib.crc32(_raw(np.ascontiguousarray(arrays[name])), zlib.crc32(m.npy_header))
            for name, m in layout.members.items()}
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_archive(fd, layout, arrays, crcs)
    finally:
        os.close(fd)


def extents(path: Path | BinaryIO) -> dict[str, tuple[int, tuple[int, ...], np.dtype, bool]]:
    """name -> (offset of its first value, shape, dtype, Fortran order) of every array of an uncompressed
    .npz (a path, or a file open for binary reading: its position is kept), from its headers; ValueError for a
    compressed member or anything that is not an array."""
    return _on_file(path, _extents_of)  # (one open: the archive's directory and its headers are one file)


def _extents_of(fh: BinaryIO) -> dict[str, tuple[int, tuple[int, ...], np.dtype, bool]]:
    import zipfile

    out = {}
    with zipfile.ZipFile(fh) as archive:  # (a file passed in is left open)
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{info.filename} is compressed: it cannot be memory-mapped")
            fh.seek(info.header_offset)
            head = fh.read(_LOCAL.size)
            if len(head) != _LOCAL.size or head[:4] != b"PK\x03\x04":
                raise ValueError(f"{info.filename}: no local header where the archive says")
            name_len, extra_len = struct.unpack("<2H", head[26:30])
            start = info.header_offset + _LOCAL.size + name_len + extra_len
            fh.seek(start)
            shape, fortran, dtype = _read_npy_header(fh)
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects")
            count = int(np.prod(shape, dtype=object))
            if fh.tell() - start + count * dtype.itemsize != info.file_size:
                raise ValueError(f"{info.filename}: its header does not fit its size")
            out[name] = (fh.tell(), tuple(shape), dtype, fortran)
    return out


#: the header numpy writes (np.save, np.savez, _npy_header), parsed without Python's compiler: a merge reads
#: ~25 headers per shard, and numpy's literal_eval of each was a tenth of merging 100 shards
_HEADER = re.compile(rb"\{'descr': '([<>|=][a-zA-Z][0-9]*)', 'fortran_order': (True|False), "
                     rb"'shape': \(((?:[0-9]+, )*[0-9]+,?|)\), \} *\n")


_MAX_HEADER = 10_000  # numpy's max_header_size: longer headers are refused as untrusted


@functools.lru_cache(maxsize=64)
def _descr_dtype(descr: bytes) -> np.dtype:
    return np.dtype(descr.decode("ascii"))


def _read_npy_header(fh) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) of the .npy header at fh's position, which is left at the first value;
    numpy's own reader for any header but the one it writes (ValueError for what is not a .npy header)."""
    start = fh.tell()
    version = np.lib.format.read_magic(fh)
    size_format = "<H" if version == (1, 0) else "<I"
    length = fh.read(struct.calcsize(size_format))
    size = struct.unpack(size_format, length)[0] if len(length) == struct.calcsize(size_format) else 0
    if size > _MAX_HEADER:  # (numpy reads such a header, up to the end of the file, before it refuses it)
        raise ValueError(f"an array header of {size:,} bytes, beyond numpy's limit of {_MAX_HEADER:,}")
    header = fh.read(size)
    match = _HEADER.fullmatch(header)
    if match and version in ((1, 0), (2, 0)):
        descr, fortran, dims = match.groups()
        with contextlib.suppress(TypeError, ValueError):  # (a descr numpy does not know: its reader says so)
            dtype = _descr_dtype(descr)
            return tuple(int(d) for d in dims.split(b",") if d.strip()), fortran == b"True", dtype
    fh.seek(start)
    np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(fh)


def open_arrays(path: Path | BinaryIO) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz as read-only memory maps (none of the values is read). ValueError
    for a compressed member or anything that is not an array. `path` may be a file open for binary reading
    (its position is kept): the maps are then of that very file (its inode), even if its name has been given
    to another file since it was opened (a reader that verified the open file maps what it verified)."""
    return _on_file(path, _map_arrays)  # (one open for all: numpy resolves a path anew for every map)


def _on_file(path: Path | BinaryIO, read):
    """`read(fh)` of the file `path` names (opened once), or of the open file `path` (its position kept)."""
    if isinstance(path, (str, os.PathLike)):
        with open(path, "rb") as fh:
            return read(fh)
    position = path.tell()
    try:
        return read(path)
    finally:
        path.seek(position)


def _map_arrays(fh: BinaryIO) -> dict[str, np.ndarray]:
    out = {}
    for name, (offset, shape, dtype, fortran) in extents(fh).items():
        if int(np.prod(shape)) == 0:
            out[name] = np.empty(shape, dtype)
            continue
        out[name] = np.memmap(fh, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
    return out


def copy_bytes(source: int, start: int, target: int, offset: int, size: int) -> None:
    """Copy `size` bytes at `start` of file `source` to `offset` of file `target` (descriptors), in the kernel
    where it can (copy_file_range), else through one bounded buffer: memory never holds more than a block."""
    copy = getattr(os, "copy_file_range", None)
    while size > 0:
        done = 0
        if copy is not None:
            try:
                done = copy(source, target, min(size, 1 << 30), start, offset)
            except OSError:
                copy = None  # (a file system or kernel without it: copy through a buffer from here on)
        if not done:
            block = os.pread(source, min(size, _BLOCK), start)
            if not block:
                raise OSError(f"the source file ends {size} bytes early")
            pwrite_all(target, block, offset)
            done = len(block)
        start, offset, size = start + done, offset + done, size - done


def read_blocks(array: np.ndarray, rows: int = _BLOCK):
    """The values of `array` (flattened) in blocks of at most `rows` values (copies). For a memory-mapped
    array each block's pages are given back to the kernel once copied (madvise DONTNEED: the file keeps
    them), so that a check or count over a result larger than memory holds one block, not the file."""
    import mmap

    flat = np.asarray(array).reshape(-1)
    root = array.base if isinstance(array, np.memmap) else None
    mapped = (isinstance(root, mmap.mmap) and getattr(array, "mode", None) == "r"  # (read-only: nothing lost)
              and array.flags.c_contiguous and hasattr(root, "madvise"))
    start = np.frombuffer(root, dtype=np.uint8).ctypes.data if mapped else 0
    for lo in range(0, flat.size, rows):
        block = np.array(flat[lo:lo + rows])
        if mapped:
            first = flat[lo:].ctypes.data - start
            last = first + block.nbytes
            page = mmap.PAGESIZE
            aligned = first // page * page
            with contextlib.suppress(OSError, ValueError):
                root.madvise(mmap.MADV_DONTNEED, aligned, min(last, len(root)) - aligned)
        yield block


def code_counts(array: np.ndarray) -> dict[int, int]:
    """How many times each value of an integer array occurs, counted block by block (:func:`read_blocks`)."""
    total: dict[int, int] = {}
    for block in read_blocks(array):
        codes, freq = np.unique(block, return_counts=True)
        for code, count in zip(codes.tolist(), freq.tolist()):
            total[code] = total.get(code, 0) + count
    return total
