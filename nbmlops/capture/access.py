"""Access by role on a tracking server running MLflow's basic authentication.

``nbmlops server start --auth`` runs ``mlflow server --app-name basic-auth``. Two roles
(MLflow RBAC roles in the ``default`` workspace) map the stages onto its permissions:

- ``scientist``: logs runs and registers versions of a model ``NAME`` (MLflow gives the
  creator of an experiment or a registered model MANAGE on it; everything else is READ);
- ``release``: may also register versions of every model (and store their reference
  profiles in every experiment's runs), and edit ``NAME-production``,
  the production model that
  ``nbmlops server protect NAME`` creates as the admin. Once it exists, promotion copies
  the promoted version of ``NAME`` into it and moves the alias there, so only a release
  user's credentials can change what is served.

The admin's credentials come, as every user's, from ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` or ``~/.mlflow/credentials``; passwords are never printed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from nbmlops.exceptions import NbmlopsError, TrackingError

ROLES = ("scientist", "release")
WORKSPACE = "default"  # MLflow's workspace when workspaces are off
PRODUCTION_SUFFIX = "-production"
_CAN_EDIT = ("EDIT", "MANAGE")
_PERMISSION_PATH = "/api/3.0/mlflow/users/permissions/get"
_CREDENTIALS_FIX = (
    "export MLFLOW_TRACKING_USERNAME=NAME and MLFLOW_TRACKING_PASSWORD=... (or put them in "
    "~/.mlflow/credentials); the server's admin creates users: nbmlops server users add"
)


class NotAuthenticated(TrackingError):
    """The tracking server asks for a user name and password, or refused the ones given."""

    http_status = 401


class AccessDenied(TrackingError):
    """The tracking server's user lacks the permission for what was asked."""

    http_status = 403


def role_name(role: str) -> str:
    """The MLflow role of an nbmlops role: ``nbmlops-release``."""
    return f"nbmlops-{role}"


def production_name(name: str) -> str:
    """The production registered model of model ``name``: ``NAME-production``."""
    return name + PRODUCTION_SUFFIX


def current_user() -> str | None:
    """The user name MLflow's client sends (environment, else ``~/.mlflow/credentials``)."""
    from mlflow.utils.credentials import read_mlflow_creds

    return read_mlflow_creds().username


def access_error(exc: BaseException, uri: str, what: str) -> TrackingError | None:
    """What MLflow's 401 or 403 answer ``exc`` (to the call ``what``) means for the user;
    None for any other error."""
    text = str(exc)
    code = getattr(exc, "error_code", "")
    user = current_user()
    if code == "UNAUTHENTICATED" or re.search(r"error code 401|401 Client Error", text):
        problem = (
            f"the tracking server refused the password of user {user!r}"
            if user
            else "the tracking server asks for a user name and password, and none was given"
        )
        return NotAuthenticated(uri, problem, _CREDENTIALS_FIX)
    if code == "PERMISSION_DENIED" or re.search(r"error code 403|403 Client Error", text):
        return AccessDenied(
            uri,
            f"user {user!r} is not permitted to {what.replace('_', ' ')} (permission denied)",
            "ask the server's admin for the permission (docs/tracking-server.md, Access by role)",
        )
    return None


def permission(uri: str, user: str, model: str) -> str | None:
    """``user``'s permission on registered model ``model`` (``READ``, ``EDIT``, ...), as
    the server answers it; None when the server has no authentication (or no such user)."""
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    response = http_request(  # type: ignore[no-untyped-call]
        get_default_host_creds(uri),  # type: ignore[no-untyped-call]
        _PERMISSION_PATH,
        "GET",
        params={"username": user, "resource_type": "registered_model", "resource_id": model},
        max_retries=0,
        raise_on_status=False,
    )
    if response.status_code != 200:
        return None
    return str(json.loads(response.text).get("permission") or "") or None


