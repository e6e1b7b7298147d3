"""The ``glimpse`` command: the desktop app without arguments (or with ``gui``), the CLI otherwise.

It lives in ``desktop`` because only this package may know about Qt; the CLI in
``indexer`` never imports it, so the engine runs where Qt is not installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] == "gui":
        if _no_display():
            print(
                "glimpse: no screen to open the desktop app on (DISPLAY and WAYLAND_DISPLAY are unset).\n"
                "Use the command line instead: glimpse --help",
                file=sys.stderr,
            )
            return 2
        try:
            from desktop.app import run_app
        except ImportError as exc:
            print(
                f"glimpse: the desktop app needs Qt ({exc}). Install it with: pip install 'glimpse[gui]'\n"
                "The command line works without it: glimpse --help",
                file=sys.stderr,
            )
            return 2
        return run_app(args[1:])
    from indexer.cli.quick import run_quick_index
    from indexer.cli.warm_client import run_warm

    # Fast paths, before the engine is imported; each says None when it can't answer:
    # `glimpse index` with nothing to do; search/similar/status answered by a running app or
    # `glimpse watch`; search/similar on a read-only snapshot of the library.
    answered = run_quick_index(args)
    if answered is None:
        answered = run_warm(args)
    if answered is None and ("search" in args or "similar" in args):
        from indexer.cli.snapshot import run_snapshot_query

        answered = run_snapshot_query(args)
    if answered is not None:
        return answered
    from indexer.cli.main import main as cli_main

    return cli_main(args)


def run() -> None:
    """The console script: ``main``, then for the command line a fast exit.

    Everything a command changes is committed and closed before ``main`` returns (the
    library's writer is joined, the vector index saved), so what is left is the
    interpreter tearing down ONNX Runtime, FAISS and hundreds of modules: 0.2-0.3 s that
    a one-shot ``glimpse search`` would wait for. The desktop app exits normally.
    """
    args = sys.argv[1:]
    code = main(args)
    if args and args[0] != "gui":
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BrokenPipeError, ValueError):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def _no_display() -> bool:
    """On Linux without X or Wayland, Qt would abort the process; say so instead."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


if __name__ == "__main__":
    run()
