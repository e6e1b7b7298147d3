"""One process owns a library: the app's service and a CLI `index` at once, then `doctor` finds nothing.

Before the lock, two overlapping `glimpse index` runs left ten stale vectors in the
vector index marked clean (status ok, doctor consistent, search blind to the new
photos), and another pair died with an IntegrityError.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from indexer.composition import build_services
from indexer.models.choice import ModelChoice
from indexer.settings import Settings
from indexer.toyworld.world import all_specs
from store.paths import AppPaths
from tests.e2e.test_cli import glimpse_cmd, run
from tests.photos import write_photo


def _photos(root: Path, seed: int, count: int = 12) -> list[Path]:
    specs = list(all_specs())
    return [
        write_photo(
            root / f"{specs[(seed + n) % len(specs)].colour}-{n}.jpg", specs[(seed + n) % len(specs)], seed=seed + n
        )
        for n in range(count)
    ]


def test_the_apps_service_and_a_cli_index_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = dict(os.environ, GLIMPSE_HOME=str(home), GLIMPSE_MODEL="toyworld", HF_HUB_OFFLINE="1")
    env.pop("GLIMPSE_WEIGHTS", None)
    first, second = tmp_path / "first", tmp_path / "second"
    _photos(first, 0)
    _photos(second, 40)

    # The desktop app's engine, in this process: the composition root plus the library service.
    paths = AppPaths.from_env({"GLIMPSE_HOME": str(home)})
    services = build_services(paths, Settings(precision="fp32", decode_workers=1), ModelChoice("toyworld"))
    cli: subprocess.Popen[str] | None = None
    try:
        services.library.add_folder(first)
        services.library.start()
        assert services.library.wait_idle(120)
        assert services.store.db.lock.held, "the app's process owns the library once it writes"

        # Reading commands answer at once, beside the owner.
        started = time.monotonic()
        found = run(["search", "a red circle", "-k", "3", "--json"], env, timeout=120)
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout), "search reads the owner's library without waiting"
        assert time.monotonic() - started < 60

        # A CLI index meanwhile: it waits, saying who owns the library, and never writes beside it.
        cli = subprocess.Popen(
            [*glimpse_cmd(), "index", str(second), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert cli.stderr is not None
        waiting = cli.stderr.readline()
        assert "in use by" in waiting and "Waiting" in waiting, waiting
        for path in _photos(first / "more", 80, count=4):  # the app keeps working meanwhile
            assert path.exists()
        time.sleep(2.0)
        assert cli.poll() is None, "the CLI must wait while the app owns the library"
        assert services.library.wait_idle(120)
    finally:
        services.close()  # the app quits: the lock is free
    assert cli is not None
    out, err = cli.communicate(timeout=300)
    assert cli.returncode == 0, err
    assert json.loads(out)["indexed"] == 12

    doctor = run(["doctor", "--json"], env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    assert report["problems"] == [] and report["repairs"] == [], report
    status = json.loads(run(["status", "--json"], env).stdout)
    assert status["images"]["indexed"] == 28 and status["models"][0]["vectors"] == 28
    assert status["models"][0]["index"] == "ok"
