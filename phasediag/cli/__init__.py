"""The ``phasediag`` command line: the group, its exit codes and the console-script entry point :func:`main`.

One module per command group: :mod:`.point` (solve, simulate), :mod:`.jobs` (run, validate, experiment, plot,
export, merge), :mod:`.limit` (limit); what they share -- parameter types, option groups, the flag of a library
field, the progress bar, the bad-input exception -- is in :mod:`.options`.

Kept thin and fast to start: only click is imported at module level. numpy, the numerical core, matplotlib,
yaml and tqdm are imported inside the commands, so ``phasediag --help`` stays quick.

Exit status: 0 success, 1 internal error (message only; set PHASEDIAG_DEBUG=1 for the traceback),
2 bad input (a one-line message naming the option), 75 busy (another phasediag process is writing that run
directory: try again later), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, e.g. a batch scheduler's time
limit); an interrupted or terminated run cleans up after itself.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from phasediag import __version__
from phasediag.cli import jobs, limit, point
from phasediag.cli.options import DEBUG_ENV, debug
from phasediag.errors import BadInput as LibraryBadInput
from phasediag.errors import BusyError

EXIT_BUSY = 75  # EX_TEMPFAIL of sysexits.h: the same command may succeed later

__all__ = ["PhasediagGroup", "phasediag", "main"]

_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _in_finalizer(frame) -> bool:
    """The signal interrupted a __del__ method: an exception raised there is printed as "Exception ignored"
    and dropped, so the Ctrl-C or SIGTERM would be lost (seen: a ZipFile closed by the garbage collector)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _exit_cleanly_on_signals() -> None:
    """SIGTERM (scancel, a batch time limit) exits with 143 through the usual cleanup -- temporary files
    removed, worker processes killed -- instead of dying on the spot; Ctrl-C raises KeyboardInterrupt as usual.
    Either, arriving inside a finalizer, is sent again (every 10 ms, by SIGALRM) until the finalizer has returned,
    so it is never lost. Python drops an exception raised in any other callback it cannot propagate from (a
    weakref callback, a garbage-collector callback) and reports it as "unraisable": such a dropped interrupt is
    sent again the same way, and not printed."""
    import signal

    pending: list[int] = []
    told: set[int] = set()

    def deliver(_signum, _frame):  # SIGALRM, 10 ms after a signal was put off: send it again (once; its
        put_off = pending[:]  # handler puts it off once more if the finalizer is still running)
        pending.clear()
        for signum in put_off:
            os.kill(os.getpid(), signum)

    def send_later(signum) -> None:
        pending.append(signum)
        signal.signal(signal.SIGALRM, deliver)
        signal.setitimer(signal.ITIMER_REAL, 0.01)

    def again_later(signum, frame) -> bool:
        """Put the signal off if it interrupted a finalizer (a timer sends it again: sending it now would run
        this handler inside itself, still in the finalizer)."""
        if not _in_finalizer(frame):
            return False
        send_later(signum)
        return True

    report_unraisable = sys.unraisablehook

    def dropped(unraisable) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt):
            send_later(signal.SIGINT)
        elif isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
            send_later(signal.SIGTERM)
        else:
            report_unraisable(unraisable)

    def terminated(signum, frame):
        if again_later(signum, frame):
            return
        if signum not in told:  # once, though a dropped exit is sent again
            told.add(signum)
            with contextlib.suppress(OSError):  # os.write: safe even if the signal interrupted a write to stderr
                os.write(2, b"Terminated\n")
        sys.exit(128 + signum)

    def interrupted(signum, frame):
        if again_later(signum, frame):
            return
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (an embedding program): leave them alone
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, interrupted)
        sys.unraisablehook = dropped


class PhasediagGroup(click.Group):
    """A click group whose errors are one line and whose unexpected exceptions exit 1 without a traceback.

    The one place where errors become exit codes: click's usage errors and every bad input (the CLI's
    :class:`~phasediag.cli.options.BadInput`, the library's :class:`phasediag.errors.BadInput`) exit 2.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        _exit_cleanly_on_signals()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if isinstance(e, _NO_ARGS_IS_HELP):  # bare `phasediag` (click >= 8.2): show the help
                e.show()
                sys.exit(e.exit_code)
            msg = " ".join(e.format_message().split())
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"Error: {msg}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"Error: {' '.join(e.format_message().split())}", err=True)
            sys.exit(e.exit_code)
        except LibraryBadInput as e:  # the library's bad-input errors: one line, exit status 2
            click.echo(f"Error: {' '.join(str(e).split())}", err=True)
            sys.exit(2)
        except BusyError as e:
            click.echo(f"Error: {' '.join(str(e).split())}", err=True)
            sys.exit(EXIT_BUSY)
        except click.Abort as e:  # Ctrl-C (click turns KeyboardInterrupt into Abort, and EOFError too)
            if isinstance(e.__context__, EOFError):  # an end of file is not the user's Ctrl-C
                return self._internal(e.__context__)
            click.echo("Interrupted", err=True)
            # objects the interrupt caught half-built (matplotlib's mathtext grammar: pyparsing's Forward)
            # can fail in their finalizers as the process ends; that is no news to the user who pressed Ctrl-C
            sys.unraisablehook = lambda unraisable: None
            sys.exit(130)
        except OSError as e:  # the file system refused (a path under a file, permissions, a full disk)
            if debug():
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"Error: cannot read or write {where}{e.strerror or e}", err=True)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 - the last line of defence
            if debug():
                raise
            self._internal(e)
        sys.exit(rv if isinstance(rv, int) else 0)

    @staticmethod
    def _internal(e: BaseException):
        detail = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"Error: internal error: {type(e).__name__}: {detail} "
                   f"(set {DEBUG_ENV}=1 for the traceback)", err=True)
        sys.exit(1)


@click.group(cls=PhasediagGroup, no_args_is_help=True,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="phasediag", message="%(prog)s %(version)s")
def phasediag():
    """Exact phase diagrams of training regimes (kernel / feature learning / saddle) of a two-layer linear
    network, from the closed-form solution of its gradient flow and of discrete gradient descent.

    Exit status: 0 success, 1 internal error, 2 bad input, 75 busy (another process writes that run directory).
    """


for _command in (point.solve, point.simulate,
                 jobs.run, jobs.plot_command, jobs.export_command, jobs.merge_command, jobs.validate,
                 jobs.experiment,
                 limit.limit):
    phasediag.add_command(_command)
del _command


def main(argv=None):
    """Console-script entry point."""
    return phasediag.main(args=argv, prog_name="phasediag")
