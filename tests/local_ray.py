"""A local Ray runtime for the tests, started as `rmaunet study run` starts its own.

Ray gives a new node 30 s to register with its GCS (a constant in ray._private.node). With
the suite's own processes and another job on 2 cores that can run out, and a module's every
test would error at its fixture; rmaunet.studies.session stops the half-started node and
tries again, as it does for a user (RMAUNET_RAY_START_TRIES tries, which conftest.py sets to 6).
"""

from __future__ import annotations

from typing import Any


def start_local_ray(**init_kwargs: Any) -> None:
    """ray.init(address="local", num_cpus=2, no dashboard, no worker logs, the runtime env a
    study's job runs with (its processes at normal priority, as the suite's own are: at Ray's
    niceness 15 a trial's process got a few percent of a core beside them); `init_kwargs` on top."""
    from rmaunet.studies.session import _start_local_runtime, job_runtime_env

    kwargs = {
        "address": "local",
        "num_cpus": 2,
        "include_dashboard": False,
        "log_to_driver": False,
        "runtime_env": job_runtime_env(),
    }
    _start_local_runtime({**kwargs, **init_kwargs}, print)
