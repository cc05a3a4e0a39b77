"""Entry point of the ``medsegcnn`` command: argument parsing, logging and error reporting.

Errors a user can cause (:class:`~MedSegCNNLib.errors.MedSegCNNError`, unreadable files) print one line
``medsegcnn: error: ...`` on stderr and exit with status 1; anything else is a bug and prints a one-line
hint to rerun with ``--debug``, which shows the traceback. Usage errors exit with status 2 (argparse).

SIGTERM acts like Ctrl-C: commands stop with KeyboardInterrupt, so temporary output files are removed; while
``train`` trains, its own handler takes over (checkpoint, then exit). On Windows SIGBREAK (CTRL_BREAK_EVENT) is
handled as SIGTERM. With ``--stop-on-stdin``, a line ``stop`` on standard input, or its end (the parent closed
the pipe or exited), calls SIGTERM's handler in the main thread: that is how background runs (the Slicer panel's
Cancel) stop a command on every platform, since a GUI process without a console cannot send Windows console
signals.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from .._version import __version__
from ..errors import MedSegCNNError
from ..progress import STOP_ACKNOWLEDGED, STOP_LINE
from . import (
    demo_command,
    evaluate_command,
    export_command,
    import_command,
    info_command,
    models_command,
    plan_command,
    predict_command,
    project_command,
    quantize_command,
    train_command,
)

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130

logger = logging.getLogger("MedSegCNNLib")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsegcnn",
        description="CNN segmentation of medical images: train networks, segment images, evaluate segmentations.",
    )
    _add_common_options(parser, default=False)
    parser.add_argument("--version", action="version", version=f"medsegcnn {__version__}")
    # The options may also follow the command; there they must not reset a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        demo_command,
        train_command,
        plan_command,
        predict_command,
        quantize_command,
        import_command,
        export_command,
        evaluate_command,
        info_command,
        models_command,
        project_command,
    ):
        module.add_parser(commands, [common])
    return parser


def _add_common_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks and debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="show errors only")
    parser.add_argument(
        "--stop-on-stdin",
        action="store_true",
        default=default,
        help=f"stop cleanly (as on Ctrl-C) when standard input reads a line {STOP_LINE!r} or closes",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    _configure_logging(debug=args.debug, quiet=args.quiet)
    try:
        with _termination_as_interrupt():
            if args.stop_on_stdin:
                _watch_stdin_for_stop()
            return args.run(args)
    except (Exception, KeyboardInterrupt) as error:
        if args.debug:
            raise
        message, status = _describe_failure(error)
        print(f"medsegcnn: error: {message}", file=sys.stderr)
        return status


@contextlib.contextmanager
def _termination_as_interrupt() -> Iterator[None]:
    """While the block runs: SIGTERM raises KeyboardInterrupt (training replaces this handler with its own while
    it trains: checkpoint, then exit) and SIGBREAK (Windows) calls the SIGTERM handler in force. The previous
    handlers are restored afterwards."""
    handlers = {signal.SIGTERM: _raise_interrupt}
    if hasattr(signal, "SIGBREAK"):
        handlers[signal.SIGBREAK] = _as_sigterm
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        handlers = {}
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _watch_stdin_for_stop() -> None:
    """Start a daemon thread that raises SIGTERM's handler in the main thread when standard input reads
    :data:`STOP_LINE` or ends (set up after the handlers, so the request is never lost)."""

    def watch() -> None:
        if sys.stdin is None:
            logger.warning("--stop-on-stdin: there is no standard input to watch.")
            return
        for line in sys.stdin:
            if line.strip() == STOP_LINE:
                # part of the protocol with the parent, so printed whatever the log level
                print(f"medsegcnn: {STOP_ACKNOWLEDGED}", file=sys.stderr, flush=True)
                break
        else:
            logger.info("Standard input closed: stopping.")
        _thread.interrupt_main(signal.SIGTERM)

    threading.Thread(target=watch, name="medsegcnn-stop-on-stdin", daemon=True).start()


def _raise_interrupt(_number: int, _frame: object) -> None:
    signal.signal(signal.SIGTERM, _ignore_repeated_stop)  # a second request must not break off the clean-up
    raise KeyboardInterrupt


def _ignore_repeated_stop(_number: int, _frame: object) -> None:
    logger.info("Stopping already.")


def _as_sigterm(_number: int, frame: object) -> None:
    handler = signal.getsignal(signal.SIGTERM)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signal.SIGTERM, frame)


def _describe_failure(error: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception that ended a command."""
    if isinstance(error, MedSegCNNError):
        return str(error), EXIT_USER_ERROR
    if isinstance(error, KeyboardInterrupt):
        return "interrupted", EXIT_INTERRUPTED
    if isinstance(error, OSError):  # permission denied, disk full, ...
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or error}{where}", EXIT_USER_ERROR
    return (
        f"unexpected {type(error).__name__}: {error}. Rerun with --debug for the traceback and please report it.",
        EXIT_INTERNAL_ERROR,
    )


def _configure_logging(*, debug: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("medsegcnn: %(levelname)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.ERROR if quiet else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
