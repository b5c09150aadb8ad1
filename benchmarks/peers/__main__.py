"""Peers on the image pipeline: Switchyard against KServe, Ray Serve and FastAPI, side by side in one run.

Usage::

    python -m benchmarks.peers --setup                # once: the peers' environment, benchmarks/.peers-venv
    python -m benchmarks.peers --short                # c = 1, 8, 32, short windows (a few minutes)
    python -m benchmarks.peers                        # the same with 3 s warm-up and 5 s windows
    python -m benchmarks.peers --smoke                # seconds per point: checks the pieces, numbers meaningless
    python -m benchmarks.peers --short --peers fastapi --concurrency 8,32
    python -m benchmarks.peers --short --replicas 2 --peers fastapi,ray   # two serving processes each
    python -m benchmarks.peers --short --driver h2load   # the load from h2load (C) instead of Python processes

Every contender serves the same pipeline (``pipeline.py``: PNG bytes ->
decode -> resize -> normalize -> ``digits_logreg`` on one shared local
Triton -> top-3 with names) with the same op code:

* ``switchyard``: the gateway (its own process, as ``benchmarks.run`` starts
  it) on route ``digits_pipeline``, gRPC ``Gateway/Infer``;
  ``switchyard_batched``, the same gateway on ``digits_pipeline_batched``
  (gateway-side micro-batching, 2 ms, eager); and ``switchyard_stream``, the
  batched route through the bidirectional ``Gateway/InferStream`` (one
  stream per load generator process carrying all of its callers' requests;
  the Python driver only).
* ``fastapi`` (peer c): ``fastapi_app.py``, uvicorn, HTTP ``POST /classify``.
* ``ray`` (peer b): ``ray_app.py``, Ray Serve, one replica, HTTP ``POST /classify``.
* ``kserve`` (peer a): ``kserve_app.py``, a KServe transformer (its own gRPC
  client to Triton as predictor), gRPC v2 ``ModelInfer``.

The peers run from the peers' environment (``--setup`` makes it:
``benchmarks/peers/requirements.txt``, then this project without its
dependencies); the load generator, Triton and the gateway run from this one.
Each peer is started only for its own points, and must give the same top-1
label as Switchyard on the test image before it is measured. The CPU charged
to a row is Triton's plus that contender's process tree (Ray: its GCS,
raylet, controller, proxy and replica). Last, ``echo`` (``floor_proxy.py
--echo``: a Python gRPC server answering an empty message) at the highest
concurrency shows the load generator's ceiling.

``--driver h2load`` drives the unary points with the C load generator
``h2load`` (``benchmarks/h2load.py``, Debian ``nghttp2-client``) instead of
the Python one: a few tens of CPU-µs per request instead of hundreds, CPU
the servers get back on a machine they share with the load generator.

``--replicas N`` gives each contender N serving processes: the gateway
``--workers N`` (SO_REUSEPORT), uvicorn ``workers=N`` (one shared listening
socket), Ray Serve ``num_replicas=N`` (behind its one HTTP proxy) and KServe
``--workers N`` (which multiplies its REST server only; its gRPC server, the
one measured here, stays one process). With N > 1 each load generator
process opens 4 gRPC connections to a gRPC contender, so the kernel has
connections to spread (HTTP callers have a connection each). Writes ``peers-<profile>-<time>.json``,
``.md`` and ``.png`` (latency against throughput, with matplotlib) into ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import venv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_OUT,
    PROFILES,
    REPO_ROOT,
    STARTUP_TIMEOUT_S,
    ServerProcess,
    child_env,
    errors_cell,
    format_value,
    log_stderr,
    render_table,
    report_meta,
    settled,
    write_report,
)
from benchmarks.h2load import H2Load
from benchmarks.loadgen import LoadGenerator, Target, Windows, process_tree
from benchmarks.peers import PEERS_VENV, peers_python, pipeline

REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
PEERS = ("fastapi", "ray", "kserve")
"""In the order they are measured (cheapest to start first)."""
SWITCHYARD_PATHS = ("switchyard", "switchyard_batched", "switchyard_stream")
DRIVERS = ("python", "h2load")
"""The load generators: ``loadgen.LoadGenerator`` (Python processes) or ``h2load.H2Load`` (C, unary only)."""
_PEER_VERSIONS = ("fastapi", "uvicorn", "ray", "kserve", "grpcio", "protobuf", "numpy", "tritonclient")


def setup(log: Callable[[str], None]) -> None:
    """Create (or update) the peers' environment."""
    if not peers_python().exists():
        log(f"creating {PEERS_VENV}")
        venv.create(PEERS_VENV, with_pip=True)
    pip = [str(peers_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    log(f"installing {REQUIREMENTS.name} (a few minutes the first time)")
    subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    log("installing this project without its dependencies (the shared ops)")
    subprocess.run([*pip, "--no-deps", "-e", str(REPO_ROOT)], check=True)


def _peer_versions() -> dict[str, str]:
    script = (
        "import importlib.metadata as m, json, sys\n"
        "v = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: v[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(v))\n"
    )
    out = subprocess.run([str(peers_python()), "-c", script, *_PEER_VERSIONS], capture_output=True, text=True)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _peer_command(name: str, triton_url: str, replicas: int = 1) -> list[str]:
    python = str(peers_python())
    if name == "fastapi":
        return [
            *(python, "-m", "benchmarks.peers.fastapi_app", "--triton-url", triton_url, "--port", "0"),
            *("--workers", str(replicas)),
        ]
    if name == "ray":
        return [
            *(python, "-m", "benchmarks.peers.ray_app", "--triton-url", triton_url, "--port", str(_free_port())),
            *("--replicas", str(replicas)),
        ]
    if name == "kserve":
        return [
            *(python, "-m", "benchmarks.peers.kserve_app", "--model_name", pipeline.ROUTE, "--workers", str(replicas)),
            *("--http_port", str(_free_port()), "--grpc_port", str(_free_port())),
            *("--predictor_host", triton_url, "--predictor_protocol", "grpc-v2"),
            # No per-request log lines (KServe logs every gRPC call at INFO by default).
            *("--configure_logging", "False", "--enable_latency_logging", "False"),
        ]
    raise ValueError(f"unknown peer {name!r}")


def _target(name: str, address: str, png: bytes, replicas: int = 1) -> Target:
    if name in ("fastapi", "ray"):
        return Target(name, address, "http", payload=png, path="/classify", outputs=("labels",))
    if name == "echo":
        return Target(name, address, "oip", check=False)
    common = {
        "input_name": pipeline.INPUT,
        "payload": png,
        "outputs": pipeline.OUTPUTS,
        "connections": 1 if replicas == 1 or name == "switchyard_stream" else 4,
    }
    if name == "kserve":
        return Target(name, address, "oip", model=pipeline.ROUTE, **common)  # type: ignore[arg-type]
    if name == "switchyard_stream":
        return Target(name, address, "switchyard_stream", route=pipeline.BATCHED_ROUTE, **common)  # type: ignore[arg-type]
    route = pipeline.BATCHED_ROUTE if name == "switchyard_batched" else pipeline.ROUTE
    return Target(name, address, "switchyard", route=route, **common)  # type: ignore[arg-type]


def top1(target: Target, timeout_s: float = 30.0) -> str:
    """Send the target's request once (outside the load generator) and return the top-1 label it answers."""
    if target.protocol == "http":
        import urllib.request

        assert target.payload is not None
        request = urllib.request.Request(
            f"http://{target.address}{target.path}",
            data=target.payload,
            headers={"Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return str(json.loads(answer.read())["labels"][0])
    import grpc

    from switchyard.v1.tensors import to_numpy

    with grpc.insecure_channel(target.address) as channel:
        data = channel.unary_unary(target.method)(target.request_bytes(), timeout=timeout_s, wait_for_ready=True)
    label_tensor = f"{pipeline.TOP}_labels"
    if target.protocol == "switchyard":
        from switchyard.v1 import gateway_pb2

        outputs = {t.name: t for t in gateway_pb2.InferResponse.FromString(data).outputs}
        return bytes(to_numpy(outputs[label_tensor]).reshape(-1)[0]).decode()
    from tritonclient.grpc import service_pb2

    reply = service_pb2.ModelInferResponse.FromString(data)
    (output,) = [o for o in reply.outputs if o.name == label_tensor]
    return bytes(output.contents.bytes_contents[0]).decode()


def _stop_tree(server: ServerProcess, grace_s: float = 30.0) -> None:
    """Stop a server and anything it started that outlived it (Ray's agents can)."""
    pids = process_tree(server.pid)
    server.stop(grace_s)
    for pid in pids[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _started(name: str, command: Sequence[str], work_dir: Path, env: dict[str, str]) -> Iterator[ServerProcess]:
    server = ServerProcess.start(name, command, work_dir, env)
    try:
        yield server
    finally:
        _stop_tree(server)


def _servers(triton_pid: int, name: str, pid: int) -> dict[str, int]:
    """The processes whose CPU a point is charged: Triton and one contender (each with its descendants)."""
    return {"triton": triton_pid, name: pid}


def compare(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point: throughput, latency, CPU per request over all the server processes it used."""
    rows = []
    for result in results:
        cpu = result["cpu_us_per_request"]
        server = "switchyard" if result["target"] in SWITCHYARD_PATHS else result["target"]
        proxy, triton = cpu.get(server), cpu.get("triton")
        rows.append(
            {
                "load": result["concurrency"],
                "target": result["target"],
                "throughput_rps": result["throughput_rps"],
                "latency_ms": result["latency_ms"],
                "triton_cpu_us_per_request": triton,
                "server_cpu_us_per_request": proxy,
                "total_cpu_us_per_request": (proxy or 0) + (triton or 0) if proxy is not None else None,
                "loadgen_cpu_us_per_request": result["loadgen"]["cpu_us_per_request"],
                "other_cpu_pct": result["other_cpu_pct"],
                "errors": result["errors"],
                "converged": result["converged"],
                "vs_best_peer": None,
            }
        )
    for row in rows:
        peers = [r for r in rows if r["target"] in PEERS and r["load"] == row["load"]]
        if peers and row["target"] != "echo":
            best = max(peers, key=lambda r: r["throughput_rps"])
            if best["throughput_rps"]:
                row["vs_best_peer"] = round(row["throughput_rps"] / best["throughput_rps"], 3)
    return rows


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        "load",
        "path",
        "req/s",
        "× best peer",
        "p50 ms",
        "p99 ms",
        "Triton CPU-µs/req",
        "server CPU-µs/req",
        "total CPU-µs/req",
        "loadgen CPU-µs/req",
        "others' CPU %",
        "errors",
    )
    return render_table(
        header,
        sorted(rows, key=lambda r: r["load"]),
        lambda row: [
            f"c={row['load']:g}",
            settled(row["target"], row),
            format_value(row["throughput_rps"]),
            format_value(row["vs_best_peer"], ".2f"),
            f"{row['latency_ms']['p50']:.2f}",
            f"{row['latency_ms']['p99']:.2f}",
            format_value(row["triton_cpu_us_per_request"]),
            format_value(row["server_cpu_us_per_request"]),
            format_value(row["total_cpu_us_per_request"]),
            format_value(row["loadgen_cpu_us_per_request"]),
            format_value(row["other_cpu_pct"]),
            errors_cell(row),
        ],
    )


def run(
    profile_name: str,
    concurrency: Sequence[int],
    windows: Windows,
    peers: Sequence[str],
    *,
    workers: int,
    out: Path,
    log: Callable[[str], None],
    command: str | None = None,
    replicas: int = 1,
    driver: str = "python",
    echo: bool = True,
) -> dict[str, Any]:
    from switchyard.models.build import MODELS, build_repository
    from switchyard.models.datasets import digits_png, digits_split
    from switchyard.server.local_triton import LocalTriton

    if peers and not peers_python().exists():
        raise SystemExit(f"no peers' environment at {PEERS_VENV}: run python -m benchmarks.peers --setup first")
    started = datetime.datetime.now(datetime.UTC)
    split = digits_split()
    png, expected = digits_png(split.X_test[:1])[0], pipeline.LABELS[int(split.y_test[0])]
    work_dir = Path(tempfile.mkdtemp(prefix="switchyard-peers-"))
    results: list[dict[str, Any]] = []
    verified: dict[str, str] = {}
    failed = True
    try:
        repository = build_repository(work_dir / "models", [spec for spec in MODELS if spec.name == pipeline.MODEL])
        triton = LocalTriton(repository, work_dir=work_dir / "triton")
        log("starting Triton")
        triton.start_sync()
        try:
            triton.wait_ready_sync(STARTUP_TIMEOUT_S)
            routes = work_dir / "routes.toml"
            routes.write_text(pipeline.routes_toml())
            env = child_env()
            gateway_command = [
                *(sys.executable, "-m", "switchyard.server.cli", "serve", "--triton-url", triton.grpc_url),
                *("--host", "127.0.0.1", "--port", "0", "--no-metrics", "--config", str(routes), "--grace-s", "1"),
                *("--workers", str(replicas)),
            ]
            log("starting switchyard")
            generator = H2Load if driver == "h2load" else LoadGenerator
            paths = [name for name in SWITCHYARD_PATHS if driver == "python" or name != "switchyard_stream"]
            with (
                _started("switchyard", gateway_command, work_dir, env) as gateway,
                generator(workers=workers, servers=_servers(triton.pid, "switchyard", gateway.pid), log=log) as gen,
            ):
                for name in paths:
                    if name == "switchyard_stream":
                        continue  # the batched route's answer, checked by the probe below
                    verified[name] = top1(_target(name, gateway.address, png, replicas))
                    log(f"{name}: top-1 {verified[name]!r} (the image is a {expected!r})")
                reference = verified["switchyard"]
                for name in paths:
                    target = _target(name, gateway.address, png, replicas)
                    gen.probe(target)
                    for c in concurrency:
                        log(f"{name}: closed loop, concurrency {c}")
                        results.append(gen.closed_loop(target, c, windows))
                peer_env = {**env, "PYTHONPATH": str(REPO_ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
                for name in peers:
                    log(f"starting {name}")
                    with _started(name, _peer_command(name, triton.grpc_url, replicas), work_dir, peer_env) as server:
                        target = _target(name, server.address, png, replicas)
                        verified[name] = top1(target, timeout_s=STARTUP_TIMEOUT_S)
                        log(f"{name}: top-1 {verified[name]!r}")
                        if verified[name] != reference:
                            raise SystemExit(f"{name} answers {verified[name]!r}, Switchyard {reference!r}: not run")
                        gen.servers = _servers(triton.pid, name, server.pid)
                        gen.probe(target)
                        for c in concurrency:
                            log(f"{name}: closed loop, concurrency {c}")
                            results.append(gen.closed_loop(target, c, windows))
                if echo and concurrency:
                    echo_command = [sys.executable, "-m", "benchmarks.floor_proxy", "--echo"]
                    with _started("echo", echo_command, work_dir, env) as server:
                        target, c = _target("echo", server.address, png), max(concurrency)
                        gen.servers = {"echo": server.pid}
                        gen.probe(target)
                        log(f"echo (the load generator's ceiling): closed loop, concurrency {c}")
                        results.append(gen.closed_loop(target, c, windows))
        finally:
            triton.stop_sync()
        failed = False
    finally:
        if failed:
            log(f"logs of the servers are kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)

    rows = compare(results)
    command = command or "python -m benchmarks.peers" + ("" if profile_name == "full" else f" --{profile_name}")
    report: dict[str, Any] = {
        "meta": report_meta(
            started,
            profile_name,
            command,
            workers,
            peer_versions=_peer_versions() if peers else {},
            model=pipeline.MODEL,
            pipeline={"pre": pipeline.PRE_OPS, "post": pipeline.POST_OPS},
            image_label=expected,
            top1=verified,
            windows=asdict(windows),
            replicas=replicas,
            driver=driver,
        ),
        "results": results,
        "comparison": rows,
    }
    per = f", {replicas} serving processes each" if replicas > 1 else ""
    per += ", load from h2load" if driver == "h2load" else ""
    title = (
        f"image pipeline ({pipeline.MODEL}) on {os.cpu_count()} CPUs{per}, {profile_name} profile, {started:%Y-%m-%d}"
    )
    write_report(out, f"peers-{profile_name}", report, title, markdown_table(rows), log)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--setup", action="store_true", help=f"create or update the peers' environment ({PEERS_VENV})")
    size.add_argument("--short", action="store_true", help="short windows")
    size.add_argument("--smoke", action="store_true", help="a few seconds per point: checks the pieces, not speed")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)} (or none)")
    parser.add_argument("--concurrency", help="comma-separated closed-loop concurrencies (default: the profile's)")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes (default 2)")
    parser.add_argument(
        "--replicas", type=int, default=1, help="serving processes of each contender (gateway --workers; default 1)"
    )
    parser.add_argument(
        "--driver", choices=DRIVERS, default="python", help="load generator: Python processes or h2load (unary only)"
    )
    parser.add_argument("--no-echo", action="store_true", help="skip the echo point (the load generator's ceiling)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.setup:
        setup(log_stderr)
        return 0
    profile = PROFILES["short" if args.short else "smoke" if args.smoke else "full"]
    if args.concurrency:
        profile = replace(profile, concurrency=tuple(int(v) for v in args.concurrency.split(",")))
    peers = [name for name in args.peers.split(",") if name and name != "none"]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {', '.join(PEERS)}")
    command = " ".join(["python -m benchmarks.peers", *(sys.argv[1:] if argv is None else argv)])
    run(
        profile.name,
        profile.concurrency,
        profile.windows,
        peers,
        workers=args.workers,
        out=args.out,
        log=log_stderr,
        command=command,
        replicas=args.replicas,
        driver=args.driver,
        echo=not args.no_echo,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
