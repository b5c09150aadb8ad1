"""Fixtures of the deployment tests: podman, and images built once per session (container and compose tests)."""

from __future__ import annotations

import pytest

from .podman import BASE_IMAGE, IMAGE, REDIS_CONTAINERFILE, REDIS_IMAGE, ROOT, Podman, missing_tools


@pytest.fixture(scope="session")
def podman() -> Podman:
    reason = missing_tools()
    if reason is not None:
        pytest.skip(f"container tests skipped: {reason}")
    return Podman()


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> str:
    """The local Debian base (debootstrap, imported once and kept)."""
    built = podman.ensure_base_image()
    print(f"\n{BASE_IMAGE}: " + (f"made in {built.seconds:.1f} s" if built.seconds else "there already"))
    return BASE_IMAGE


@pytest.fixture(scope="session")
def switchyard_image(podman: Podman, base_image: str) -> str:
    """The Dockerfile built on the local base, once per session (podman's layer cache makes rebuilds short)."""
    built = podman.build(IMAGE, ROOT / "Dockerfile", ROOT, build_args={"BASE": base_image})
    print(f"\n{IMAGE}: built in {built.seconds:.1f} s, {podman.image_size_mb(IMAGE):.0f} MB")
    return IMAGE


@pytest.fixture(scope="session")
def redis_image(podman: Podman, base_image: str) -> str:
    """Debian's redis-server on the local base, standing in for the official image the compose file names."""
    built = podman.build(REDIS_IMAGE, REDIS_CONTAINERFILE, REDIS_CONTAINERFILE.parent, build_args={"BASE": base_image})
    print(f"\n{REDIS_IMAGE}: built in {built.seconds:.1f} s")
    return REDIS_IMAGE
