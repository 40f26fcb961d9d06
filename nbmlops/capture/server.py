"""A shared MLflow tracking server for a team: build its command, check, start, wait, stop.

``nbmlops server start`` runs ``mlflow server --serve-artifacts`` on a database every
member's runs go to (PostgreSQL for a team; the project's SQLite store by default) and an
artifact folder the server reads and writes for its clients. Before anything starts, the
port and the database are checked, so a port in use, an unreachable PostgreSQL or a wrong
password is named with its fix instead of a server that dies in its log.

The server runs in its own process group: stopping it stops its workers too.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from nbmlops import processes
from nbmlops.exceptions import NbmlopsError
from nbmlops.processes import tail
from nbmlops.project import redact

SERVER_DIR = "server"  # under the project's .nbmlops/: the server's log


class TrackingServerError(NbmlopsError):
    """The MLflow tracking server cannot start, or stopped on its own. (Not to be confused
    with :class:`nbmlops.serve.errors.ServeError`: serving a model with BentoML.)

    Its messages never show the backend store's password (:func:`hide_password`)."""


@dataclass(frozen=True)
class ServerConfig:
    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int | None = None  # MLflow's default (4) when None
    allowed_hosts: str | None = None
    auth_db: str | None = None  # MLflow's basic authentication, its users there; None: off

    @property
    def url(self) -> str:
        """The URL clients export as ``MLFLOW_TRACKING_URI``."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def local_url(self) -> str:
        """The URL this machine reaches the server at (``/health`` is polled there)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def configure(
    root: Path,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    allowed_hosts: str | None = None,
    auth: bool = False,
    auth_db: str | None = None,
) -> ServerConfig:
    """The server's settings, defaults filled in from the project folder ``root``.

    Default store: the project's own ``mlflow.db`` (the runs recorded so far stay visible
    and nothing moves); default artifacts: ``mlartifacts/`` in the project, MLflow's own
    default for a server. Relative paths are made absolute. With ``auth``, users and
    permissions are kept in ``auth_db`` (default: ``.nbmlops/server/basic_auth.db``).
    """
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    if backend.startswith("sqlite:///") and not backend.startswith("sqlite:////"):
        backend = f"sqlite:///{(root / backend.removeprefix('sqlite:///')).resolve()}"
    artifacts = artifacts_destination or str(root / "mlartifacts")
    if "://" not in artifacts:
        artifacts = str((root / artifacts).resolve())
    if not 0 < port < 65536:
        raise TrackingServerError(
            f"--port {port} is not a TCP port", "pick one in 1 .. 65535, e.g. 5000"
        )
    if workers is not None and workers < 1:
        raise TrackingServerError(
            f"--workers {workers} is not a number of processes", "use 1 or more"
        )
    if auth_db and not auth:
        raise TrackingServerError("--auth-db without --auth", "add --auth, or drop --auth-db")
    if auth:
        auth_db = with_driver(
            auth_db or f"sqlite:///{root / '.nbmlops' / SERVER_DIR / 'basic_auth.db'}"
        )
    return ServerConfig(
        auth_db=auth_db,
        backend_store_uri=with_driver(backend),
        artifacts_destination=artifacts,
        host=host,
        port=port,
        workers=workers,
        allowed_hosts=allowed_hosts,
    )


