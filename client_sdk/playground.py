"""The playground: a small web UI (Streamlit) to try a gateway's routes and watch its jobs.

``switchyard playground --target host:port`` starts it (the ``playground``
extra). Pick a route, see its inputs and outputs, send typed numbers or an
uploaded image, and see the outputs, the latency, the models and versions
that answered and whether the answer came from the cache; a progressive
route shows each stage as it arrives. The Jobs tab submits a request as a
job, lists the caller's jobs and waits for one.

It is a client of the gateway like any other (the SDK), and holds no state
of its own beyond the browser session.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import streamlit as st

from switchyard.client import Client, SwitchyardError
from switchyard.client.cli import PLAYGROUND_TARGET_ENV
from switchyard.client.results import InferResult, RouteInfo, TensorSpec

_NUMPY = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "INT8": np.int8, "INT16": np.int16,
          "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
          "UINT64": np.uint64, "BOOL": np.bool_}  # fmt: skip


def parse_numbers(text: str, spec: TensorSpec) -> npt.NDArray[Any]:
    """Typed numbers (commas, spaces or new lines; one line a row) as the input ``spec`` takes them."""
    rows = [line.replace(",", " ").split() for line in text.strip().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{spec.name}: type some numbers")
    dtype = _NUMPY.get(spec.datatype)
    if dtype is None:
        raise ValueError(f"{spec.name}: {spec.datatype} cannot be typed; upload a file")
    array = np.array([[float(x) for x in row] for row in rows]).astype(dtype)
    inner = spec.shape[1:]
    if inner and all(d > 0 for d in inner):
        array = array.reshape((array.shape[0], *inner))
    return array


def _client(target: str) -> Client:
    key = f"client:{target}"
    if key not in st.session_state:
        st.session_state[key] = Client(target, default_timeout=30.0)
    client: Client = st.session_state[key]
    return client


def _inputs(route: RouteInfo) -> dict[str, npt.NDArray[Any]] | None:
    values: dict[str, npt.NDArray[Any]] = {}
    for spec in route.inputs:
        shape = "×".join("N" if d < 0 else str(d) for d in spec.shape)
        if spec.datatype == "BYTES":
            upload = st.file_uploader(f"{spec.name} ({spec.datatype} [{shape}]): a file", key=f"file:{spec.name}")
            if upload is None:
                return None
            values[spec.name] = np.array([upload.getvalue()], dtype=object)
            continue
        text = st.text_area(f"{spec.name} ({spec.datatype} [{shape}]): numbers, one line a row", key=f"in:{spec.name}")
        if not text.strip():
            return None
        try:
            values[spec.name] = parse_numbers(text, spec)
        except ValueError as exc:
            st.error(str(exc))
            return None
    return values


def _show(result: InferResult, elapsed_s: float) -> None:
    st.metric("latency", f"{elapsed_s * 1e3:.1f} ms")
    models = ", ".join(f"{m.name} v{m.version}" if m.version else m.name for m in result.models)
    st.markdown(f"models: `{models}` · cached: **{result.cached}** · request id: `{result.request_id}`")
    for name, array in result.outputs.items():
        st.markdown(f"**{name}** `{array.dtype}` {list(array.shape)}")
        st.dataframe(np.atleast_2d(array) if array.dtype != object else array.astype(str))
    for branch, error in result.missing.items():
        st.warning(f"{branch}: {error}")


def _infer_tab(client: Client, route: RouteInfo) -> None:
    st.caption(route.description)
    st.markdown(
        "inputs: " + ", ".join(f"`{s.name}` {s.datatype} {list(s.shape)}" for s in route.inputs)
        + " · outputs: " + ", ".join(f"`{s.name}` {s.datatype} {list(s.shape)}" for s in route.outputs)
    )  # fmt: skip
    values = _inputs(route)
    if not st.button("Send", key="send", disabled=values is None) or values is None:
        return
    started = time.monotonic()
    try:
        if route.kind == "progressive":
            for stage in client.infer_progressive(route.name, values):
                st.subheader(f"stage {stage.stage}" + (" (final)" if stage.final else ""))
                if stage.error is not None:
                    st.warning(str(stage.error))
                elif stage.result is not None:
                    _show(stage.result, time.monotonic() - started)
            return
        result = client.infer(route.name, values)
    except SwitchyardError as exc:
        st.error(f"{type(exc).__name__}: {exc}")
        return
    _show(result, time.monotonic() - started)


def _jobs_tab(client: Client, route: RouteInfo) -> None:
    values = _inputs_for_job(route)
    if st.button("Submit as a job", key="submit", disabled=values is None) and values is not None:
        st.session_state["job"] = client.submit_job(route.name, values)
    try:
        page = client.list_jobs(page_size=20)
    except SwitchyardError as exc:
        st.error(f"{type(exc).__name__}: {exc}")
        return
    st.dataframe([{"job": j.job_id, "route": j.route, "state": j.state, "attempts": j.attempts} for j in page.jobs])
    watched = st.session_state.get("job")
    if watched:
        job = client.wait(watched, timeout=60)
        st.markdown(f"job `{job.job_id}`: **{job.state}**")
        if job.result is not None:
            _show(job.result, 0.0)


def _inputs_for_job(route: RouteInfo) -> dict[str, npt.NDArray[Any]] | None:
    values: dict[str, npt.NDArray[Any]] = {}
    for spec in route.inputs:
        text = st.session_state.get(f"in:{spec.name}", "")
        if spec.datatype == "BYTES" or not text.strip():
            return None
        try:
            values[spec.name] = parse_numbers(text, spec)
        except ValueError:
            return None
    return values


def main() -> None:
    st.set_page_config(page_title="Switchyard playground", layout="wide")
    st.title("Switchyard playground")
    target = st.sidebar.text_input("gateway", os.environ.get(PLAYGROUND_TARGET_ENV, "localhost:8500"), key="target")
    client = _client(target)
    try:
        routes = {r.name: r for r in client.routes()}
    except SwitchyardError as exc:
        st.error(f"cannot list the routes of {target}: {exc}")
        return
    name = st.sidebar.selectbox("route", sorted(routes), key="route")
    if name is None:
        return
    route = routes[name]
    infer, jobs = st.tabs(["Infer", "Jobs"])
    with infer:
        _infer_tab(client, route)
    with jobs:
        _jobs_tab(client, route)


if __name__ == "__main__":
    main()
