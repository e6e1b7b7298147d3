"""The warm path: a running ``glimpse watch`` answers search, similar and status over its socket."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from indexer.cli.warm_client import ask, socket_path
from indexer.toyworld.world import all_specs
from tests.e2e.test_cli import glimpse_cmd, run
from tests.photos import write_photo

# Runs the real entry point in-process and reports whether it answered itself (LOCAL) or the watch did (WARM).
_CLIENT = """
import sys
from desktop.launcher import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse's usage errors
    code = exc.code
sys.stdout.flush()
in_process = "indexer.cli.main" in sys.modules or "indexer.cli.snapshot" in sys.modules  # full or snapshot
print("\\nLOCAL" if in_process else "\\nWARM", code, file=sys.stderr)
"""


@pytest.fixture
def library(tmp_path: Path) -> tuple[dict[str, str], Path]:
    env = dict(os.environ, GLIMPSE_HOME=str(tmp_path / "home"), GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1")
    photos = tmp_path / "photos"
    for n, spec in enumerate(all_specs()):
        write_photo(photos / f"{spec.colour}-{spec.shape}.jpg", spec, seed=n)
    done = run(["index", str(photos)], env)
    assert done.returncode == 0, done.stderr
    return env, photos


def _client(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[str, str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, *args], env=env, capture_output=True, text=True, timeout=300, cwd=cwd
    )
    where, code = out.stderr.strip().splitlines()[-1].split()
    assert int(code) == out.returncode or out.returncode == 0
    return out.stdout, where, int(code)


def _start_watch(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*glimpse_cmd(), "watch"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    sock = socket_path(Path(env["GLIMPSE_HOME"]))
    deadline = time.monotonic() + 120
    while ask(sock, {"v": 1, "argv": ["status"], "cwd": "/"}, timeout=30) is None:  # a live owner answers
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "watch never opened its socket"
        time.sleep(0.2)
    return proc


def test_a_running_watch_answers_like_the_command_itself(library: tuple[dict[str, str], Path]) -> None:
    env, photos = library
    local = {
        "search": _client(["search", "a red circle", "-k", "3", "--json"], env),
        "similar": _client(["similar", "red-circle.jpg", "-k", "3", "--all", "--json"], env, cwd=photos),
        "status": _client(["status", "--json"], env),
    }
    assert {where for _, where, _ in local.values()} == {"LOCAL"}
    watch = _start_watch(env)
    try:
        sock = socket_path(Path(env["GLIMPSE_HOME"]))
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        warm = {
            "search": _client(["search", "a red circle", "-k", "3", "--json"], env),
            "similar": _client(
                ["similar", "red-circle.jpg", "-k", "3", "--all", "--json"], env, cwd=photos
            ),  # relative to the client
            "status": _client(["status", "--json"], env),
        }
        assert {where for _, where, _ in warm.values()} == {"WARM"}
        assert warm["search"] == (local["search"][0], "WARM", 0)
        assert warm["similar"][0] == local["similar"][0] and len(json.loads(warm["similar"][0])) == 3
        assert json.loads(warm["status"][0])["images"] == json.loads(local["status"][0])["images"]
        # The model check runs there too: another model is refused exactly as in-process.
        _out, where, code = _client(["search", "x"], dict(env, GLIMPSE_MODEL="ViT-B-32"))
        assert (where, code) == ("WARM", 2)
        # What the warm path leaves alone runs locally: a usage error, help.
        assert _client(["search", "x", "-k", "0"], env)[1:] == ("LOCAL", 2)
        # A kill -9 leaves the socket file behind: clients fall back, and a new owner replaces it.
        watch.send_signal(signal.SIGKILL)
        watch.wait(30)
        assert sock.exists()
        assert _client(["search", "a red circle", "-k", "3", "--json"], env) == (local["search"][0], "LOCAL", 0)
        watch = _start_watch(env)
        assert _client(["status"], env)[1] == "WARM"
    finally:
        watch.send_signal(signal.SIGINT)
        watch.wait(60)
    assert not socket_path(Path(env["GLIMPSE_HOME"])).exists(), "a clean stop removes the socket"


def test_a_server_that_vanishes_mid_answer_means_fall_back(tmp_path: Path) -> None:
    path = tmp_path / "glimpse.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def hang_up() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b'{"stdout": "half an ans')  # and dies
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    assert ask(path, {"v": 1, "argv": ["status"]}, timeout=10) is None
    server.close()
    assert ask(path, {"v": 1, "argv": ["status"]}, timeout=10) is None  # refused: nobody listens
    assert ask(tmp_path / "missing.sock", {"v": 1}) is None


def test_index_leaves_no_process_behind(library: tuple[dict[str, str], Path]) -> None:
    """Decode workers and multiprocessing's helper are gone when `glimpse index` returns."""
    env, photos = library
    write_photo(photos / "new" / "late.jpg", all_specs()[0], seed=99)  # something to decode
    proc = subprocess.Popen([*glimpse_cmd(), "index"], env=env, start_new_session=True, stderr=subprocess.DEVNULL)
    assert proc.wait(300) == 0
    group = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    left = [line for line in group.splitlines() if line.split()[1] == str(proc.pid)]
    assert left == [], left
