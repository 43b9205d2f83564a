"""A throwaway PostgreSQL server for a test (`make postgres` installs Debian's binaries).

`postgres_server()` runs initdb into a fresh temporary folder, starts the server on
127.0.0.1 at a free port, creates a database and yields its
`postgresql://USER:PASSWORD@127.0.0.1:PORT/DB` URL; afterwards it stops the server and
removes the folder. PostgreSQL refuses to run as root, so under root the server runs as
the `postgres` system user (the Debian package creates it), which owns the folder.
`postgres_unavailable()` says why no server can start here (None when one can): the
`postgres_url` fixture in conftest.py skips with that reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ports import free_port

__all__ = ["postgres_server", "postgres_unavailable", "SERVER_USER"]

SERVER_USER = "postgres"  # the unprivileged account the server runs as when we are root
_NOT_INSTALLED = "PostgreSQL server binaries not installed: make postgres installs them"


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin with initdb (Debian's layout), else PATH's."""
    debian = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()]
    if debian:
        return max(debian, key=lambda folder: int(folder.parent.name))
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_root() -> bool:
    return os.geteuid() == 0


def postgres_unavailable() -> str | None:
    """Why no throwaway server can start on this machine, or None when one can."""
    folder = _bin_dir()
    if folder is None or not all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
        return _NOT_INSTALLED
    if _as_root():
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root and no {SERVER_USER!r} user to run PostgreSQL as: make postgres creates it"
        if shutil.which("runuser") is None:
            return "running as root and no runuser to start PostgreSQL as an unprivileged user"
    return None


def _run_as_server_user(command: list[str], cwd: Path) -> None:
    if _as_root():
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    out = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({out.returncode}): {out.stdout[-2000:]}{out.stderr[-2000:]}")


@contextmanager
def postgres_server(user: str = "rmaunet", password: str = "rmaunet-test", database: str = "optuna") -> Iterator[str]:
    """A running server for the duration of the `with`; yields the database's URL."""
    reason = postgres_unavailable()
    if reason:
        raise RuntimeError(reason)
    binaries = _bin_dir()
    assert binaries is not None
    # Not under pytest's tmp_path: its folders are private to root, and the server user must reach this one.
    root = Path(tempfile.mkdtemp(prefix="rmaunet-pg-"))
    data, password_file, log = root / "data", root / "password", root / "server.log"
    password_file.write_text(password + "\n")
    if _as_root():
        server_user = pwd.getpwnam(SERVER_USER)
        for path in (root, password_file):
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
    port = free_port()
    started = False
    try:
        # The superuser is `user` with `password` over TCP; --no-sync and the settings below
        # trade durability, which a throwaway server does not need, for start-up time.
        _run_as_server_user(
            [str(binaries / "initdb"), "--no-sync", "--no-locale", "--encoding=UTF8", f"--username={user}",
             f"--pwfile={password_file}", "--auth-host=scram-sha-256", "--auth-local=trust", f"--pgdata={data}"],
            root,
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        try:
            _run_as_server_user(
                [str(binaries / "pg_ctl"), "start", "--wait", "--timeout=60", f"--pgdata={data}", f"--log={log}",
                 f"--options={options}"],
                root,
            )  # fmt: skip
        except RuntimeError as exc:  # pg_ctl only says "examine the log output": add it
            raise RuntimeError(f"{exc}\n{log.read_text()[-2000:] if log.exists() else ''}") from None
        started = True
        subprocess.run(
            [str(binaries / "createdb"), "--host=127.0.0.1", f"--port={port}", f"--username={user}", database],
            env={**os.environ, "PGPASSWORD": password},
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql://{user}:{password}@127.0.0.1:{port}/{database}"
    finally:
        if started:
            _run_as_server_user([str(binaries / "pg_ctl"), "stop", "--wait", "--mode=fast", f"--pgdata={data}"], root)
        shutil.rmtree(root, ignore_errors=True)
