"""CPU, memory, battery and disk through psutil (Linux and Windows alike)."""

from __future__ import annotations

import psutil

from cvmc.agent.ports import Resources, ResourceSnapshot

__all__ = ["PsutilResources"]

MB = 1024 * 1024


class PsutilResources(Resources):
    def __init__(self) -> None:
        self._cpus = psutil.cpu_count(logical=True) or 1
        self._has_battery = True

    def snapshot(self) -> ResourceSnapshot:
        memory = psutil.virtual_memory()
        percent: int | None = None
        on_ac: bool | None = None
        if self._has_battery:
            battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
            if battery is None:
                self._has_battery = False  # desktops: stop asking
            else:
                percent = round(battery.percent)
                on_ac = battery.power_plugged
        return ResourceSnapshot(
            cpus=self._cpus,
            memory_total_mb=memory.total // MB,
            memory_free_mb=memory.available // MB,
            battery_percent=percent,
            on_ac=on_ac,
        )

    def disk_free_mb(self, path: str) -> int:
        return int(psutil.disk_usage(path).free // MB)
