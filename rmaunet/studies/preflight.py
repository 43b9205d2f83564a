"""What `study run` checks about the services its flags name, before Ray starts.

A Ray address nobody listens on made `ray.init` wait forever, an MLflow server that is
down made every trial retry for minutes, and a malformed value surfaced as a traceback
once Ray was up. Each is now one ConfigError within seconds: the address is parsed, and a
TCP connection to its host and port is tried with a short timeout. The services' own
protocols are left to their clients; a port that accepts connections is enough here.

Imports no Ray, no MLflow.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from rmaunet.errors import ConfigError

__all__ = ["check_ray_address", "check_mlflow_uri", "PROBE_TIMEOUT_S"]

PROBE_TIMEOUT_S = 3.0
# What ray.init takes besides HOST:PORT: "auto" finds a cluster started on this machine, "local" starts one.
_RAY_KEYWORDS = ("auto", "local")
_MLFLOW_SCHEMES = ("", "file", "http", "https", "databricks", "sqlite", "postgresql", "mysql", "mssql")


def check_ray_address(address: str | None) -> None:
    """Refuse an address that is not `auto`, `local`, HOST:PORT or ray://HOST:PORT, or
    whose host and port accept no connection within PROBE_TIMEOUT_S."""
    if address is None or address in _RAY_KEYWORDS:
        return
    text = address.strip()
    host, port = _host_port(text.removeprefix("ray://"))
    if host is None or port is None or "://" in text.removeprefix("ray://"):
        raise ConfigError(f"--address {address}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    reason = _unreachable(host, port)
    if reason:
        raise ConfigError(f"--address {address}: no Ray cluster answers there ({reason})")


def check_mlflow_uri(uri: str | None) -> None:
    """Refuse a tracking URI MLflow cannot use, or an http(s) server that accepts no connection."""
    if uri is None:
        return
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().split("+", 1)[0]  # postgresql+psycopg2://…
    if len(scheme) == 1:  # a Windows drive letter, C:/… : a path
        scheme = ""
    if scheme not in _MLFLOW_SCHEMES:
        raise ConfigError(f"--mlflow {uri}: unsupported tracking URI scheme {scheme!r} (a folder, file://, http(s)://)")
    if scheme in ("http", "https"):
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ConfigError(f"--mlflow {uri}: the port is not a number in 0-65535") from None
        if not parts.hostname:
            raise ConfigError(f"--mlflow {uri}: names no host")
        reason = _unreachable(parts.hostname, port)
        if reason:
            raise ConfigError(f"--mlflow {uri}: no tracking server answers there ({reason})")


def _host_port(text: str) -> tuple[str | None, int | None]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None, None
    return host.strip("[]"), int(port)


def _unreachable(host: str, port: int) -> str:
    """Why a TCP connection to host:port fails within PROBE_TIMEOUT_S; "" when it succeeds."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return ""
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