def with_driver(uri: str) -> str:
    """``postgresql://`` with the PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; when only psycopg2 is
    installed (``psycopg2-binary``), name it. ``postgres://`` (Heroku's spelling) is
    accepted too.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        return uri
    driver = "postgresql"
    if not _importable("psycopg") and _importable("psycopg2"):
        driver = "postgresql+psycopg2"
    return f"{driver}://{rest}"


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def command(config: ServerConfig) -> list[str]:
    """The ``mlflow server`` command line for ``config``. The backend store URI is not on
    it (any local user can read a command line, and the URI may hold a password): the
    server reads it from ``MLFLOW_BACKEND_STORE_URI`` (see :func:`start`)."""
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--artifacts-destination",
        config.artifacts_destination,
        "--serve-artifacts",
        "--host",
        config.host,
        "--port",
        str(config.port),
    ]
    if config.workers is not None:
        cmd += ["--workers", str(config.workers)]
    if config.allowed_hosts:
        cmd += ["--allowed-hosts", config.allowed_hosts]
    if config.auth_db:
        cmd += ["--app-name", "basic-auth"]
    return cmd


def auth_config(config: ServerConfig, folder: Path) -> Path:
    """Write MLflow's basic-auth settings (``MLFLOW_AUTH_CONFIG_PATH``) into ``folder``,
    readable by this user only (the database URI may hold a password). Everyone reads
    (``default_permission``); the creator of an experiment or a model manages it; the
    roles of ``capture/access.py`` add the rest. The admin's first password comes from
    ``MLFLOW_AUTH_ADMIN_PASSWORD``."""
    assert config.auth_db is not None
    path = folder / "basic_auth.ini"
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {config.auth_db.replace('%', '%%')}\n"
        f"admin_username = {os.environ.get('MLFLOW_AUTH_ADMIN_USERNAME', 'admin')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


# ---------------------------------------------------------------- checks before starting


def check_port(host: str, port: int) -> None:
    """Refuse a port something already listens on (checked as uvicorn will bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise _port_error(host, port, exc.strerror or str(exc)) from None


def _port_error(host: str, port: int, reason: str) -> TrackingServerError:
    return TrackingServerError(
        f"cannot listen on {host}:{port}: {reason} (another tracking server, or another program?)",
        f"stop what listens there (`ss -ltnp 'sport = :{port}'` shows it) "
        "or choose another port with --port",
    )


def check_backend(uri: str, timeout: int = 5) -> None:
    """Connect to the backend store once; a problem is named with its fix.

    An SQLite store's folder is created; a database server is asked for one connection.
    """
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    if "://" not in uri:
        raise TrackingServerError(
            f"--backend-store-uri {uri.rpartition('@')[2]!r} is not a database URI",
            "give postgresql://USER:PASSWORD@HOST:5432/DATABASE (or sqlite:///path/mlflow.db)",
        )
    import sqlalchemy
    from sqlalchemy.exc import NoSuchModuleError, OperationalError

    connect_args = {"connect_timeout": timeout} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except (ModuleNotFoundError, NoSuchModuleError) as exc:
        raise TrackingServerError(
            f"no database driver for {redact(uri)} ({exc})",
            "use postgresql://... (pip install psycopg2-binary), mysql://... (pip install "
            "pymysql) or sqlite:///path/mlflow.db",
        ) from None
    except OperationalError as exc:
        reason = str(exc.orig) if exc.orig is not None else str(exc)
        raise database_error(uri, hide_password(reason, uri)) from None


def database_error(uri: str, reason: str) -> TrackingServerError:
    """What a database's refusal means for the user, and what to do about it."""
    parts = urlsplit(uri)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    user = parts.username or "(none)"
    database = parts.path.lstrip("/") or "(none)"
    first = reason.strip().splitlines()[0] if reason.strip() else reason
    text = reason.lower()
    if "password authentication failed" in text:
        return TrackingServerError(
            f"PostgreSQL at {where} refused the password of user {user!r}",
            "correct the password in --backend-store-uri "
            "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE; URL-encode special characters)",
        )
    if "no password supplied" in text:
        return TrackingServerError(
            f"PostgreSQL at {where} asks user {user!r} for a password and none was given",
            "put it in --backend-store-uri: postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    if "does not exist" in text and "database" in text:
        return TrackingServerError(
            f"PostgreSQL at {where} has no database {database!r}",
            f"create it: createdb -h {parts.hostname or 'localhost'} -p {parts.port or 5432} "
            f"-U {user} {database}   (or in psql: CREATE DATABASE {database};)",
        )
    if "role" in text and "does not exist" in text:
        return TrackingServerError(
            f"PostgreSQL at {where} has no user {user!r}",
            f"create it (in psql: CREATE USER {user} WITH PASSWORD '...';) or correct the user",
        )
    if any(
        s in text
        for s in ("connection refused", "could not connect", "timeout expired", "translate host")
    ):
        return TrackingServerError(
            f"cannot reach PostgreSQL at {where}: {first}",
            "start PostgreSQL there, or correct the host and port in --backend-store-uri",
        )
    return TrackingServerError(
        f"the backend store {redact(uri)} refused to connect: {first}",
        "check the URI in --backend-store-uri and that the database accepts connections "
        "from this machine",
    )


def hide_password(text: str, uri: str) -> str:
    """``text`` (a driver's or the server's message) with ``uri``'s password as ``***``
    wherever it stands on its own (as in a URI; not inside a longer word)."""
    from urllib.parse import unquote

    password = urlsplit(uri).password
    if not password:
        return text
    for spelling in {password, unquote(password)}:
        text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(spelling)}(?![A-Za-z0-9])", "***", text)
    return text


# ---------------------------------------------------------------- the process


def start(config: ServerConfig, log: Path) -> subprocess.Popen[bytes]:
    """Check the port and the store, then start ``mlflow server`` (output to ``log``)."""
    check_port(config.host, config.port)
    check_backend(config.backend_store_uri)
    if "://" not in config.artifacts_destination:
        Path(config.artifacts_destination).mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_BACKEND_STORE_URI": config.backend_store_uri,  # not in argv: see command()
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the server's store is its backend store
    if config.auth_db:
        check_backend(config.auth_db)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(config, log.parent))
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    return processes.start(command(config), env, log)


def wait_ready(
    config: ServerConfig, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180
) -> None:
    """Wait until ``/health`` answers; if the server exits first, say why."""
    url = config.local_url + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise exited_error(config, proc.returncode, log, starting=True)
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.25)
    raise TrackingServerError(
        f"the tracking server did not answer {url} within {timeout:.0f} s; its log:\n"
        + _log_text(tail(log), config),
        f"read the log ({log}); a slow machine may need a second try",
    )


def exited_error(
    config: ServerConfig, code: int | None, log: Path, starting: bool = False
) -> TrackingServerError:
    """The server stopped on its own: a known cause of a failed start by name, else the
    end of its log."""
    text = _log_text(tail(log, 60), config)
    lowered = text.lower()
    if starting and "address already in use" in lowered:
        return _port_error(config.host, config.port, "address already in use")
    for marker in ("password authentication failed", "connection refused", "does not exist"):
        if starting and marker in lowered:
            line = next(ln for ln in text.splitlines() if marker in ln.lower())
            return database_error(config.backend_store_uri, line)
    return TrackingServerError(
        f"the tracking server exited with status {code}; the end of its log ({log}):\n{text}",
        "read the log above; start it again with the same options (runs wait for it)",
    )


def _log_text(text: str, config: ServerConfig) -> str:
    """The server's log without the passwords of its stores (runs', and users')."""
    text = hide_password(text, config.backend_store_uri)
    return hide_password(text, config.auth_db) if config.auth_db else text
