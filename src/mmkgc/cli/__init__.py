"""The ``mmkgc`` command line (typer + rich): this package's ``app``, :func:`run` and :func:`main`.

One module per command group (:mod:`~mmkgc.cli.train` for train/evaluate/predict/export/demo,
:mod:`~mmkgc.cli.datasets`, :mod:`~mmkgc.cli.features`, :mod:`~mmkgc.cli.enrich`, :mod:`~mmkgc.cli.tune`,
:mod:`~mmkgc.cli.sweep`); what they share is in :mod:`mmkgc.cli._common`.

Exit statuses: 0 success, 1 a check that found a problem (``datasets check``), 2 a usage or user error (bad
options, files, configs, unknown names, unwritable outputs), 130 interrupted (Ctrl-C, SIGTERM).  A user error is
printed as one message, never interpreted as rich markup and never hard-wrapped; ``MMKGC_DEBUG=1`` shows the
traceback.
"""

from __future__ import annotations

import os

# Before torch is imported: idle OpenMP worker threads spin only briefly (GOMP_SPINCOUNT=10000, libgomp's default
# is 300000) before they sleep.  Long spinning steals the cores of other processes on a shared machine, short
# spinning keeps the quiet case fast (docs/benchmarks.md "OpenMP wait policy": RotatE on DB15K, 2 threads, 8.3 s
# per epoch against the runtime default's 8.1 quiet, 17.5 against 27.7 beside a busy process; PASSIVE, which
# never spins, was 9.3 quiet and 14.0 busy).  A value the user set for OMP_WAIT_POLICY or GOMP_SPINCOUNT is kept;
# an empty OMP_WAIT_POLICY means the runtime's own default.
if os.environ.get("OMP_WAIT_POLICY") == "":
    del os.environ["OMP_WAIT_POLICY"]
elif "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import errno  # noqa: E402
import sys  # noqa: E402

import typer  # noqa: E402

from mmkgc.errors import MMKGCError  # noqa: E402

from mmkgc.cli import datasets, enrich, features, ls, sweep, train, tune  # noqa: E402
from mmkgc.cli._common import REPORTED, console, log_line, print_error, progress_enabled  # noqa: E402,F401

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multi-modal knowledge graph completion.")
app.add_typer(datasets.datasets_app, name="datasets")
app.add_typer(features.features_app, name="features")
app.add_typer(enrich.enrich_app, name="enrich")
app.command("tune")(tune.tune_command)
app.command("sweep")(sweep.sweep_command)
app.command("ls")(ls.ls_command)
for _command in (train.train, train.evaluate, train.predict, train.export, train.demo):
    app.command()(_command)


def _print_version(value: bool) -> None:
    if value:
        from mmkgc._version import __version__

        console.print(f"mmkgc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the mmkgc version and exit."),
) -> None:
    """Multi-modal knowledge graph completion."""


def _os_error_message(exc: OSError) -> str:
    """One line for a failed file operation: the file, what failed, and what to do for the usual causes."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    what = exc.strerror or str(exc)
    hint = {
        errno.ENOSPC: "no space left on device; free some space (a half-written file was removed and the last "
                      "good checkpoint is kept), then rerun (train: --resume)",
        errno.EDQUOT: "disk quota exceeded; free some space, then rerun (train: --resume)",
        errno.EROFS: "the location is on a read-only file system; choose another output location",
        errno.EACCES: "permission denied; choose a location you can write (or read)",
        errno.EPERM: "operation not permitted; choose another location",
        errno.EEXIST: "a file is in the way of a directory of that path",
        errno.ENOTDIR: "a part of the path is a file, not a directory",
    }.get(exc.errno or -1)
    text = f"{where}: {what}" if where else what
    return f"{text} ({hint})" if hint else text


def run(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit status instead of exiting (the tests call this).

    :returns: 0 success, 1 a check found a problem, 2 usage or user error, 130 interrupted.
    """
    debug = bool(os.environ.get("MMKGC_DEBUG"))
    REPORTED.clear()
    try:
        rv = app(args=argv, prog_name="mmkgc", standalone_mode=False)
        if rv == 130 and "interrupt" not in REPORTED:  # typer turns Ctrl-C in a command into a bare Exit(130)
            print_error("interrupted")
        return rv if isinstance(rv, int) else 0
    except typer.TyperException as exc:  # typer's bundled click: usage errors, bad option values, no command
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            print_error(str(exc))
        return int(getattr(exc, "exit_code", 2) or 2)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print_error("aborted")
        return 130
    except KeyboardInterrupt as exc:
        print_error(str(exc) or "interrupted")
        return 130
    except MMKGCError as err:
        if debug:
            raise
        print_error(str(err))
        return 2
    except OSError as exc:  # unwritable output, full disk, missing or unreadable input outside the readers
        if debug:
            raise
        print_error(_os_error_message(exc))
        return 2
    except FloatingPointError as exc:  # the trainer's "training loss became nan" (learning rate, features)
        if debug:
            raise
        print_error(str(exc))
        return 2
    except MemoryError as exc:
        if debug:
            raise
        print_error(f"out of memory ({exc or 'host memory'}); lower training.batch_size / evaluation.batch_size")
        return 2
    except RuntimeError as exc:
        if type(exc).__name__ != "OutOfMemoryError" or debug:  # torch.cuda.OutOfMemoryError; other bugs show
            raise
        print_error(f"out of GPU memory; lower training.batch_size / evaluation.batch_size "
                    f"({str(exc).splitlines()[0]})")
        return 2
    except UnicodeDecodeError as exc:
        if debug:
            raise
        print_error(f"a file is not UTF-8 text ({exc})")
        return 2


def main() -> None:
    """Console-script entry point (``mmkgc``): run the app and exit with its status."""
    # --- process-wide tuning set by the entry point, before any work ---
    from mmkgc.allocator import keep_freed_memory

    keep_freed_memory()  # large per-batch temporaries stay in the heap instead of page-faulting back each step
    sys.exit(run())


if __name__ == "__main__":
    main()
