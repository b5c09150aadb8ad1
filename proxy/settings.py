"""Typed settings of the gateway process.

Every knob (ports, limits, timeouts, grace periods) lives here with its
default and meaning; each can be set from the environment with the
``SWITCHYARD_`` prefix (``SWITCHYARD_PORT=9000``) or from the command line.
Route definitions are not settings: they live in the routes file
(``proxy.routes.schema``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchyard.proxy.backend.endpoints import parse_endpoints

DEFAULT_PORT = 8500
DEFAULT_METRICS_PORT = 8502


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/switchyard`` (``~/.local/share/switchyard``): where state that must survive restarts lives."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "switchyard"


class GatewaySettings(BaseSettings):
    """Settings of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="forbid")

    host: str = Field("0.0.0.0", description="Address the gRPC port binds to.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus endpoint (loopback by default).")
    metrics_port: int | None = Field(
        DEFAULT_METRICS_PORT, ge=0, le=65535, description="Prometheus port; unset disables the endpoint."
    )
    triton_url: str = Field(
        "127.0.0.1:8001",
        description="Triton's gRPC address (host:port); several, comma-separated, make a pool with failover "
        "(a:8001,b:8001); dns:///name:port resolves name to one endpoint per address, again every "
        "triton_dns_refresh_s (a Kubernetes headless Service).",
    )
    triton_dns_refresh_s: float = Field(
        5.0, gt=0, description="How often a dns:/// triton_url is resolved again (endpoints join and leave)."
    )
    routes_file: Path | None = Field(None, description="Routes file (TOML); unset uses the bundled default routes.")
    triton_shared_memory: Literal["off", "system"] = Field(
        "off",
        description="'system': large input tensors reach Triton through POSIX shared memory instead of the gRPC "
        "message (Triton must run on this host), and, when the ops run on a GPU, pre-processed inputs through "
        "CUDA shared memory without a copy to the host; 'off': every tensor travels in the message.",
    )
    triton_shm_threshold_bytes: int = Field(
        64 * 1024, ge=1, description="Inputs of at least this many bytes use shared memory (when it is on)."
    )
    triton_shm_slot_bytes: int = Field(
        2 * 1024 * 1024, ge=1, description="Size of one shared-memory slot; a larger input goes in the message."
    )
    triton_shm_slots: int = Field(
        64, ge=1, description="Shared-memory slots (inputs in Triton at once); with none free, inputs go as bytes."
    )
    triton_shm_quarantine_s: float = Field(
        300.0,
        gt=0,
        description="How long a slot stays out of use after a call that ended without Triton's answer "
        "(cancelled, timed out): Triton may still read it meanwhile.",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest gRPC message accepted or sent; larger ones fail with RESOURCE_EXHAUSTED in transport.",
    )
    default_timeout_s: float = Field(
        30.0, gt=0, description="Deadline applied to calls that arrive without one, in seconds."
    )
    max_concurrent_rpcs: int | None = Field(
        None, ge=1, description="Calls in flight per process before new ones get RESOURCE_EXHAUSTED; unset: no bound."
    )
    stream_max_inflight: int = Field(
        256, ge=1, description="Requests of one InferStream processed at once; the stream reads no further meanwhile."
    )
    max_inflight: int = Field(
        512,
        ge=1,
        description=(
            "Inference requests (Infer, InferProgressive, each request of an InferStream) in flight per process; "
            "past it a request is shed with RESOURCE_EXHAUSTED at once, before validation or any backend call. "
            "A route's own max_inflight (routes file) bounds that route further."
        ),
    )
    health_interval_s: float = Field(1.0, gt=0, description="How often model readiness is polled for health.")
    backend_ready_timeout_s: float = Field(
        120.0, gt=0, description="How long start-up waits for the route's models to be ready in Triton."
    )
    grace_s: float = Field(10.0, ge=0, description="On SIGTERM, how long in-flight calls may finish before abort.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Gateway processes sharing the gRPC port (SO_REUSEPORT) under `switchyard serve`; "
        "each has its own event loop, backend channel and micro-batcher.",
    )
    worker_max_rss_mb: int = Field(
        1024,
        ge=0,
        description="Under `switchyard serve`: a gateway worker whose resident memory passes this many MiB is "
        "replaced by a fresh one with no call failed (the new one serves before the old one drains). It bounds "
        "what grpcio leaks under cancelled and expired calls (grpc/grpc#43360); 0: never replaced, and "
        "with workers = 1 the gateway then runs in the serve process itself.",
    )
    cache_backend: Literal["memory", "redis"] = Field(
        "memory",
        description="Where cached routes keep answers: this process's memory, or Redis shared by every process.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for cache_backend = redis.")
    cache_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Memory bound of the in-process prediction cache."
    )
    cache_op_timeout_s: float = Field(
        0.05, gt=0, description="Longest a cache lookup or store may take before it counts as a miss."
    )
    data_cache_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Memory bound of the in-process cache of pre-processed inputs."
    )
    data_cache_ttl_s: float = Field(300.0, gt=0, description="How long pre-processed inputs stay cached.")
    # Transport security and API keys (checked and applied by proxy.grpc.security).
    tls_cert_file: Path | None = Field(
        None, description="Server certificate chain (PEM); with tls_key_file the gRPC port serves TLS only."
    )
    tls_key_file: Path | None = Field(None, description="Private key of tls_cert_file (PEM, unencrypted).")
    tls_client_ca_file: Path | None = Field(
        None, description="CA certificates (PEM); set, every client must present a certificate they signed (mTLS)."
    )
    api_keys_file: Path | None = Field(
        None,
        description="API keys and the routes each may call (TOML, format in proxy/grpc/security); with it or "
        "SWITCHYARD_API_KEYS (name:key,...) every call outside auth_public_services needs a key.",
    )
    auth_public_services: tuple[str, ...] = Field(
        ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"),
        description="gRPC services callable without an API key (health for load balancers, reflection for grpcurl).",
    )

    # Asynchronous jobs (proxy.jobs): the durable queue and the workers of this process.
    jobs_store: Literal["auto", "sqlite", "redis", "off"] = Field(
        "auto",
        description="Where jobs are kept: 'sqlite' (one embedded file, jobs_db), 'redis' (jobs_redis_url, shared by "
        "every process), 'off' (no Jobs service); 'auto' is redis when jobs_redis_url is set, else sqlite.",
    )
    data_dir: Path = Field(
        default_factory=lambda: default_data_dir(), description="Folder of the embedded job store's default file."
    )
    jobs_db: Path | None = Field(None, description="SQLite file of the embedded job store; unset: data_dir/jobs.db.")
    jobs_redis_url: str | None = Field(None, description="Redis of the job store (redis://host:6379/0).")
    jobs_concurrency: int = Field(4, ge=1, description="Jobs one process runs at once.")
    jobs_max_queued: int = Field(
        10_000, ge=1, description="Queued jobs in the store past which SubmitJob answers RESOURCE_EXHAUSTED."
    )
    jobs_visibility_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Lease of a running job: renewed while its worker lives; a job whose lease ran out (its "
        "worker died) is run again by another worker.",
    )
    jobs_max_attempts: int = Field(3, ge=1, description="Default attempts per job before it is FAILED.")
    jobs_max_attempts_limit: int = Field(10, ge=1, description="Largest max_attempts a client may ask for.")
    jobs_result_ttl_s: float = Field(86_400.0, gt=0, description="Default time a job's result is kept after it ends.")
    jobs_max_result_ttl_s: float = Field(7 * 86_400.0, gt=0, description="Largest result TTL a client may ask for.")
    jobs_timeout_s: float = Field(300.0, gt=0, description="Deadline of one attempt of a job (a route's may be less).")
    jobs_poll_interval_s: float = Field(
        0.2, gt=0, description="How often idle workers look for jobs submitted to other processes."
    )
    jobs_idle_poll_s: float = Field(
        1.0,
        gt=0,
        description="Longest wait between polls while the queue stays empty (the wait doubles from "
        "jobs_poll_interval_s up to this); a job submitted to this process wakes its workers at once.",
    )
    jobs_store_timeout_s: float = Field(
        2.0, gt=0, description="Longest one job store operation may take before it fails with UNAVAILABLE."
    )

    @field_validator("triton_url")
    @classmethod
    def _endpoints(cls, value: str) -> str:
        parse_endpoints(value)  # raises ValueError naming the item that is wrong
        return value

    @model_validator(mode="after")
    def _shared_memory(self) -> GatewaySettings:
        if self.triton_shm_slot_bytes < self.triton_shm_threshold_bytes:
            raise ValueError("triton_shm_slot_bytes must be >= triton_shm_threshold_bytes")
        return self

    @model_validator(mode="after")
    def _jobs_store(self) -> GatewaySettings:
        if self.jobs_store == "redis" and not self.jobs_redis_url:
            raise ValueError("jobs_store = 'redis' needs jobs_redis_url (redis://host:port/db)")
        if self.jobs_result_ttl_s > self.jobs_max_result_ttl_s:
            raise ValueError("jobs_result_ttl_s must be <= jobs_max_result_ttl_s")
        if self.jobs_max_attempts > self.jobs_max_attempts_limit:
            raise ValueError("jobs_max_attempts must be <= jobs_max_attempts_limit")
        return self

    @property
    def jobs_backend(self) -> Literal["sqlite", "redis", "off"]:
        """The job store in use, with 'auto' resolved."""
        if self.jobs_store == "auto":
            return "redis" if self.jobs_redis_url else "sqlite"
        return self.jobs_store

    @property
    def jobs_db_path(self) -> Path:
        """The embedded job store's file."""
        return self.jobs_db if self.jobs_db is not None else self.data_dir / "jobs.db"