def check_can_edit(uri: str, name: str, alias: str) -> None:
    """Refuse, before anything is written, a promotion to ``name@alias`` by a user who may
    not edit ``name``'s production model."""
    user = current_user()
    production = production_name(name)
    held = permission(uri, user, production) if user else None
    if held is None or held in _CAN_EDIT:
        return
    raise AccessDenied(
        uri,
        f"user {user!r} may not promote to {name}@{alias}: the alias lives on the production "
        f"model {production!r}, and moving it needs EDIT permission there; {user!r} has {held}",
        f"ask a user with the release role ({role_name('release')}) to promote it, or the "
        f"server's admin to give {user} that role: nbmlops server users add {user} --role release",
    )


# ---------------------------------------------------------------- the admin's commands


class AccessSetupError(NbmlopsError):
    """A user or a production model could not be set up on the tracking server."""


def _auth_client(uri: str) -> Any:
    try:
        from mlflow.server.auth.client import AuthServiceClient
    except ImportError as exc:
        raise AccessSetupError(
            f"MLflow's authentication client cannot be imported ({exc})",
            "pip install 'mlflow[auth]'",
        ) from None
    return AuthServiceClient(uri)


def _admin_call(uri: str, what: str, fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:
        denied = access_error(exc, uri, what)
        if denied is not None:
            raise denied from None
        if "404" in str(exc) or "ENDPOINT_NOT_FOUND" in str(exc):
            raise AccessSetupError(
                f"the tracking server at {uri} has no authentication",
                "start it with: nbmlops server start --auth",
            ) from None
        raise


def _role_id(client: Any, uri: str, role: str) -> int:
    """The id of the MLflow role of ``role``, created if missing."""
    name = role_name(role)
    for existing in _admin_call(uri, "list roles", lambda: client.list_roles(WORKSPACE)):
        if existing.name == name:
            return int(existing.id)
    created = _admin_call(
        uri,
        "create roles",
        lambda: client.create_role(WORKSPACE, name, f"nbmlops {role} (docs/tracking-server.md)"),
    )
    if role == "release":  # registers (and profiles) what it promotes, of any scientist's
        for resource in ("registered_model", "experiment"):
            _admin_call(
                uri,
                "grant permissions",
                lambda r=resource: client.add_role_permission(created.id, r, "*", "EDIT"),
            )
    return int(created.id)


def add_user(uri: str, username: str, password: str, role: str) -> None:
    """Create ``username`` (unless the server has it) and give it ``role``."""
    if role not in ROLES:
        raise AccessSetupError(f"unknown role {role!r}", f"use one of: {', '.join(ROLES)}")
    client = _auth_client(uri)
    try:
        _admin_call(uri, "create users", lambda: client.create_user(username, password))
    except Exception as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            if "INVALID_PARAMETER_VALUE" in str(exc):
                message = str(exc).partition("INVALID_PARAMETER_VALUE: ")[2] or str(exc)
                raise AccessSetupError(
                    f"the server refused user {username!r}: {message}", "choose another password"
                ) from None
            raise
    role_id = _role_id(client, uri, role)
    assigned = _admin_call(uri, "list roles", lambda: client.list_user_roles(username))
    if all(int(r.id) != role_id for r in assigned):
        _admin_call(uri, "assign roles", lambda: client.assign_role(username, role_id))


def protect(uri: str, name: str) -> str:
    """Create ``name``'s production model (as the admin) and let the release role edit it;
    returns its name. Nothing happens twice when run again."""
    from mlflow import MlflowClient

    production = production_name(name)
    registry = MlflowClient(uri, registry_uri=uri)
    try:
        _admin_call(
            uri, "create registered models", lambda: registry.create_registered_model(production)
        )
    except Exception as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    client = _auth_client(uri)
    role_id = _role_id(client, uri, "release")
    granted = _admin_call(uri, "list roles", lambda: client.list_role_permissions(role_id))
    if not any(
        p.resource_type == "registered_model" and p.resource_pattern == production for p in granted
    ):
        _admin_call(
            uri,
            "grant permissions",
            lambda: client.add_role_permission(role_id, "registered_model", production, "MANAGE"),
        )
    return production
