"""Where a project keeps its state, and which MLflow store it uses by default.

The embedded default needs no server: an SQLite store ``mlflow.db`` and an artifact
folder ``mlruns/`` in the project folder (the working directory), plus nbmlops' own state
in ``.nbmlops/`` (run outputs, saved step outputs, the file-hash cache). ``--tracking-uri``
or ``MLFLOW_TRACKING_URI`` point every command at another store.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

STATE_DIR = ".nbmlops"


def project_root() -> Path:
    return Path.cwd().resolve()


def state_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / STATE_DIR


def experiment_name(notebook: str | Path) -> str:
    """The experiment (and the stem of output files) of a notebook's runs by default: its
    file name without ``.ipynb``. The CLI, the JupyterLab panel and the widget agree on it."""
    return Path(notebook).name.removesuffix(".ipynb")


def tracking_uri(explicit: str | None = None, root: Path | None = None) -> str:
    """``explicit``, else ``MLFLOW_TRACKING_URI``, else the project's SQLite store; a
    server's ``user:password@`` is taken out (:func:`credentials_to_env`)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and "@" in uri:
        bare = credentials_to_env(uri)
        if not explicit:
            os.environ["MLFLOW_TRACKING_URI"] = bare
        return bare
    if not uri:
        return f"sqlite:///{(root or project_root()) / 'mlflow.db'}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Relative: papermill changes the working directory, and the kernel runs elsewhere.
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``mlruns/`` beside a SQLite store.

    MLflow's own default is relative to the working directory of whichever process
    creates the experiment; an absolute folder keeps kernels and subprocesses agreeing.
    For a tracking server, the server decides (None).
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.parent / "mlruns").resolve().as_uri()
    return None


def redact(uri: str) -> str:
    """``uri`` with its password replaced by ``***`` (for messages, logs and answers)."""
    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


_PASSWORD_IN_URI = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@", re.IGNORECASE)


def redact_text(text: str) -> str:
    """``text`` (an error of a library, a log line) with every URI's password as ``***``."""
    return _PASSWORD_IN_URI.sub(r"\1:***@", text)


def credentials_to_env(uri: str) -> str:
    """``uri`` without its ``user:password@``, which go to ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD``, where MLflow's client (and every child process: kernels,
    jobs) reads them. So no URI nbmlops keeps, prints, logs or hands on holds a password,
    and no host name handed to the resolver is ``user:password@host``. Credentials given
    only in those variables or in ``~/.mlflow/credentials`` are left as they are."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username)
    if parts.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return without_credentials(uri)


def without_credentials(uri: str) -> str:
    """``uri`` with no ``user:password@`` at all (for links shown to people and in reports)."""
    parts = urlsplit(uri)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
