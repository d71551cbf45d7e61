"""results.npz laid out in advance (results.npz, results.stream): the same bytes as zipfile's np.savez-style
archive, written chunk by chunk in any order, mapped without reading, ZIP64 past 2 GiB; the record of
finished chunks never runs ahead of the values on disk."""

import os
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phasediag.errors import ResultsError
from phasediag.results import npz, stream


def reference_npz(path, arrays):
    """What np.savez with fixed timestamps writes: zipfile, stored, ZIP64 records forced (an independent writer)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asarray(array), allow_pickle=False)


DTYPES = st.sampled_from(["<f8", "<f4", "|i1", "<i8", "<u2", "|b1", "<U7"])
SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)


@st.composite
def array_sets(draw):
    names = draw(st.lists(st.from_regex(r"[a-z][a-z_0-9]{0,11}", fullmatch=True), min_size=1, max_size=5,
                          unique=True))
    out = {}
    for name in names:
        dtype, shape = np.dtype(draw(DTYPES)), draw(SHAPES)
        count = int(np.prod(shape))
        raw = np.frombuffer(draw(st.binary(min_size=count * 8, max_size=count * 8)), dtype=np.uint8)
        if dtype.kind == "U":
            values = np.array([f"v{b}" for b in raw[:count]], dtype=dtype).reshape(shape)
        elif dtype.kind == "b":
            values = (raw[:count] % 2).astype(bool).reshape(shape)
        else:
            values = raw[:count * dtype.itemsize].view(dtype).reshape(shape) if count else np.zeros(shape, dtype)
        out[name] = values
    return out


@settings(max_examples=60, deadline=None)
@given(arrays=array_sets(), seed=st.integers(0, 2**32 - 1))
def test_written_and_streamed_archives_are_zipfiles_bytes(tmp_path_factory, arrays, seed):
    tmp = tmp_path_factory.mktemp("npz")
    reference_npz(tmp / "ref.npz", arrays)
    npz.write(tmp / "one.npz", arrays)
    assert (tmp / "one.npz").read_bytes() == (tmp / "ref.npz").read_bytes()
    # streamed: the structure first, then every array's rows in random pieces and a random order
    layout = npz.Layout([(n, a.shape, a.dtype) for n, a in arrays.items()])
    scalars = {n: a for n, a in arrays.items() if a.ndim == 0}
    npz.create(tmp / "streamed.npz", layout, scalars)
    rng = np.random.default_rng(seed)
    pieces = []
    for name, a in arrays.items():
        if a.ndim and len(a):
            cuts = sorted(set(rng.integers(0, len(a), 3).tolist()) | {0, len(a)})
            pieces += [(name, lo, hi) for lo, hi in zip(cuts, cuts[1:])]
    fd = os.open(tmp / "streamed.npz", os.O_RDWR)
    receipts = {}
    for k in rng.permutation(len(pieces)):
        name, lo, hi = pieces[k]
        receipts[name, lo] = (npz.write_rows(fd, layout.members[name], lo, arrays[name][lo:hi]),
                              arrays[name][lo:hi].nbytes)
    os.close(fd)
    (tmp / "read_back.npz").write_bytes((tmp / "streamed.npz").read_bytes())
    npz.finish(tmp / "read_back.npz", layout)
    assert (tmp / "read_back.npz").read_bytes() == (tmp / "ref.npz").read_bytes()
    # the same with each member's CRC-32 combined from those of its pieces, in the order of their rows
    value_crcs = {}
    for name in {name for name, _ in receipts}:
        crc = 0
        for _, lo in sorted(key for key in receipts if key[0] == name):
            crc = npz.crc32_combine(crc, *receipts[name, lo])
        value_crcs[name] = crc
    npz.finish(tmp / "streamed.npz", layout, value_crcs)
    assert (tmp / "streamed.npz").read_bytes() == (tmp / "ref.npz").read_bytes()
    mapped = npz.open_arrays(tmp / "streamed.npz")
    assert list(mapped) == list(arrays)
    for name, a in arrays.items():
        assert mapped[name].dtype == a.dtype and mapped[name].shape == a.shape and mapped[name].tobytes() == a.tobytes()


@settings(max_examples=200, deadline=None)
@given(first=st.binary(max_size=3000), second=st.binary(max_size=3000), seed=st.integers(0, 2**32 - 1))
def test_crc32_combine_is_the_crc32_of_the_concatenation(first, second, seed):
    """zlib.crc32 of a + b (the independent reference) from the CRC-32s of a and b and the length of b,
    whatever the CRC-32 a was started from."""
    start = seed & 0xFFFFFFFF
    assert npz.crc32_combine(zlib.crc32(first, start), zlib.crc32(second), len(second)) == zlib.crc32(first + second,
                                                                                                   start)


def test_crc32_combine_across_lengths_past_4_gib():
    """A member past 2^32 bytes (a 1e9-point sweep's): a followed by n = 2^32 + 5 zero bytes, its CRC-32
    computed by zlib in 4 MiB steps, equals the combination of crc32(a) and crc32(n zeros)."""
    a, n, block = b"phasediag", (1 << 32) + 5, bytes(1 << 22)
    zeros, after_a = 0, zlib.crc32(a)
    for _ in range(n // len(block)):
        zeros, after_a = zlib.crc32(block, zeros), zlib.crc32(block, after_a)
    tail = bytes(n % len(block))
    zeros, after_a = zlib.crc32(tail, zeros), zlib.crc32(tail, after_a)
    assert npz.crc32_combine(zlib.crc32(a), zeros, n) == after_a
    assert npz.crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)


def test_rows_outside_an_array_are_refused(tmp_path):
    layout = npz.Layout([("x", (4, 3), "<f8")])
    npz.create(tmp_path / "a.npz", layout, {})
    fd = os.open(tmp_path / "a.npz", os.O_RDWR)
    try:
        with pytest.raises(ValueError, match=r"rows \[3, 5\)"):
            npz.write_rows(fd, layout.members["x"], 3, np.zeros((2, 3)))
        npz.write_rows(fd, layout.members["x"], 3, np.ones((1, 3)))  # the last row fits
    finally:
        os.close(fd)


def test_members_past_2_gib_use_zip64_records(tmp_path):
    """A member larger than 2 GiB and one that starts past 2 GiB: zipfile and np.load read both, the values
    never written are the hole's zeros (the file is sparse until written), and mapping reads nothing."""
    big = (1 << 31) // 8 + 1000
    layout = npz.Layout([("first", (3,), "<f8"), ("big", (big,), "<f8"), ("after", (5,), "|i1")])
    path = tmp_path / "big.npz"
    npz.create(path, layout, {"first": np.arange(3.0)})
    fd = os.open(path, os.O_RDWR)
    npz.write_rows(fd, layout.members["big"], big - 2, np.array([7.0, 8.0]))
    npz.write_rows(fd, layout.members["after"], 0, np.arange(5, dtype=np.int8))
    os.close(fd)
    npz.finish(path, layout)
    infos = {i.filename: i for i in zipfile.ZipFile(path).infolist()}
    assert infos["big.npy"].file_size > 1 << 31 and infos["after.npy"].header_offset > 1 << 31
    with np.load(path) as data:
        assert list(data["after"]) == [0, 1, 2, 3, 4] and list(data["first"]) == [0.0, 1.0, 2.0]
    mapped = npz.open_arrays(path)
    assert mapped["big"].shape == (big,) and list(mapped["big"][-3:]) == [0.0, 7.0, 8.0]
    with zipfile.ZipFile(path) as archive, archive.open("after.npy") as fh:  # its CRC-32 checks out
        fh.read()


def test_the_record_never_claims_a_chunk_before_its_values_are_on_disk(tmp_path, monkeypatch):
    events = []
    result = stream.StreamedResult(tmp_path, {"x": np.arange(4.0)}, {"v": ((10,), np.dtype("<f8"))}, "ab" * 8, 0, 10)
    assert result.open() == []
    real_fsync, real_write = os.fsync, os.write
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", fd)) or real_fsync(fd))
    monkeypatch.setattr(os, "write", lambda fd, data: events.append(("append", fd)) or real_write(fd, data))
    receipt = result.write(0, 5, {"v": np.arange(5.0)})
    result.record([(0, 5, receipt)])
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "fsync" and events[0][1] == result.fd  # the values first...
    assert kinds[1:] == ["append", "fsync"]  # ...then the record, itself made durable
    result.close()
    again = stream.StreamedResult(tmp_path, {"x": np.arange(4.0)}, {"v": ((10,), np.dtype("<f8"))}, "ab" * 8, 0, 10)
    assert again.open() == [(0, 5)]
    again.close()


def _streamed(folder):
    return stream.StreamedResult(folder, {"x": np.arange(4.0)}, {"v": ((10,), np.dtype("<f8")),
                                                                 "k": ((10, 2), np.dtype("|i1"))}, "ab" * 8, 0, 10)


VALUES = {"v": np.linspace(-1, 1, 10), "k": np.arange(20, dtype=np.int8).reshape(10, 2)}


def _write(result, lo, hi):
    return result.write(lo, hi, {name: a[lo:hi] for name, a in VALUES.items()})


def _read_back(monkeypatch):
    """The members whose values npz.finish reads back from the file."""
    names, real = [], npz.member_crc
    monkeypatch.setattr(npz, "member_crc", lambda fd, member: names.append(member.name) or real(fd, member))
    return names


def _assert_finishes_as_the_reference(resumed, tmp_path, monkeypatch) -> None:
    """Completing `resumed` reads back only the coordinate `x` (written at once, it has no record) and gives
    the reference archive, byte for byte."""
    read_back = _read_back(monkeypatch)
    resumed.finish()
    assert read_back == ["x"]
    reference_npz(tmp_path / "ref.npz", {"x": np.arange(4.0), **VALUES})
    assert resumed.path.read_bytes() == (tmp_path / "ref.npz").read_bytes()


@pytest.mark.parametrize("chunks", [[(0, 10)], [(0, 3), (3, 7), (7, 10)], [(0, 3), (0, 5), (5, 10), (3, 9)]])
def test_a_streamed_file_is_completed_from_its_chunks_crcs(tmp_path, monkeypatch, chunks):
    """The records keep each chunk's CRC-32s; completing the file combines them (the values are not read back)
    into the CRC-32s zipfile computes (the reference archive), across a resumed run's records too; ranges
    that overlap (two chunkings) are tiled from the start by the longest range."""
    result = _streamed(tmp_path / "run")
    result.open()
    for lo, hi in chunks[:1]:
        result.record([(lo, hi, _write(result, lo, hi))])
    result.close()
    resumed = _streamed(tmp_path / "run")  # (a resumed run: the first chunk's CRC-32s come from the record)
    assert resumed.open() == chunks[:1]
    resumed.record([(lo, hi, _write(resumed, lo, hi)) for lo, hi in chunks[1:]])
    _assert_finishes_as_the_reference(resumed, tmp_path, monkeypatch)


@pytest.mark.parametrize("line", [b"0 5", b"0 5 0a1b2c", b"0 5 " + b"g" * 16])
def test_a_record_line_without_whole_crcs_claims_nothing(tmp_path, monkeypatch, line):
    """A range recorded without CRC-32s (an older record, a hand-written line), or with CRC-32s cut short or
    not hexadecimal, claims nothing: its rows cannot be checked, so they are computed again."""
    result = _streamed(tmp_path / "run")
    result.open()
    _write(result, 0, 5)
    result.record([(5, 10, _write(result, 5, 10))])
    with open(result.folder / stream.RECORD, "ab") as fh:
        fh.write(line + b"\n")
    result.close()
    resumed = _streamed(tmp_path / "run")
    assert resumed.open() == [(5, 10)]
    resumed.record([(0, 5, _write(resumed, 0, 5))])
    _assert_finishes_as_the_reference(resumed, tmp_path, monkeypatch)


def _damage_record(result, line_number: int) -> None:
    """Change one hexadecimal digit of the CRC-32s on record line `line_number` (1: the first range)."""
    lines = (result.folder / stream.RECORD).read_bytes().split(b"\n")
    lo, hi, crcs = lines[line_number].split()
    lines[line_number] = b" ".join([lo, hi, (b"0" if crcs[:1] != b"0" else b"1") + crcs[1:]])
    (result.folder / stream.RECORD).write_bytes(b"\n".join(lines))


def _damage_rows(result, name: str, point: int) -> None:
    """Overwrite the bytes of variable `name` at flat point `point` in the file, as a failing disk might."""
    member = result.layout.members[name]
    row = member.nbytes // (result.stop - result.start)
    with open(result.path, "r+b") as fh:
        fh.seek(member.data_offset + point * row)
        fh.write(bytes(255 - b for b in fh.read(row)))


@pytest.mark.parametrize("damage", ["record", "rows"])
def test_a_resumed_run_computes_again_the_chunks_whose_rows_fail_their_crcs(tmp_path, monkeypatch, damage):
    """A resumed run reads back its recorded rows and keeps only the ranges whose bytes have their record's
    CRC-32s: a damaged CRC-32 (which would otherwise be stamped into the completed archive) or damaged values
    (which would otherwise be committed) send the range's points to be computed again, with a warning. The
    completed file is then the reference archive, byte for byte."""
    result = _streamed(tmp_path / "run")
    result.open()
    result.record([(lo, hi, _write(result, lo, hi)) for lo, hi in [(0, 3), (3, 7), (7, 10)]])
    result.close()
    if damage == "record":
        _damage_record(result, 2)  # (3, 7)
    else:
        _damage_rows(result, "k", 4)
    warnings = []
    resumed = _streamed(tmp_path / "run")
    assert resumed.open(warnings.append) == [(0, 3), (7, 10)]
    assert len(warnings) == 1 and "1 recorded chunk(s) do not hold the values" in warnings[0]
    resumed.record([(3, 7, _write(resumed, 3, 7))])
    _assert_finishes_as_the_reference(resumed, tmp_path, monkeypatch)


def test_a_shared_writer_checks_only_the_ranges_of_its_own_shard(tmp_path):
    """open_shared reads back the recorded ranges that meet its own flat range; others' stay listed but give
    no CRC-32s to complete the file from (the writer that completes it reads them back)."""
    result = _streamed(tmp_path / "run")
    result.open()
    result.record([(lo, hi, _write(result, lo, hi)) for lo, hi in [(0, 5), (5, 10)]])
    result.close()
    _damage_rows(result, "v", 1)
    _damage_rows(result, "v", 8)
    shard = _streamed(tmp_path / "run")
    assert shard.open_shared((5, 10), wait=0) == [(0, 5)]
    assert list(shard.crcs) == []
    shard.close()


def test_a_checkpoint_folder_that_is_a_symbolic_link_is_refused_and_left_alone(tmp_path):
    """A `.partial-*` name that is a symbolic link is not the run's folder: refused (a ResultsError, exit status
    2 in the CLI), and nothing is written or removed where it points."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_text("mine")
    (target / stream.RECORD).write_text("not a record")
    link = tmp_path / ".partial-0123456789abcdef"
    link.symlink_to(target)
    for open_it in (lambda r: r.open(), lambda r: r.open_shared((0, 10), wait=0)):
        with pytest.raises(ResultsError, match="not a folder phasediag made"):
            open_it(_streamed(link))
        assert sorted(p.name for p in target.iterdir()) == [stream.RECORD, "precious"]
        assert (target / stream.RECORD).read_text() == "not a record" and link.is_symlink()


def test_completing_a_file_cut_short_underneath_names_it(tmp_path):
    """A results.npz truncated by someone else before it is completed: an OSError naming the file (and the
    member it ends in), not a wrong CRC-32."""
    result = stream.StreamedResult(tmp_path, {"x": np.arange(4.0)}, {"v": ((10,), np.dtype("<f8"))}, "ab" * 8, 0, 10)
    result.open()
    receipt = result.write(0, 10, {"v": np.arange(10.0)})
    result.record([(0, 10, receipt)])
    os.truncate(result.path, 200)
    with pytest.raises(OSError) as info:
        result.finish()
    assert info.value.filename == str(result.path) and "ends inside x.npy" in str(info.value)
    result.close()


def test_a_run_that_records_nothing_leaves_nothing(tmp_path):
    folder = tmp_path / ".partial-0123456789abcdef"
    result = stream.StreamedResult(folder, {}, {"v": ((10,), np.dtype("<f8"))}, "ab" * 8, 0, 10)
    result.open()
    result.write(0, 10, {"v": np.ones(10)})
    result.close()  # stopped before any checkpoint
    assert not folder.exists()


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["<f8", ">f4", "|i1", "<i8", "|b1", "<U3", "<c16", "<M8[s]",
                              [("a", "<f8"), ("b", "|i1")]]),
       shape=SHAPES, fortran=st.booleans(), version=st.sampled_from([None, (1, 0), (2, 0)]))
def test_array_headers_read_as_numpy_reads_them(tmp_path_factory, dtype, shape, fortran, version):
    """extents and open_arrays read every header numpy writes (either format version, Fortran order,
    structured and unusual dtypes) as np.load does."""
    tmp = tmp_path_factory.mktemp("head")
    array = np.zeros(shape, dtype=np.dtype(dtype), order="F" if fortran else "C")
    with zipfile.ZipFile(tmp / "a.npz", "w", compression=zipfile.ZIP_STORED) as zf:
        with zf.open("x.npy", "w") as fh:
            np.lib.format.write_array(fh, array, version=version)
    offset, got_shape, got_dtype, got_fortran = npz.extents(tmp / "a.npz")["x"]
    expected = np.load(tmp / "a.npz")["x"]
    assert (got_shape, got_dtype) == (expected.shape, expected.dtype)
    assert got_fortran == (fortran and array.ndim > 1 and not array.flags.c_contiguous)
    assert npz.open_arrays(tmp / "a.npz")["x"].tobytes() == expected.tobytes()


@pytest.mark.parametrize("header", [b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
                                    b"{'descr': '<x9', 'fortran_order': False, 'shape': (3,), }",
                                    b"{'descr': '<f8', 'fortran_order': 0, 'shape': (3,), }",
                                    b"{'descr': '<f8', 'shape': (3,), }", b"not a header"])
def test_a_header_numpy_would_refuse_is_refused(tmp_path, header):
    header = header + b" " * (117 - len(header)) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(24)
    with zipfile.ZipFile(tmp_path / "a.npz", "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", member)
    with pytest.raises(ValueError):
        npz.extents(tmp_path / "a.npz")


def test_a_header_claiming_more_than_numpys_limit_is_refused_unread(tmp_path):
    """A format 2.0 header whose length field claims 4 GB: refused from the length field (numpy's own reader
    would first read up to the end of the file, then refuse it with a message of its own)."""
    member = b"\x93NUMPY\x02\x00" + (2**32 - 1).to_bytes(4, "little") + bytes(1 << 20)
    with zipfile.ZipFile(tmp_path / "a.npz", "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("x.npy", member)
    with pytest.raises(ValueError, match="array header of 4,294,967,295 bytes, beyond numpy's limit"):
        npz.extents(tmp_path / "a.npz")
