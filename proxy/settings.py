"""Typed settings of the gateway process.

Every knob (ports, limits, timeouts, grace periods) lives here with its
default and meaning; each can be set from the environment with the
``SWITCHYARD_`` prefix (``SWITCHYARD_PORT=9000``) or from the command line.
Route definitions are not settings: they live in the routes file
(``proxy.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8500
DEFAULT_METRICS_PORT = 8502


class GatewaySettings(BaseSettings):
    """Settings of one gateway process."""

    model_config = SettingsConfigDict(env_prefix="SWITCHYARD_", extra="forbid")

    host: str = Field("0.0.0.0", description="Address the gRPC port binds to.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus endpoint (loopback by default).")
    metrics_port: int | None = Field(
        DEFAULT_METRICS_PORT, ge=0, le=65535, description="Prometheus port; unset disables the endpoint."
    )
    triton_url: str = Field("127.0.0.1:8001", description="Triton's gRPC address (host:port).")
    routes_file: Path | None = Field(None, description="Routes file (TOML); unset uses the bundled default routes.")
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
    # Transport security and API keys (checked and applied by proxy.security).
    tls_cert_file: Path | None = Field(
        None, description="Server certificate chain (PEM); with tls_key_file the gRPC port serves TLS only."
    )
    tls_key_file: Path | None = Field(None, description="Private key of tls_cert_file (PEM, unencrypted).")
    tls_client_ca_file: Path | None = Field(
        None, description="CA certificates (PEM); set, every client must present a certificate they signed (mTLS)."
    )
    api_keys_file: Path | None = Field(
        None,
        description="API keys and the routes each may call (TOML, format in proxy/security.py); with it or "
        "SWITCHYARD_API_KEYS (name:key,...) every call outside auth_public_services needs a key.",
    )
    auth_public_services: tuple[str, ...] = Field(
        ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"),
        description="gRPC services callable without an API key (health for load balancers, reflection for grpcurl).",
    )

    @field_validator("triton_url")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"triton_url must be host:port, got {value!r}")
        return value
