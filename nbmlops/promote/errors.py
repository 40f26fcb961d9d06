"""Errors of the registry side: selecting, gating, promoting, resolving models.

Each carries the problem and the fix (the CLI prints both and exits 2; a refused
promotion and a changed model file exit 1). What does not exist (an experiment, a
registered model, a version or alias) is also a :class:`~nbmlops.exceptions.NotFound`
(HTTP 404); a refused promotion answers 409.
"""

from __future__ import annotations

from typing import Any

from nbmlops.exceptions import NbmlopsError, NotFound


class PromoteError(NbmlopsError):
    """A promotion, rollback or model lookup that cannot go ahead as asked."""


class NoSuchExperiment(PromoteError, NotFound):
    """The experiment whose runs should compete is not in the store."""


class NoCandidate(PromoteError):
    """No finished pipeline run with the metric (or the run given is not usable)."""


class GateSyntaxError(PromoteError):
    """A gate that is not ``METRIC OP NUMBER``."""


class UnknownModel(PromoteError, NotFound):
    """No registered model of that name (or a reference that names none)."""


class UnknownVersion(PromoteError, NotFound):
    """The registered model has no such version or alias."""


class PromotionRefused(PromoteError):
    """A gate failed, or the candidate is worse than the model holding the alias.

    ``holder``: the version holding the alias, which stays (None: no version holds it).
    """

    exit_code = 1
    http_status = 409

    def __init__(self, problem: str, fix: str = "", holder: str | None = None) -> None:
        super().__init__(problem, fix)
        self.holder = holder

    def details(self) -> dict[str, Any]:
        return {"holder": self.holder}


class IntegrityError(PromoteError):
    """A model's files changed since it was promoted (or, at promotion, since training).

    The Bento's service (``serve/bento_service.py``, which cannot import nbmlops) raises
    its standalone twin of the same name and message when it checks the files at start.
    """

    exit_code = 1

    def __init__(self, model: str, path: str, problem: str, since: str = "promotion") -> None:
        super().__init__(
            f"model {model}: {path} {problem} since {since}: refusing to use it",
            "re-train and promote again, or restore the file from a backup; "
            "never edit a registered model's files",
        )
        self.model = model
        self.path = path

    def details(self) -> dict[str, Any]:
        return {"model": self.model, "path": self.path}


class SignatureError(PromoteError):
    """A model version or Bento whose signature is missing, from an untrusted key, or does
    not match what it signs (``path``: the tag or file that was checked)."""

    exit_code = 1

    def __init__(self, what: str, path: str, problem: str, fix: str) -> None:
        super().__init__(f"{what}: {path} {problem}: refusing to use it", fix)
        self.what = what
        self.path = path

    def details(self) -> dict[str, Any]:
        return {"model": self.what, "path": self.path}


class SigningKeyError(PromoteError):
    """The signing key or a trusted public key is missing or unreadable."""
