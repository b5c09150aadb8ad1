"""Circuit breaker for the connection to one backend (Triton).

States:

* **closed** — calls go through. Each connection-level failure (UNAVAILABLE
  from the channel: refused, reset, closed; never a model's own error) adds
  one to a count of consecutive failures; any answer from the backend resets
  it. At ``failure_threshold`` the circuit opens.
* **open** — calls fail at once with :class:`CircuitOpen` (``UNAVAILABLE``,
  "Triton at X is down; retrying in N s") without touching the network, for
  a cool-down that starts at ``cooldown_s`` and doubles after each failed
  probe up to ``max_cooldown_s``.
* **half-open** — after the cool-down, one probe is let through
  (:meth:`CircuitBreaker.begin_probe`; the Triton backend sends a
  ``ServerReady`` once its channel has connected again); calls still fail
  fast meanwhile. The probe's success closes the circuit, its failure opens
  it again.

The breaker itself never touches the network and is not thread-safe: it
lives on one event loop, as the backend does. State changes are logged, set
the ``switchyard_backend_circuit_open{endpoint}`` gauge and call the listeners
(the health monitor re-checks at once).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass

from prometheus_client import Gauge

from switchyard.proxy.checks import above, at_least
from switchyard.proxy.errors import BackendUnavailable

log = logging.getLogger(__name__)

CIRCUIT_OPEN = Gauge(
    "switchyard_backend_circuit_open",
    "1 while the circuit breaker to the backend is open or half-open (calls fail fast), 0 while closed.",
    ["endpoint"],
    multiprocess_mode="livemax",
)


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpen(BackendUnavailable):
    """A call refused without touching the network because the circuit is open.

    ``retry_in_s`` is the time until the next probe may go; None while a probe is running (half-open).
    """

    def __init__(self, backend: str, retry_in_s: float | None) -> None:
        when = "now" if retry_in_s is None or retry_in_s < 0.05 else f"in {retry_in_s:.1f} s"
        super().__init__(f"Triton at {backend} is down; retrying {when}")
        self.backend = backend
        self.retry_in_s = retry_in_s


Listener = Callable[[CircuitState], None]


@dataclass(eq=False)
class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive connection failures; see the module docstring."""

    name: str
    _: KW_ONLY
    clock: Callable[[], float] = time.monotonic
    failure_threshold: int = 5
    """Consecutive connection failures that open the circuit."""
    cooldown_s: float = 0.25
    max_cooldown_s: float = 0.5
    """The cool-down doubles after each failed probe, up to this."""

    def __post_init__(self) -> None:
        at_least("failure_threshold", self.failure_threshold, 1)
        above("cooldown_s", self.cooldown_s, 0)
        at_least("max_cooldown_s", self.max_cooldown_s, self.cooldown_s)
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._cooldown = self.cooldown_s
        self._retry_at = 0.0
        self._opened_at = 0.0
        self._listeners: list[Listener] = []
        CIRCUIT_OPEN.labels(self.name).set(0)

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is CircuitState.CLOSED

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in(self) -> float:
        """Seconds until the next probe may go (0 when closed, half-open or due)."""
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(self._retry_at - self.clock(), 0.0)

    def add_listener(self, listener: Listener) -> None:
        """``listener(new_state)`` is called after every state change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- calls -----------------------------------------------------------------

    def check(self) -> None:
        """Raises :class:`CircuitOpen` unless the circuit is closed."""
        if self._state is not CircuitState.CLOSED:
            raise CircuitOpen(self.name, self.retry_in() if self._state is CircuitState.OPEN else None)

    def record_success(self) -> None:
        """The backend answered (with a result or with an error of its own): the connection works."""
        if self._state is CircuitState.CLOSED:
            self._failures = 0
        # Open or half-open: a call that started before the circuit opened
        # says little about now; only the probe closes it.

    def record_failure(self) -> None:
        """A connection-level failure (UNAVAILABLE from the channel)."""
        if self._state is not CircuitState.CLOSED:
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._opened_at = self.clock()
            self._cooldown = self.cooldown_s
            self._open(f"after {self._failures} consecutive connection failures")

    # -- probing -----------------------------------------------------------------

    def begin_probe(self) -> bool:
        """Takes the one probe of the half-open state: True when open and the cool-down has passed."""
        if self._state is not CircuitState.OPEN or self.clock() < self._retry_at:
            return False
        self._set(CircuitState.HALF_OPEN)
        return True

    def probe_succeeded(self) -> None:
        if self._state is not CircuitState.HALF_OPEN:
            return
        down = self.clock() - self._opened_at
        self._failures = 0
        self._cooldown = self.cooldown_s
        log.warning("circuit to Triton at %s closed: it answers again after %.1f s down", self.name, down)
        self._set(CircuitState.CLOSED)

    def probe_failed(self) -> None:
        if self._state is not CircuitState.HALF_OPEN:
            return
        self._cooldown = min(self._cooldown * 2, self.max_cooldown_s)
        self._open("")

    # -- internals ---------------------------------------------------------------

    def _open(self, why: str) -> None:
        self._retry_at = self.clock() + self._cooldown
        if why:
            log.warning(
                "circuit to Triton at %s opened %s: calls fail fast, probing every %g-%g s",
                self.name,
                why,
                self.cooldown_s,
                self.max_cooldown_s,
            )
        self._set(CircuitState.OPEN)

    def _set(self, state: CircuitState) -> None:
        if state is self._state:
            return
        self._state = state
        CIRCUIT_OPEN.labels(self.name).set(0 if state is CircuitState.CLOSED else 1)
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("circuit breaker listener failed")
