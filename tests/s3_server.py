"""An S3-compatible server on 127.0.0.1 for tests: moto's server, started and stopped here.

`s3_server()` yields the environment a process needs to reach it (AWS_ENDPOINT_URL and
dummy credentials); `make_bucket` creates a bucket through pyarrow, as the code under
test would see it. Tests that use it skip with the reason when moto is not installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ports import free_port

__all__ = ["s3_server", "moto_available", "make_bucket"]


def _moto_command() -> list[str] | None:
    script = Path(sys.executable).with_name("moto_server")
    if script.exists():
        return [str(script)]
    found = shutil.which("moto_server")
    return [found] if found else None


def moto_available() -> bool:
    return _moto_command() is not None


@contextlib.contextmanager
def s3_server(log_dir: Path) -> Iterator[dict[str, str]]:
    """A moto S3 server on a free port of 127.0.0.1; yields the client environment."""
    command = _moto_command()
    if command is None:
        raise RuntimeError("moto's server is not installed (pip install 'moto[server]')")
    port = free_port()
    log = open(log_dir / "moto.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (log_dir / "moto.log").read_text()[-2000:]
                    raise RuntimeError(f"moto server did not start: {tail}") from None
                time.sleep(0.2)
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def make_bucket(env: dict[str, str], bucket: str) -> None:
    """Create `bucket` on the server `env` points at (pyarrow, as the code under test)."""
    import pyarrow.fs as pafs

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True)
        fs.create_dir(bucket)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
