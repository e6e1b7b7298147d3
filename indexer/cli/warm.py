"""The warm path's server: the library's owner answers ``search``, ``similar`` and ``status``.

``glimpse watch`` and the desktop app start a :class:`WarmServer` on a Unix domain
socket in the library folder. Each connection carries one request (one JSON line:
the command line, the client's working directory and model variables) and gets one
answer (the text the command prints, what it writes to stderr, its exit code),
produced by the same functions the in-process command uses, so both paths print
the same thing. The client lives in ``indexer.cli.warm_client``.

Only the same user may talk to it: the socket file is made 0600, and on Linux each
connection's peer credentials are checked too (nothing else is trusted: a request
is parsed by the CLI's own parser and runs only the three read-only commands).
A stale socket file left by a killed owner is replaced; clients of one that
vanishes fall back to running the command themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from indexer.cli.warm_client import PROTOCOL, WARM_COMMANDS, socket_path
from indexer.composition import Services
from indexer.errors import GlimpseError
from indexer.models.choice import choose_model, recorded_model

log = logging.getLogger(__name__)

MAX_REQUEST = 1 << 20
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS


class _RefusedError(Exception):
    """The request is one the warm path leaves to the client's own process."""


class WarmServer:
    """Answers warm requests for ``services`` on ``data_dir/glimpse.sock`` from a daemon thread."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.path = socket_path(services.paths.data_dir)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._answer_lock = threading.Lock()  # one answer at a time: each is milliseconds
        self.answered = 0

    def start(self) -> bool:
        """Listen; False (and the CLI works as before) where the socket cannot be made."""
        if len(str(self.path)) > SOCKET_PATH_MAX:
            log.info("no warm path: the library path is too long for a socket (%s)", self.path)
            return False
        self._remove_stale()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            self.path.chmod(0o600)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            log.info("no warm path: cannot listen on %s (%s)", self.path, exc)
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="glimpse-warm", daemon=True)
        self._thread.start()
        log.info("answering search, similar and status on %s", self.path)
        return True

    def _remove_stale(self) -> None:
        """A socket file nobody answers on is a dead owner's: remove it (a live one is left alone)."""
        if not self.path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(str(self.path))
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink()
        finally:
            probe.close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), name="glimpse-warm-conn", daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10.0)
                if not _same_user(conn):
                    return
                data = b""
                while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                    chunk = conn.recv(1 << 16)
                    if not chunk:
                        return
                    data += chunk
                reply = self.answer(json.loads(data))
                conn.settimeout(None)
                conn.sendall(json.dumps(reply).encode() + b"\n")
            except (OSError, ValueError) as exc:
                log.debug("warm request dropped: %s", exc)

    def answer(self, request: Any) -> dict[str, Any]:
        """One request -> {"stdout", "stderr", "exit"}, or {"fallback": why} for the client to run it itself."""
        try:
            if not isinstance(request, dict) or request.get("v") != PROTOCOL:
                raise _RefusedError("another protocol version")
            argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env") or {}
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv) or not isinstance(cwd, str):
                raise _RefusedError("malformed request")
            from indexer.cli.grammar import QuietParser, UsageRefusedError, build_parser

            try:
                args = build_parser(QuietParser).parse_args(argv)
            except UsageRefusedError as exc:
                raise _RefusedError(str(exc)) from exc
            if args.command not in WARM_COMMANDS or getattr(args, "object", None) or getattr(args, "region", None):
                raise _RefusedError(f"{args.command} runs in the client")
            with self._answer_lock:
                return self._run(args, Path(cwd), {k: str(v) for k, v in dict(env).items()})
        except _RefusedError as exc:
            return {"fallback": str(exc)}

    def _run(self, args: argparse.Namespace, cwd: Path, env: dict[str, str]) -> dict[str, Any]:
        from indexer.cli.answers import similar_text
        from indexer.cli.grammar import error_text
        from indexer.cli.main import search_text, status_text

        svc = self.services
        try:
            self._check_model(args, cwd, env)
            if args.command == "search":
                out = search_text(svc, args, cwd)
            elif args.command == "similar":
                out = similar_text(svc.search, args, cwd)
            else:
                out = status_text(svc, args)
        except GlimpseError as exc:
            return {"stdout": "", "stderr": error_text(exc), "exit": exc.exit_code}
        self.answered += 1
        return {"stdout": out, "stderr": "", "exit": 0}

    def _check_model(self, args: argparse.Namespace, cwd: Path, env: dict[str, str]) -> None:
        """A model the client asks for must be the library's, exactly as in its own process."""
        from indexer.cli.grammar import requested_model

        requested, by = requested_model(args, env, cwd)
        if requested is not None:
            choose_model(recorded_model(self.services.store) or self.services.choice, requested, by)


def _same_user(conn: socket.socket) -> bool:
    """On Linux, the peer's uid must be ours (the 0600 file already says so elsewhere)."""
    peercred = getattr(socket, "SO_PEERCRED", None)
    if peercred is None:
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())
