"""Ray's job CLI as a user runs it against a head: submit, wait for the end, read the log."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ray_cli", "submit_job", "wait_for_job"]

BIN = Path(sys.executable).parent


def ray_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def submit_job(submit_args: list[str], env: dict[str, str]) -> str:
    """`ray job submit --no-wait …`, retried while the head's job agent is not up yet; the job's id."""
    # The head's job agent registers a few seconds after `ray start` returns (longer on a
    # loaded machine); until then the API answers "No available agent to submit job".
    for _ in range(30):
        submit = ray_cli(submit_args, env, timeout=300)
        if submit.returncode == 0 or "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(4)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    # The CLI colours its output: take the id alone, not the escape codes stuck to it.
    return re.search(r"raysubmit_[A-Za-z0-9]+", submit.stdout + submit.stderr).group(0)


def wait_for_job(job_id: str, env: dict[str, str], timeout: float) -> tuple[str | None, str]:
    """The job's final state (succeeded, failed, was stopped; None if it ran past `timeout`,
    then it is stopped) and its log.

    One `ray job logs --follow` waits: Ray's job server ends the stream when the job ends.
    Polling `ray job status` every 3 s instead started a `ray` process each time, some 6 s
    of CPU apiece on a loaded 2-core machine, for the whole of a minutes-long job."""
    deadline = time.monotonic() + timeout
    final = None
    while final is None and time.monotonic() < deadline:
        try:
            ray_cli(["job", "logs", "--follow", job_id], env, timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            break
        status = ray_cli(["job", "status", job_id], env, timeout=60)
        # The CLI says "Job '<id>' succeeded" (or failed / was stopped) once the job has ended.
        match = re.search(rf"Job '{job_id}' (succeeded|failed|was stopped)", status.stdout + status.stderr)
        final = match.group(1) if match else None
        if final is None:  # the stream ended before the job (a dropped connection): follow it again
            time.sleep(3)
    logs = ray_cli(["job", "logs", job_id], env).stdout
    if final is None:
        ray_cli(["job", "stop", job_id], env)
    return final, logs
