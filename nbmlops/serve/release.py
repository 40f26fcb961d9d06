"""Promote, then build: the one composition every front door calls.

``nbmlops promote --build``, ``nbmlops ci --promote``, the runs widget and the JupyterLab
server's promote endpoint all call :func:`release`. It promotes by
:func:`nbmlops.promote.core.promote`'s rule (a refusal raises ``PromotionRefused``, as
``promote()`` does) and, with ``build``, makes sure the version now holding the alias has
a verified Bento (:func:`nbmlops.serve.build.ensure_bento`). The promotion stands even if
the build fails: a build error is returned in the :class:`Release`, not raised, so the
caller can say both what was promoted and why the Bento is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nbmlops.capture.schema import DEFAULT_ALIAS, MODES
from nbmlops.exceptions import NbmlopsError
from nbmlops.promote.core import Promotion, promote
from nbmlops.promote.gates import Gate
from nbmlops.serve.build import Servable, ensure_bento


@dataclass
class Release:
    """What :func:`release` did: the promotion, and the Bento if one was asked for."""

    promotion: Promotion
    bento: Servable | None = None  # built, or found and verified (``build=True``)
    build_error: NbmlopsError | None = None  # why the Bento could not be had

    @property
    def ok(self) -> bool:
        """Promoted, and built if a build was asked for."""
        return self.build_error is None

    def summary(self) -> dict[str, Any]:
        """What the JupyterLab panel and the widget show of it (JSON)."""
        return {
            **self.promotion.summary(),
            "bento": self.bento.bento_tag if self.bento else None,
            "build_error": self.build_error.to_json() if self.build_error else None,
        }


def release(
    experiment: str,
    metric: str,
    *,
    mode: str = MODES[0],
    gates: Sequence[str | Gate] = (),
    model_name: str | None = None,
    alias: str = DEFAULT_ALIAS,
    run_id: str | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
    build: bool = False,
    reason: str = "",
    on_promoted: Callable[[Promotion], None] | None = None,
) -> Release:
    """Promote the best (or given) run as :func:`~nbmlops.promote.core.promote` does; with
    ``build``, then ensure the promoted version's Bento.

    ``on_promoted`` is called between the two (the widget shows "building" then).
    """
    promotion = promote(
        experiment,
        metric,
        mode=mode,
        gates=gates,
        model_name=model_name,
        alias=alias,
        run_id=run_id,
        force=force,
        tracking_uri=tracking_uri,
        reason=reason,
    )
    done = Release(promotion)
    if on_promoted is not None:
        on_promoted(promotion)
    if build:
        try:
            done.bento = ensure_bento(f"{promotion.model_name}/{promotion.version}", tracking_uri)
        except NbmlopsError as exc:
            done.build_error = exc
    return done
