"""``/metrics`` with prometheus_client: the Prometheus text exposition (format 0.0.4).

The service keeps plain counters and values (``Coordinator.metrics_snapshot``); the rounds
child's counters reach them cumulatively through ``Coordinator.absorb``. Here a custom
collector turns that snapshot into metric families at each scrape, so every name, type and
label set stays the service's, and prometheus_client formats the values: a counter prints every
digit (``1.2345678e+07``, exact up to 2**53), not ``:g``'s six significant ones.

Each web process (``serve --workers``) has its own registry, as it has its own counters:
- the service's families (docs/coordinator.md, Web);
- ``cvmc_build_info{version}``, 1;
- ``cvmc_heartbeat_duration_seconds``, a histogram of the time the web adapter takes to answer
  a heartbeat request (``HEARTBEAT_BUCKETS``: around the p99 goal of 50 ms);
- prometheus_client's process (``process_*``) and platform (``python_info``) collectors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cvmc import __version__
from cvmc.coordinator.service.coordinator import Coordinator

__all__ = ["CONTENT_TYPE", "HEARTBEAT_BUCKETS", "CoordinatorCollector", "Exporter"]

#: The exposition's media type (the text format 0.0.4, as before prometheus_client).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Upper bounds (s) of the heartbeat histogram's buckets: fine below the p99 goal of 50 ms
#: (docs/performance.md), with 0.05 itself a bound, so that the share of heartbeats over the
#: goal is a ratio of two series; coarse above it.
HEARTBEAT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class CoordinatorCollector(Collector):
    """The service's metric families, read at each scrape, and ``cvmc_build_info``."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterable[Metric]:
        for family in self._coordinator.metrics_snapshot():
            metric: CounterMetricFamily | GaugeMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
            for values, value in family.samples:
                metric.add_metric(list(values), value)
            yield metric
        info = GaugeMetricFamily(
            "cvmc_build_info", "The coordinator's version; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info


class _ProcessCollector(ProcessCollector):
    """prometheus_client's process collector, also under systemd's ``ProcSubset=pid`` (the
    service's sandbox), where ``/proc/stat`` and its boot time are hidden: the boot time is
    then the wall clock less the time since boot (``CLOCK_BOOTTIME``, the clock of the start
    time in ``/proc/self/stat``)."""

    def _boot_time(self) -> float:
        try:
            with open(os.path.join(self._proc, "stat"), "rb") as stat:
                for line in stat:
                    if line.startswith(b"btime "):
                        return float(line.split()[1])
        except OSError:
            pass
        boottime: int | None = getattr(time, "CLOCK_BOOTTIME", None)  # Linux only
        return 0.0 if boottime is None else time.time() - time.clock_gettime(boottime)


class Exporter:
    """One web process's ``/metrics``: its registry and the heartbeat histogram (``proc``:
    where the process collector reads ``/proc``)."""

    def __init__(self, coordinator: Coordinator, *, proc: str = "/proc") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CoordinatorCollector(coordinator))
        self.heartbeat_seconds = Histogram(
            "cvmc_heartbeat_duration_seconds",
            "Time the coordinator took to answer a heartbeat request (any status), from its "
            "arrival in the app to its reply.",
            buckets=HEARTBEAT_BUCKETS,
            registry=self.registry,
        )
        _ProcessCollector(proc=proc, registry=self.registry)
        PlatformCollector(registry=self.registry)

    def text(self) -> bytes:
        """The exposition, text format 0.0.4."""
        return generate_latest(self.registry)
