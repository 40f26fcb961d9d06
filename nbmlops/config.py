"""The project configuration: which pipelines ``nbmlops ci`` runs, and what they must pass.

It lives in ``pyproject.toml`` under ``[tool.nbmlops]``, or in an ``nbmlops.toml`` with the
same keys at its top level. A project with both is refused (which one counts would be a
guess). Everything is checked when the file is loaded: a wrong type, a bad gate, an
unknown key (a typo must not pass silently) raises :class:`ConfigError` naming the key
(``tool.nbmlops.pipelines.breast_cancer.gates[1]``), the problem and the fix::

    [tool.nbmlops.pipelines.breast_cancer]
    notebook = "notebooks/breast_cancer.ipynb"   # relative to the file's folder
    experiment = "breast_cancer"                 # default: the notebook's name
    parameters = { n_estimators = 100 }          # -p values (TOML types)
    gates = ["f1>=0.9"]                          # as nbmlops promote --gate
    tests = ["pytest tests/model_checks.py"]     # shell commands run after the pipeline
    promote = { metric = "f1", mode = "max", alias = "champion", model_name = "breast_cancer" }
    drift = { wasserstein = 0.1, js = 0.1, pvalue = 0.01, data_parameter = "data", target = "target" }
    monitor = { performance = "f1>=0.9", max_drop = 0.05, segments = ["plan", "region"] }

A top-level ``[tool.nbmlops.drift]`` table sets the drift defaults of every pipeline.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbmlops.capture.schema import DEFAULT_ALIAS, MODES
from nbmlops.exceptions import NbmlopsError
from nbmlops.monitor.thresholds import (
    DEFAULT_JS,
    DEFAULT_MISSING,
    DEFAULT_PVALUE,
    DEFAULT_WASSERSTEIN,
    Thresholds,
)
from nbmlops.project import experiment_name
from nbmlops.promote.errors import GateSyntaxError
from nbmlops.promote.gates import Gate, parse_gate

PYPROJECT = "pyproject.toml"
NBMLOPS_TOML = "nbmlops.toml"
DOCS = "docs/ci.md"

TOP_KEYS = ("pipelines", "drift")
PIPELINE_KEYS = (
    *("notebook", "experiment", "parameters", "gates", "tests", "promote", "drift"),
    "monitor",
)
MONITOR_KEYS = ("performance", "max_drop", "segments")
PROMOTE_KEYS = ("metric", "mode", "alias", "model_name", "build")
DRIFT_KEYS = (
    *("wasserstein", "js", "missing", "pvalue"),
    *("allow_missing_columns", "data_parameter", "target"),
)
RENAMED_DRIFT_KEYS = {"psi": "wasserstein"}  # old key -> its replacement (a ConfigError)


class ConfigError(NbmlopsError):
    """The project configuration is missing, unreadable or invalid at ``key``."""

    def __init__(self, path: Path | str, key: str, problem: str, fix: str = "") -> None:
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"{where}: {problem}", fix)
        self.path = str(path)
        self.key = key

    def details(self) -> dict[str, Any]:
        return {"key": self.key}


@dataclass(frozen=True)
class PromoteRule:
    """How a pipeline's run is promoted: ``nbmlops promote``'s options."""

    metric: str
    mode: str = MODES[0]  # max
    alias: str = DEFAULT_ALIAS
    model_name: str = ""  # the experiment's name when empty
    build: bool = True  # build the promoted version's Bento (nbmlops build)


@dataclass(frozen=True)
class Drift:
    """The drift check of a pipeline's model (``nbmlops monitor drift``'s thresholds), and
    how a retraining gets the new data."""

    wasserstein: float = DEFAULT_WASSERSTEIN
    js: float = DEFAULT_JS
    missing: float = DEFAULT_MISSING
    pvalue: float = DEFAULT_PVALUE
    allow_missing_columns: bool = False
    data_parameter: str | None = None  # the notebook parameter that receives --current
    target: str | None = None  # the label column of --current: both models are scored on it

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            wasserstein=self.wasserstein, js=self.js, missing=self.missing, pvalue=self.pvalue
        )


@dataclass(frozen=True)
class Monitor:
    """``nbmlops monitor performance``'s rule and segments for a pipeline's model."""

    performance: Gate | None = None  # e.g. f1>=0.9 on the latest labelled window
    max_drop: float | None = None  # at most this much worse than at training
    segments: tuple[str, ...] = ()  # columns whose values are compared (bias)


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    key: str  # where it is configured: "tool.nbmlops.pipelines.<name>"
    notebook: Path
    experiment: str
    parameters: dict[str, Any] = field(default_factory=dict)
    gates: tuple[Gate, ...] = ()
    tests: tuple[str, ...] = ()
    promote: PromoteRule | None = None
    drift: Drift = Drift()
    monitor: Monitor = Monitor()

    @property
    def model_name(self) -> str:
        return (self.promote.model_name if self.promote else "") or self.experiment

    def parameter_texts(self) -> dict[str, str]:
        """The parameters as ``-p`` texts: a string as written, anything else as a literal."""
        return {k: v if isinstance(v, str) else repr(v) for k, v in self.parameters.items()}


@dataclass(frozen=True)
class ProjectConfig:
    path: Path  # the file it was read from
    prefix: str  # "tool.nbmlops" in pyproject.toml, "" in nbmlops.toml
    pipelines: dict[str, PipelineConfig]

    @property
    def root(self) -> Path:
        return self.path.parent

    def select(self, names: tuple[str, ...] | list[str] = ()) -> list[PipelineConfig]:
        """The pipelines named (all of them without names); an unknown name is an error."""
        for name in names:
            if name not in self.pipelines:
                raise NbmlopsError(
                    f"no pipeline {name!r} is configured in {self.path.name}",
                    f"name one of: {', '.join(self.pipelines)} (or add "
                    f"[{_join(self.prefix, 'pipelines', name)}])",
                )
        return (
            [self.pipelines[n] for n in dict.fromkeys(names)]
            if names
            else list(self.pipelines.values())
        )

    def for_model(self, model: str) -> PipelineConfig:
        """The pipeline that trains ``model`` (``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``)."""
        from nbmlops.promote.registry import parse_ref

        name = parse_ref(model)[0]
        for pipeline in self.pipelines.values():
            if pipeline.model_name == name:
                return pipeline
        known = ", ".join(f"{p.model_name} ({p.name})" for p in self.pipelines.values())
        raise NbmlopsError(
            f"no pipeline configured in {self.path.name} trains the model {name!r}",
            f"models configured: {known}; set promote.model_name of the pipeline that trains it",
        )


def find(root: Path) -> tuple[Path, str, dict[str, Any]]:
    """The configuration file under ``root``, its key prefix, and its nbmlops table."""
    pyproject, standalone = root / PYPROJECT, root / NBMLOPS_TOML
    table = None
    if pyproject.is_file():
        table = _read(pyproject).get("tool", {}).get("nbmlops")
    if table is not None and standalone.is_file():
        raise ConfigError(
            root,
            "",
            f"both {PYPROJECT} ([tool.nbmlops]) and {NBMLOPS_TOML} configure nbmlops",
            "keep one of them",
        )
    if table is not None:
        return pyproject, "tool.nbmlops", table
    if standalone.is_file():
        return standalone, "", _read(standalone)
    raise ConfigError(
        root,
        "",
        f"no nbmlops configuration: neither {PYPROJECT} with a [tool.nbmlops] table "
        f"nor {NBMLOPS_TOML}",
        f'add [tool.nbmlops.pipelines.<name>] with notebook = "..." (see {DOCS})',
    )


def load(root: Path | str | None = None, path: Path | str | None = None) -> ProjectConfig:
    """Read and check the configuration of the project in ``root`` (default: the working
    directory), or the file ``path`` (a ``pyproject.toml`` or an ``nbmlops.toml``)."""
    if path is not None:
        file = Path(path).resolve()
        if not file.is_file():
            raise ConfigError(
                file, "", "no such file", "give the path of a pyproject.toml or nbmlops.toml"
            )
        doc = _read(file)
        if file.name == PYPROJECT:
            prefix, table = "tool.nbmlops", doc.get("tool", {}).get("nbmlops")
            if table is None:
                raise ConfigError(file, "tool.nbmlops", "missing", f"add the table (see {DOCS})")
        else:
            prefix, table = "", doc
    else:
        file, prefix, table = find(Path(root or Path.cwd()).resolve())
    return _Checker(file, prefix).project(table)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML ({exc})", "fix the syntax there") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read ({exc.strerror})") from None


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


class _Checker:
    """Turns the parsed TOML into checked objects; every error names the key."""

    def __init__(self, path: Path, prefix: str) -> None:
        self.path = path
        self.prefix = prefix

    def fail(self, key: str, problem: str, fix: str = "") -> ConfigError:
        return ConfigError(self.path.name, key, problem, fix)

    def table(self, value: Any, key: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``value`` as a table whose keys are all ``allowed`` (any keys when None)."""
        if not isinstance(value, dict):
            raise self.fail(key, f"is {_kind(value)}, not a table", f"write it as [{key}]")
        for name in value:
            if allowed is not None and name not in allowed:
                near = difflib.get_close_matches(name, allowed, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise self.fail(
                    _join(key, name),
                    "unknown key",
                    f"{hint}the keys of {key or 'the file'} are: {', '.join(allowed)}",
                )
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"is {_kind(value)}, not a non-empty string", 'e.g. "f1"')
        return value

    def number(self, value: Any, key: str, low: float, high: float | None, example: float) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"is {_kind(value)}, not a number", f"e.g. {example}")
        if not math.isfinite(value):
            raise self.fail(key, f"is {value}, not a finite number", f"e.g. {example}")
        if value < low or (high is not None and value > high):
            span = f"{low:g} .. {high:g}" if high is not None else f"{low:g} or more"
            raise self.fail(key, f"{value} is out of range", f"use a value in {span}")
        return float(value)

    def flag(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"is {_kind(value)}, not true or false", "write true or false")
        return value

    def texts(self, value: Any, key: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(key, f"is {_kind(value)}, not a list of strings", '["..."]')
        return [self.text(item, f"{key}[{i}]") for i, item in enumerate(value)]

    # ------------------------------------------------------------ the tables

    def project(self, doc: dict[str, Any]) -> ProjectConfig:
        top = self.table(doc, self.prefix, TOP_KEYS)
        defaults = self.drift_table(top.get("drift", {}), _join(self.prefix, "drift"))
        self.drift(defaults, _join(self.prefix, "drift"))
        key = _join(self.prefix, "pipelines")
        if "pipelines" not in top:
            raise self.fail(
                key, "missing", f'add [{key}.<name>] with notebook = "..." (see {DOCS})'
            )
        tables = self.table(top["pipelines"], key)
        if not tables:
            raise self.fail(key, "has no pipeline", f'add [{key}.<name>] with notebook = "..."')
        pipelines = {
            name: self.pipeline(name, body, f"{key}.{name}", defaults)
            for name, body in tables.items()
        }
        return ProjectConfig(self.path, self.prefix, pipelines)

    def pipeline(
        self, name: str, body: Any, key: str, drift_defaults: dict[str, Any]
    ) -> PipelineConfig:
        body = self.table(body, key, PIPELINE_KEYS)
        if "notebook" not in body:
            raise self.fail(f"{key}.notebook", "missing", 'add notebook = "path/to/notebook.ipynb"')
        text = self.text(body["notebook"], f"{key}.notebook")
        notebook = (self.path.parent / text).resolve()
        if not notebook.is_file():
            raise self.fail(
                f"{key}.notebook",
                f"{text} does not exist (relative to {self.path.parent})",
                "give the notebook's path relative to the configuration file",
            )
        experiment = (
            self.text(body["experiment"], f"{key}.experiment")
            if "experiment" in body
            else experiment_name(notebook)
        )
        parameters = self.table(body.get("parameters", {}), f"{key}.parameters")
        for pname, value in parameters.items():
            if not _literal(value):
                raise self.fail(
                    f"{key}.parameters.{pname}",
                    f"is {_kind(value)}, which is not a Python literal",
                    "use a string, number, boolean, array or inline table",
                )
        gates = []
        for i, gate in enumerate(self.texts(body.get("gates", []), f"{key}.gates")):
            try:
                gates.append(parse_gate(gate))
            except GateSyntaxError as exc:
                raise self.fail(
                    f"{key}.gates[{i}]", exc.problem, 'write e.g. "f1>=0.9" (>=, <=, >, <, ==, !=)'
                ) from None
        tests = self.texts(body.get("tests", []), f"{key}.tests")
        promote = self.promotion(body["promote"], f"{key}.promote") if "promote" in body else None
        drift_body = self.drift_table(body.get("drift", {}), f"{key}.drift")
        drift = self.drift({**drift_defaults, **drift_body}, f"{key}.drift")
        return PipelineConfig(
            name=name,
            key=key,
            notebook=notebook,
            experiment=experiment,
            parameters=dict(parameters),
            gates=tuple(gates),
            tests=tuple(tests),
            promote=promote,
            drift=drift,
            monitor=self.monitor(body.get("monitor", {}), f"{key}.monitor"),
        )

    def monitor(self, body: Any, key: str) -> Monitor:
        body = self.table(body, key, MONITOR_KEYS)
        gate = None
        if "performance" in body:
            try:
                gate = parse_gate(self.text(body["performance"], f"{key}.performance"))
            except GateSyntaxError as exc:
                raise self.fail(f"{key}.performance", exc.problem, 'write e.g. "f1>=0.9"') from None
        drop = body.get("max_drop")
        return Monitor(
            performance=gate,
            max_drop=None if drop is None else self.number(drop, f"{key}.max_drop", 0, None, 0.05),
            segments=tuple(self.texts(body.get("segments", []), f"{key}.segments")),
        )

    def promotion(self, body: Any, key: str) -> PromoteRule:
        body = self.table(body, key, PROMOTE_KEYS)
        if "metric" not in body:
            raise self.fail(f"{key}.metric", "missing", 'add metric = "f1" (the metric to rank by)')
        mode = body.get("mode", PromoteRule.mode)
        if mode not in MODES:
            raise self.fail(
                f"{key}.mode",
                f"{mode!r} is not {' or '.join(MODES)}",
                "write " + " or ".join(f'"{m}"' for m in MODES),
            )
        return PromoteRule(
            metric=self.text(body["metric"], f"{key}.metric"),
            mode=mode,
            alias=self.text(body.get("alias", PromoteRule.alias), f"{key}.alias"),
            model_name=self.text(body["model_name"], f"{key}.model_name")
            if "model_name" in body
            else "",
            build=self.flag(body.get("build", True), f"{key}.build"),
        )

    def drift_table(self, value: Any, key: str) -> dict[str, Any]:
        """A ``drift`` table; a key the rule no longer has names its replacement."""
        for old, new in RENAMED_DRIFT_KEYS.items():
            if isinstance(value, dict) and old in value:
                raise self.fail(
                    f"{key}.{old}",
                    f"is no longer a drift setting: the rule uses {new!r} now",
                    f"replace {old} with {new} (default {getattr(Drift, new)}; see {DOCS})",
                )
        return self.table(value, key, DRIFT_KEYS)

    def drift(self, body: dict[str, Any], key: str) -> Drift:
        optional = {
            name: self.text(body[name], f"{key}.{name}")
            for name in ("data_parameter", "target")
            if name in body
        }
        return Drift(
            wasserstein=self.number(
                body.get("wasserstein", Drift.wasserstein),
                f"{key}.wasserstein",
                0,
                None,
                Drift.wasserstein,
            ),
            js=self.number(body.get("js", Drift.js), f"{key}.js", 0, 1, Drift.js),
            missing=self.number(
                body.get("missing", Drift.missing), f"{key}.missing", 0, 1, Drift.missing
            ),
            pvalue=self.number(
                body.get("pvalue", Drift.pvalue), f"{key}.pvalue", 0, 1, Drift.pvalue
            ),
            allow_missing_columns=self.flag(
                body.get("allow_missing_columns", False), f"{key}.allow_missing_columns"
            ),
            **optional,
        )


def _literal(value: Any) -> bool:
    if isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_literal(v) for v in value)
    if isinstance(value, dict):
        return all(_literal(v) for v in value.values())
    return False


def _kind(value: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    kinds.update({list: "an array", dict: "a table"})
    return kinds.get(type(value), type(value).__name__)
