"""The examples in README.md and docs/ cannot rot: each one marked runnable is run against a live gateway.

A fenced ``bash`` or ``python`` block right after ``<!-- runnable ... -->`` is
an example to run. The marker may carry ``expect="text"`` (each must appear in
the output), ``gateway-env="NAME=value"`` (the example needs a gateway
started with that environment, as the text before it says), ``id="name"``
and ``with="name"`` (a snippet that continues the example of that id on the
same page: their code runs as one). Examples run in a
scratch folder that looks like a checkout (every top-level entry linked,
``.venv`` the environment running the tests), with that environment's
``bin`` first on ``PATH``; ``localhost:8500`` becomes the live gateway's
address and ``localhost:8001`` the live Triton's.

The README's first screen (everything before ``<!-- first screen ends -->``)
is also run in order as a newcomer would: the set-up command without its
installation (and without ``make test``, which is this suite), that is a
real ``switchyard serve``, then each example against it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchyard.models import BUNDLED_ROUTES
from switchyard.models.build import source_fingerprint
from switchyard.proxy.routes.schema import load_routes
from switchyard.proxy.settings import GatewaySettings
from switchyard.server.local_triton import LocalTriton
from tests.integration.gateway_thread import GatewayThread
from tests.integration.serve_process import Serve

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TOPIC_PAGES = [
    "routes-and-patterns.md",
    "operations-and-settings.md",
    "security.md",
    "jobs-and-batch.md",
    "benchmarks.md",
    "architecture.md",
]
FIRST_SCREEN_END = "<!-- first screen ends -->"
MARKER = re.compile(r"<!-- runnable(?P<attrs>[^>]*?)-->\n```(?P<lang>bash|python)\n(?P<code>.*?)\n```", re.S)
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<code>.*?)\n```", re.S | re.M)
ATTR = re.compile(r'([\w-]+)="([^"]*)"')
GATEWAY = "localhost:8500"
TRITON = "localhost:8001"
EXAMPLE_TIMEOUT_S = 180


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    lang: str
    code: str
    expects: tuple[str, ...]
    gateway_env: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def runnable_examples(path: Path) -> list[Example]:
    text = path.read_text()
    found = []
    named: dict[str, str] = {}
    for match in MARKER.finditer(text):
        attrs = ATTR.findall(match.group("attrs"))
        code = match.group("code")
        for key, value in attrs:
            if key == "with":
                assert value in named, f"{path.name}: no runnable example with id {value!r} before this one"
                code = named[value] + "\n" + code
            elif key == "id":
                named[value] = code
        found.append(
            Example(
                page=str(path.relative_to(ROOT)),
                line=text.count("\n", 0, match.start("code")) + 1,
                lang=match.group("lang"),
                code=code,
                expects=tuple(value for key, value in attrs if key == "expect"),
                gateway_env=next((value for key, value in attrs if key == "gateway-env"), None),
            )
        )
    return found


def all_examples() -> list[Example]:
    return [e for path in [README, *(ROOT / "docs" / name for name in TOPIC_PAGES)] for e in runnable_examples(path)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that looks like a checkout: examples may write files there without touching the real one."""
    folder = tmp_path_factory.mktemp("checkout")
    for entry in ROOT.iterdir():
        if entry.name not in (".git", ".venv"):
            (folder / entry.name).symlink_to(entry)
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def example_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SWITCHYARD_")}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_example(example: Example, cwd: Path, gateway: str, triton: str) -> subprocess.CompletedProcess[str]:
    code = example.code.replace(GATEWAY, gateway).replace(TRITON, triton)
    if example.lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        command = [str(Path(sys.prefix) / "bin" / "python"), "-c", code]
    done = subprocess.run(
        command, cwd=cwd, env=example_env(), capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT_S
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{example.id} exited {done.returncode}:\n{output}"
    missing = [text for text in example.expects if text not in output]
    assert not missing, f"{example.id}: {missing} not in its output:\n{output}"
    return done


@pytest.fixture(scope="module")
def gateways(local_triton: LocalTriton) -> Iterator[dict[str, GatewayThread]]:
    """Gateways started with the environment an example names (``gateway-env``), one per environment."""
    started: dict[str, GatewayThread] = {}
    yield started
    for gateway in started.values():
        gateway.stop()


def gateway_for(
    example: Example, default: GatewayThread, started: dict[str, GatewayThread], triton: LocalTriton
) -> GatewayThread:
    if example.gateway_env is None:
        return default
    if example.gateway_env not in started:
        with pytest.MonkeyPatch.context() as env:
            for item in shlex.split(example.gateway_env):
                name, _, value = item.partition("=")
                env.setenv(name, value)
            settings = GatewaySettings(triton_url=triton.grpc_url, host="127.0.0.1", port=0, metrics_port=0)
            started[example.gateway_env] = GatewayThread(settings, load_routes(BUNDLED_ROUTES))
    return started[example.gateway_env]


def test_there_are_examples_and_every_topic_page_starts_with_one() -> None:
    for name in TOPIC_PAGES:
        text = (ROOT / "docs" / name).read_text()
        first_fence = FENCE.search(text)
        assert first_fence, f"docs/{name} has no example"
        assert "<!-- runnable" in text[: first_fence.start()].rsplit("\n\n", 1)[-1], (
            f"docs/{name}: the first example is not marked runnable"
        )
    assert len(all_examples()) >= 10


def test_every_shell_and_python_block_is_run_or_says_why_not() -> None:
    """A block is marked runnable, or ``<!-- not run: reason -->``; the README's set-up block is run below."""
    unmarked = []
    for path in [README, *(ROOT / "docs" / name for name in TOPIC_PAGES)]:
        text = path.read_text()
        for index, match in enumerate(FENCE.finditer(text)):
            if match.group("lang") not in ("bash", "sh", "python") or (path == README and index == 0):
                continue
            before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
            if not (before.startswith("<!-- runnable") or before.startswith("<!-- not run: ")):
                unmarked.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert unmarked == []


@pytest.mark.parametrize("example", all_examples(), ids=lambda e: e.id)
def test_example_runs(
    example: Example,
    scratch: Path,
    gateway_thread: GatewayThread,
    gateways: dict[str, GatewayThread],
    local_triton: LocalTriton,
) -> None:
    gateway = gateway_for(example, gateway_thread, gateways, local_triton)
    run_example(example, scratch, gateway.target, local_triton.grpc_url)


def first_screen() -> list[tuple[str, str]]:
    """(language, code) of every fenced block on the README's first screen, in order."""
    text = README.read_text()
    assert FIRST_SCREEN_END in text, f"README.md has no {FIRST_SCREEN_END!r} marker"
    return [(m.group("lang"), m.group("code")) for m in FENCE.finditer(text.split(FIRST_SCREEN_END)[0])]


def set_up_commands(code: str) -> list[str]:
    """The commands of the README's set-up block, installation and the test suite aside."""
    commands = []
    for line in code.splitlines():
        for part in (p.strip() for p in line.split("&&")):
            if part.startswith("python3 -m venv") or re.search(r"(^|/)pip install ", part) or part == "make test":
                continue
            commands.append(part)
    return commands


def test_first_screen_runs_in_order(
    model_repository: Path, scratch: Path, local_triton: LocalTriton, tmp_path: Path
) -> None:
    blocks = first_screen()
    assert blocks[0][0] == "bash"
    commands = set_up_commands(blocks[0][1])
    assert commands == [".venv/bin/switchyard serve"], commands
    runnable = {e.code: e for e in runnable_examples(README)}
    examples = [code for lang, code in blocks[1:] if lang in ("bash", "python", "sh")]
    assert all(code in runnable for code in examples), "a first-screen example is not marked runnable"
    assert len(examples) >= 2

    # The bundled models as `serve` would build them into the user cache (built once per session here).
    cache = tmp_path / "cache"
    repository = cache / "switchyard" / "model-repository"
    shutil.copytree(model_repository, repository)
    (repository / ".build-fingerprint").write_text(source_fingerprint() + "\n")
    # Ports 8500 and 8502 may be taken on a shared machine: the same command on free ports.
    env = example_env(XDG_CACHE_HOME=str(cache), SWITCHYARD_PORT=str(free_port()), SWITCHYARD_METRICS_PORT="0")
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {commands[0]}"],
        cwd=scratch,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    serve = Serve(proc)
    try:
        serve.wait_serving(180)
        target = f"127.0.0.1:{serve.port}"
        for code in examples:
            run_example(runnable[code], scratch, target, local_triton.grpc_url)
        assert serve.stop() == 0, serve.log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        serve.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
