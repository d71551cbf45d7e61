"""Small I/O helpers shared by the commands.

Everything phasediag writes goes through :func:`atomic_path` / :func:`atomic_write`, so an interrupted
job (a killed batch task, a full disk, an exception while drawing) never leaves a truncated result behind
under the final name: the data are written to a temporary file in the destination's own directory and
moved into place with :func:`os.replace`, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_path", "atomic_write", "signals_held"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _file_above(parent: Path) -> Path:
    """The component of `parent` that is not a directory."""
    for above in reversed([parent, *parent.parents]):
        if above.exists() and not above.is_dir():
            return above
    return parent


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``.

    The caller writes the complete file to the yielded path (by name, e.g. ``savefig(tmp)``). If the body
    raises, the temporary file is removed and ``path`` is left untouched. The temporary name keeps the
    suffix of ``path`` (some writers choose the format from it) and starts with a dot.
    The final file gets the usual permissions (0666 minus the umask), not mkstemp's 0600. `path` must not be
    anything but a regular file if it exists (a device node, a FIFO, a symbolic link are never replaced:
    ResultsError); an OSError names `path`, not the temporary file.
    """
    from phasediag.errors import ResultsError
    from phasediag.results.rundir import check_regular_target

    final = Path(path)
    check_regular_target(final)
    parent = final.parent
    if make_parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # a path component is a regular file
            raise ResultsError(f"{path}: {_file_above(parent)} is a file, not a directory") from None
    tmp = None
    try:
        with signals_held():  # a Ctrl-C or SIGTERM between creating and naming the file would leave it behind
            fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{final.name}.", suffix=f".tmp{final.suffix}")
            tmp = Path(tmp_name)
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        check_regular_target(final)  # (again: it may have appeared while the file was written)
        os.replace(tmp, final)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if isinstance(exc, OSError) and exc.errno is not None and (  # the temporary's own name, or none
                exc.filename in (str(tmp), tmp, None) or Path(str(exc.filename)).name.startswith(f".{final.name}.")):
            raise OSError(exc.errno, exc.strerror, str(final)) from None  # (write() errors name no file)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                 make_parents: bool = True) -> Iterator[IO]:
    """Open a temporary file next to ``path`` for writing; on success flush, fsync and move it onto ``path``.

    ``mode`` is ``"w"`` (text, default) or ``"wb"`` (binary). Usage::

        with atomic_write("outputs/result.json") as fh:
            json.dump(obj, fh)
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, make_parents=make_parents) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def signals_held():
    """Hold Ctrl-C and SIGTERM in this thread until the block ends (then they arrive): a fork, a cleanup or
    the creation of a temporary file is never cut in half."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
