"""The nbmlops Bento service against `mlflow models serve` on the same model version.

Both serve the same registry version of the breast-cancer random forest on loopback;
clients (asyncio + httpx, one keep-alive connection each) send the same one-record request
for a fixed time; rounds alternate the servers. Measured, medians over the rounds:

- 16 clients: throughput and p99, nbmlops against mlflow (target >= 3x, 0 errors);
- 1 client: p50, nbmlops against mlflow (target: no worse);
- monitoring on against off (NBMLOPS_MONITOR=0; target at most 15% slower);
- a bearer token required against none (16 clients; target at most 5% lower, p99 too);
- single-record p50 (1 client) before and after one 10,000-record request (target <= 1.5x).

    python bench/bench_serve.py [--rounds 5] [--seconds 10] [--clients 16]
                                [--model NAME/VERSION --tracking-uri URI]

Without --model it trains the example notebook once in a temporary project, promotes it
and builds the Bento there (BENTOML_HOME in the same temporary folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from _common import run

from nbmlops.serve.server import wait_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Target:
    label: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    rounds: list[dict[str, float]] = field(default_factory=list)
    single: list[dict[str, float]] = field(default_factory=list)


def prepare(work: Path, env: dict[str, str]) -> str:
    """Train, promote and build the example; returns the model reference NAME/VERSION."""
    shutil.copy(ROOT / "notebooks" / "breast_cancer.ipynb", work / "breast_cancer.ipynb")
    print("training notebooks/breast_cancer.ipynb ...", flush=True)
    run([str(BIN / "nbmlops"), "run", "breast_cancer.ipynb", "-q"], work, env)
    run(
        [str(BIN / "nbmlops"), "promote", "--experiment", "breast_cancer", "--metric", "f1"],
        work,
        env,
    )
    return "breast_cancer/1"


async def load(
    url: str, body: bytes, clients: int, seconds: float, extra: dict[str, str] | None = None
) -> dict[str, float]:
    """``clients`` concurrent request loops for ``seconds``: throughput and latencies."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json", **(extra or {})}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                start = time.perf_counter()
                resp = await client.post(url, content=body, headers=headers)
                if resp.status_code != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    n = len(latencies)
    return {
        "rps": n / elapsed,
        "p50": latencies[n // 2] * 1000 if n else float("nan"),
        "p99": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "errors": float(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--model", help="NAME/VERSION of a promoted model (default: train one)")
    parser.add_argument("--tracking-uri", help="With --model: its store")
    parser.add_argument(
        "--mlflow-workers",
        type=int,
        default=1,
        help="uvicorn workers of mlflow models serve (its default: 1)",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder")
    args = parser.parse_args()

    from nbmlops.serve import server

    work = Path(tempfile.mkdtemp(prefix="nbmlops-bench-serve-"))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{work / 'mlflow.db'}",
        "BENTOML_HOME": os.environ.get("BENTOML_HOME") or str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    if args.model and not (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise SystemExit("--model needs --tracking-uri (or MLFLOW_TRACKING_URI)")
    model = args.model or prepare(work, env)
    name, version = model.rsplit("/", 1)
    out = run([str(BIN / "nbmlops"), "build", model], work, env)
    tag = out.strip().splitlines()[-1].split()[-1]
    print(
        f"model {model}, Bento {tag}; {args.clients} clients, {args.rounds} rounds of "
        f"{args.seconds:g} s each, on {os.cpu_count()} cores",
        flush=True,
    )

    # One training row as the request, in each server's own format.
    from nbmlops.promote.registry import download

    example = json.loads(
        Path(
            download(
                f"models:/{model}/input_example.json",
                str(work / "example"),
                env["MLFLOW_TRACKING_URI"],
            )
        ).read_text()
    )
    row = dict(zip(example["columns"], example["data"][0], strict=True))

    token = os.environ["NBMLOPS_BENCH_TOKEN"] = secrets.token_urlsafe(32)
    procs: list[subprocess.Popen[bytes]] = []
    targets: list[Target] = []
    one = json.dumps({"records": [row]}).encode()
    try:
        services = (
            ("nbmlops", True, None),
            ("nbmlops, monitoring off", False, None),
            ("nbmlops, token required", True, "NBMLOPS_BENCH_TOKEN"),
        )
        for i, (label, monitoring, token_env) in enumerate(services):
            port = server.free_port()
            log = work / f"nbmlops-{i}.log"
            senv = {**server.server_env(work / f"monitoring-{i}", monitoring, token_env), **env}
            proc = server.start(server.serve_command(tag, port), senv, log)
            procs.append(proc)
            wait_ready(f"http://127.0.0.1:{port}", proc, log, timeout=180)
            auth = {"Authorization": f"Bearer {token}"} if token_env else {}
            targets.append(Target(label, f"http://127.0.0.1:{port}/predict", one, auth))
        port = server.free_port()
        log = work / "mlflow.log"
        proc = server.start(
            [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{name}/{version}",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "--workers",
                str(args.mlflow_workers),
            ],
            env,
            log,
            cwd=work,
        )
        procs.append(proc)
        wait_ready(f"http://127.0.0.1:{port}", proc, log, timeout=180, path="/ping")
        targets.append(
            Target(
                "mlflow models serve"
                + (f" ({args.mlflow_workers} workers)" if args.mlflow_workers != 1 else ""),
                f"http://127.0.0.1:{port}/invocations",
                json.dumps({"dataframe_records": [row]}).encode(),
            )
        )
        nb, ml = targets[0], targets[-1]

        answers = {}
        for t in targets:
            answers[t.label] = httpx.post(
                t.url,
                content=t.body,
                headers={"Content-Type": "application/json", **t.headers},
                timeout=60,
            ).json()
            asyncio.run(load(t.url, t.body, args.clients, 2.0, t.headers))  # warm-up
        print("one request each:", {k: v.get("predictions") for k, v in answers.items()})

        big = json.dumps({"records": [row] * 10_000}).encode()
        before: list[float] = []
        after: list[float] = []
        for r in range(args.rounds):
            order = targets[r % len(targets) :] + targets[: r % len(targets)]
            for t in order:
                result = asyncio.run(load(t.url, t.body, args.clients, args.seconds, t.headers))
                t.rounds.append(result)
                report(f"round {r + 1}  {args.clients} clients", t.label, result)
            for t in (nb, ml) if r % 2 == 0 else (ml, nb):
                result = asyncio.run(load(t.url, t.body, 1, args.seconds / 2))
                t.single.append(result)
                report(f"round {r + 1}  1 client  ", t.label, result)
            first = asyncio.run(load(nb.url, nb.body, 1, args.seconds / 2))
            took = time.perf_counter()
            status = httpx.post(nb.url, content=big, headers=JSON, timeout=120).status_code
            took = time.perf_counter() - took
            then = asyncio.run(load(nb.url, nb.body, 1, args.seconds / 2))
            before.append(first["p50"])
            after.append(then["p50"])
            print(
                f"  round {r + 1}  1 client, p50 {first['p50']:.2f} ms; one 10,000-record "
                f"request: {status} in {took * 1000:.0f} ms; then p50 {then['p50']:.2f} ms",
                flush=True,
            )
        metrics = httpx.get(nb.url.replace("/predict", "/metrics"), timeout=30).text
    finally:
        for proc in procs:
            server.stop(proc)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    med = {
        t.label: {k: statistics.median(x[k] for x in t.rounds) for k in ("rps", "p50", "p99")}
        | {"errors": sum(x["errors"] for x in t.rounds)}
        for t in targets
    }
    print(f"\nmedians, {args.clients} clients:")
    for label, m in med.items():
        print(
            f"  {label:<26} {m['rps']:7.1f} req/s  p50 {m['p50']:7.1f} ms  p99 {m['p99']:7.1f} ms"
            f"  errors {m['errors']:.0f}"
        )
    single = {t.label: statistics.median(x["p50"] for x in t.single) for t in (nb, ml)}
    print("medians, 1 client:")
    for label, p50 in single.items():
        print(f"  {label:<26} p50 {p50:7.2f} ms")
    on, off, auth, mlm = (med[t.label] for t in targets)
    print(f"throughput nbmlops / mlflow models serve: {on['rps'] / mlm['rps']:.2f}x (target >= 3)")
    print(f"p99 nbmlops / mlflow models serve:        {on['p99'] / mlm['p99']:.2f} (target <= 1)")
    print(
        f"1-client p50 nbmlops / mlflow:            {single[nb.label] / single[ml.label]:.2f} "
        "(target <= 1)"
    )
    print(
        f"monitoring on / off throughput:           {on['rps'] / off['rps']:.3f} "
        f"({(1 - on['rps'] / off['rps']) * 100:.1f}% lower; target at most 15%)"
    )
    print(
        f"token on / off throughput:                {auth['rps'] / on['rps']:.3f} "
        f"({(1 - auth['rps'] / on['rps']) * 100:.1f}% lower; target at most 5%); "
        f"p99 {auth['p99'] / on['p99']:.3f}"
    )
    print(f"mean records per predict call (nbmlops):  {mean_batch(metrics):.1f}")
    b, a = statistics.median(before), statistics.median(after)
    print(
        f"1-client p50 after / before a 10,000-record request: {a:.2f} / {b:.2f} ms = "
        f"{a / b:.2f} (target <= 1.5)"
    )


def mean_batch(metrics: str) -> float:
    """The mean of the service's ``nbmlops_batch_size`` histogram."""
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("nbmlops_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("nbmlops_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total / count if count else float("nan")


def report(what: str, label: str, result: dict[str, float]) -> None:
    print(
        f"  {what}  {label:<26} {result['rps']:7.1f} req/s  "
        f"p50 {result['p50']:7.2f} ms  p99 {result['p99']:7.1f} ms"
        + (f"  errors {result['errors']:.0f}" if result["errors"] else ""),
        flush=True,
    )


JSON = {"Content-Type": "application/json"}


if __name__ == "__main__":
    main()
