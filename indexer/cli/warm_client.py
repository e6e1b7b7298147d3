"""The warm path's client: ask the process that has the library open to answer a command.

While the desktop app or ``glimpse watch`` runs, it listens on a Unix domain socket
in the library folder (``indexer.cli.warm``). ``glimpse search``, ``similar`` and
``status`` first try that socket: the owner already has the model and the vectors
in memory, so an answer costs one query instead of a process start, imports and
loads. This module is the first thing those commands import, so it imports only
the standard library: the whole client round trip fits in ~100 ms.

Whenever the socket is missing, refuses, vanishes mid-answer or the server says
"not here", the caller runs the command in its own process as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path

SOCKET_NAME = "glimpse.sock"
PROTOCOL = 1
WARM_COMMANDS = frozenset({"search", "similar", "status"})
# Flags the warm path leaves to the full CLI: help and version print from the parser, and object
# queries run the segmenter, which the owner may not have loaded.
LOCAL_FLAGS = frozenset({"-h", "--help", "--version", "--object", "--region"})
ENV_PASSED = ("GLIMPSE_MODEL", "GLIMPSE_WEIGHTS")  # the model a client asks for (must be the library's)
ANSWER_TIMEOUT = 300.0  # a first query may wait for the owner to load its model


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def _data_dir() -> Path:
    from store.paths import AppPaths  # light: platformdirs only

    return AppPaths.from_env().data_dir


def _receive_line(sock: socket.socket) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return None  # the server went away before a whole answer
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


def ask(path: Path, request: dict[str, object], timeout: float = ANSWER_TIMEOUT) -> dict[str, object] | None:
    """Send one request and return the answer, or None wherever the warm path is not available."""
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        line = _receive_line(sock)
        if line is None:
            return None
        answer = json.loads(line)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    return answer if isinstance(answer, dict) and not answer.get("fallback") else None


def run_warm(argv: list[str]) -> int | None:
    """Answer ``glimpse ARGV`` through the library's owner; None means: run it here instead."""
    if not argv or argv[0] not in WARM_COMMANDS or LOCAL_FLAGS.intersection(argv):
        return None
    request = {
        "v": PROTOCOL,
        "argv": argv,
        "cwd": str(Path.cwd()),
        "env": {k: os.environ[k] for k in ENV_PASSED if os.environ.get(k)},
    }
    answer = ask(socket_path(_data_dir()), request)
    if answer is None:
        return None
    out, err, code = answer.get("stdout"), answer.get("stderr"), answer.get("exit")
    if not isinstance(out, str) or not isinstance(err, str) or not isinstance(code, int):
        return None
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `glimpse search x | head`: not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.stderr.write(err)
    return code
