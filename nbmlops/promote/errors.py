"""Errors of the registry side: selecting, gating, promoting, resolving models.

Each names the problem and the fix; the CLI prints the message alone (exit 2), and a
refused promotion (a gate failed, a worse candidate) exits 1.
"""

from __future__ import annotations

from nbmlops.exceptions import NbmlopsError


class PromoteError(NbmlopsError):
    """A promotion, rollback or model lookup that cannot go ahead as asked."""


class NoSuchExperiment(PromoteError):
    pass


class NoCandidate(PromoteError):
    """No finished pipeline run with the metric (or the run given is not usable)."""


class GateSyntaxError(PromoteError):
    pass


class UnknownModel(PromoteError):
    pass


class UnknownVersion(PromoteError):
    pass


class PromotionRefused(PromoteError):
    """A gate failed, or the candidate is worse than the model holding the alias."""

    exit_code = 1


class IntegrityError(PromoteError):
    """A model's files changed since it was promoted."""

    exit_code = 1

    def __init__(self, model: str, path: str, problem: str) -> None:
        self.model = model
        self.path = path
        super().__init__(
            f"model {model}: {path} {problem} since promotion: refusing to use it",
            "re-train and promote again, or restore the file from a backup; "
            "never edit a registered model's files",
        )
