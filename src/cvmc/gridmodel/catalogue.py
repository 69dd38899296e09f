"""The VM type catalogue (``grid_vm_types``) and the bandwidth classes its types name.

One parser and one :class:`VmType` for every consumer: the ``grid`` role's gate
(``cvmc.gridmodel.validate``), the agent's configuration (``cvmc.agent.domain.config``) and the
coordinator's grid file (``cvmc.coordinator.domain.grid``). Each consumer hands over what its
input carries; a rule can never differ between them because there is only this one.

The coordinator's grid file carries no bandwidth classes (``roles/grid_coordinator`` renders
``grid_vm_types`` but neither ``grid_bandwidth_classes`` nor ``grid_bandwidth_default_class``),
so it parses the catalogue without them: a type's ``bandwidth_class`` is then only checked to
be a class name, and its caps stay unresolved (``VmType.caps`` is None). The agent and the gate
have the classes, and check that every type's class exists.

Two forms of each check: ``*_problems`` returns every problem (the gate reports them all at
once), ``parse_*`` returns the parsed values or raises ``ValueError`` with the first problem
(the agent and the coordinator stop at it). Both run the same code. Every message starts with
the variable it is about (``grid_vm_types[its-u11-boinc-20120415].cpus: ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from cvmc.gridmodel import bandwidth, classad, limits, memory

__all__ = [
    "CLASS_KEYS",
    "CLASS_NAME_PATTERN",
    "DEFAULT_ARCH",
    "DEFAULT_DISK_GB",
    "DEFAULT_OS",
    "IMAGE_FILE_PATTERN",
    "RANGES",
    "VM_TYPE_KEYS",
    "BandwidthClass",
    "VmType",
    "bandwidth_problems",
    "parse_bandwidth",
    "parse_classes",
    "parse_vm_types",
    "vm_type_problems",
]

T = TypeVar("T")
P = ParamSpec("P")

#: The keys of one VM type; anything else is a typo (``disk_size_gb`` would silently be 20 GB).
VM_TYPE_KEYS: tuple[str, ...] = (
    "name",
    "image",
    "cpus",
    "memory_mb",
    "os",
    "arch",
    "disk_gb",
    "bandwidth_class",
    "cpu_cap_percent",
)
#: The keys of one bandwidth class.
CLASS_KEYS: tuple[str, ...] = ("name", "down", "up")

DEFAULT_OS = "LINUX"
DEFAULT_ARCH = "X86_64"
#: The per-slot disk the agent creates when a type gives no ``disk_gb``.
DEFAULT_DISK_GB = 20

#: The ranges of a VM type's numbers, by field.
RANGES: dict[str, limits.Range] = {
    "cpus": limits.Range(
        1,
        32,
        "a research VM is sized for a desktop; the agent never gives a VM more CPUs than the "
        "desktop has, and more than 32 is a typo",
    ),
    "memory_mb": limits.Range(
        memory.DEFAULT_MINIMUM_MB,
        256 * 1024,
        "the agent never starts a VM with less than 256 MB (cvmc.gridmodel.memory), so a "
        "smaller type could never run: 2 is GB written as MB; above 256 GiB no desktop holds "
        "it, and the value is KB written as MB (4 GB = 4194304 KB)",
    ),
    "disk_gb": limits.Range(1, 65536, "the per-slot disk; at most 64 TiB"),
    "cpu_cap_percent": limits.Range(
        1,
        100,
        "the share of each virtual CPU's time the VM may use (VirtualBox --cpuexecutioncap, "
        "QEMU's cgroup cpu.max); leave it out for no cap",
    ),
}

#: A VM type's image: a plain file name, the same rule as the signed manifest's ``file``, which
#: must equal it (the agent refuses a manifest for another file). No path, no URL.
IMAGE_FILE_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,254}\Z")

#: A bandwidth class name: the research VM tells the gateway its class through OpenVPN peer
#: info (``cvmc.gridmodel.vpn.client_config``), which takes exactly these.
CLASS_NAME_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,32}\Z")


@dataclass(frozen=True)
class BandwidthClass:
    """One bandwidth class with its caps in bits per second."""

    name: str
    down_bits: int
    up_bits: int


@dataclass(frozen=True)
class VmType:
    """One entry of the VM type catalogue, checked, with its defaults and caps resolved."""

    name: str
    image: str
    cpus: int
    memory_mb: int
    os: str
    arch: str
    #: The per-slot disk the agent creates (``DEFAULT_DISK_GB`` when the model gives none).
    disk_gb: int
    #: Whether the model gives ``disk_gb``. The coordinator checks a job's RequestDisk only
    #: against a disk the model gives (docs/coordinator.md).
    disk_declared: bool
    #: The type's bandwidth class: its own, else the default class; None where the input
    #: carries no classes and the type names none (the coordinator's grid file).
    bandwidth_class: str | None
    #: The class's caps; None where the input carries no classes (the coordinator's grid file).
    caps: BandwidthClass | None
    #: The CPU execution cap (percent of each virtual CPU, 1-100); None: no cap.
    cpu_cap_percent: int | None = None

    @property
    def machine(self) -> classad.MachineAttrs:
        """The ClassAd attributes a research VM of this type advertises."""
        return classad.MachineAttrs(
            vm_name=self.name, OpSys=self.os, Arch=self.arch, Cpus=self.cpus, Memory=self.memory_mb
        )

    @property
    def disk_kb(self) -> int | None:
        """The declared disk in KiB (HTCondor's Disk unit); None when the model gives none."""
        return self.disk_gb * 1024 * 1024 if self.disk_declared else None

    def _caps(self) -> BandwidthClass:
        if self.caps is None:
            raise ValueError(
                f"grid_vm_types[{self.name}]: its caps are unknown, the catalogue was parsed "
                "without grid_bandwidth_classes"
            )
        return self.caps

    @property
    def down_bits(self) -> int:
        """The cap towards the VM (bits per second)."""
        return self._caps().down_bits

    @property
    def up_bits(self) -> int:
        """The cap from the VM (bits per second)."""
        return self._caps().up_bits


# --------------------------------------------------------------------------------------------
# helpers


def _attempt(
    problems: list[str], func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | None:
    """``func(*args, **kwargs)``, or None with its ValueError's message added to ``problems``."""
    try:
        return func(*args, **kwargs)
    except ValueError as exc:
        problems.append(str(exc))
        return None


def _list(value: object, name: str, what: str) -> Sequence[object]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValueError(f"{name}: {value!r} is not a list; give a list of {what}")
    return value


def _class_name(value: object, name: str) -> str:
    if not isinstance(value, str) or not CLASS_NAME_PATTERN.match(value):
        raise ValueError(
            f"{name}: {value!r} is not a bandwidth class name; use 1-32 letters, digits, '_' or "
            "'-' (the VM tells the gateway its class by this name)"
        )
    return str(value)


def _cap(value: object, name: str) -> int:
    bits = bandwidth.parse_rate(value, name=name)  # type: ignore[arg-type]
    if bits % 1000:
        # The Windows desktops cap a VM with VBoxManage bandwidthctl, which takes whole kbit/s.
        raise ValueError(
            f"{name}: {value!r} is {bits} bit/s, not a whole number of kbit/s; the Windows "
            "desktops' VirtualBox cannot set it (use a multiple of 1kbit, like "
            f"'{max(bits // 1000, 1)}kbit')"
        )
    return bits


# --------------------------------------------------------------------------------------------
# bandwidth classes


def _classes(classes: object, name: str) -> tuple[dict[str, BandwidthClass], set[str], list[str]]:
    """The classes whose caps parse, the names of every well-named class, and the problems."""
    problems: list[str] = []
    result: dict[str, BandwidthClass] = {}
    names: set[str] = set()
    try:
        items = _list(classes, name, "classes {name, down, up}")
    except ValueError as exc:
        return result, names, [str(exc)]
    if not items:
        problems.append(f"{name}: the list is empty; define at least one class {{name, down, up}}")
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        if not isinstance(raw, Mapping):
            problems.append(f"{name}[{i}]: {raw!r} is not a mapping of name, down and up")
            continue
        cls_name = _attempt(problems, _class_name, raw.get("name"), f"{name}[{i}].name")
        label = f"{name}[{cls_name if cls_name is not None else i}]"
        problems.extend(limits.unknown_keys(raw, CLASS_KEYS, label))
        if cls_name is not None:
            if cls_name.lower() in seen:
                problems.append(
                    f"{name}[{i}].name: {cls_name!r} is used twice (also by "
                    f"{name}[{seen[cls_name.lower()]}])"
                )
                cls_name = None
            else:
                seen[cls_name.lower()] = i
                names.add(cls_name)
        caps = [
            _attempt(problems, _cap, raw[direction], f"{label}.{direction}")
            if raw.get(direction) is not None
            else _missing(problems, f"{label}.{direction}", "a rate like '20mbit'")
            for direction in ("down", "up")
        ]
        if cls_name is not None and caps[0] is not None and caps[1] is not None:
            result[cls_name] = BandwidthClass(cls_name, caps[0], caps[1])
    return result, names, problems


def _missing(problems: list[str], name: str, what: str) -> int | None:
    problems.append(f"{name}: missing; give {what}")
    return None


def _default_problems(
    default: object, names: Collection[str], name: str, default_name: str
) -> list[str]:
    if isinstance(default, str) and default in names:
        return []
    return [
        f"{default_name}: {default!r} is not a class in {name} "
        f"({', '.join(sorted(names)) or 'none defined'})"
    ]


def bandwidth_problems(
    classes: object,
    default: object,
    *,
    name: str = "grid_bandwidth_classes",
    default_name: str = "grid_bandwidth_default_class",
) -> list[str]:
    """Every problem of the bandwidth classes and of the default class (empty when fine)."""
    _, names, problems = _classes(classes, name)
    return problems + _default_problems(default, names, name, default_name)


def parse_bandwidth(
    classes: object,
    default: object,
    *,
    name: str = "grid_bandwidth_classes",
    default_name: str = "grid_bandwidth_default_class",
) -> tuple[dict[str, BandwidthClass], str]:
    """The classes by name and the default class; ``ValueError`` with the first problem."""
    result, names, problems = _classes(classes, name)
    problems += _default_problems(default, names, name, default_name)
    if problems:
        raise ValueError(problems[0])
    return result, str(default)


def parse_classes(
    classes: object, *, name: str = "grid_bandwidth_classes"
) -> dict[str, BandwidthClass]:
    """The classes by name, where no default class is at hand (the gateways' caps)."""
    result, _, problems = _classes(classes, name)
    if problems:
        raise ValueError(problems[0])
    return result


# --------------------------------------------------------------------------------------------
# VM types


def _image(raw: Mapping[str, Any], label: str) -> str:
    image = raw.get("image")
    if image is None:
        raise ValueError(f"{label}.image: missing; name the type's signed image file")
    if isinstance(image, str) and not image.strip():
        raise ValueError(f"{label}.image: the VM type has no image; name its signed image file")
    if not isinstance(image, str) or not IMAGE_FILE_PATTERN.match(image):
        raise ValueError(
            f"{label}.image: {image!r} is not a plain file name; give the signed image's file "
            "name in the image repository (letters, digits, '.', '_' and '-', starting with a "
            "letter or digit), not a path or URL"
        )
    return str(image)


def _number(raw: Mapping[str, Any], key: str, label: str, default: int | None = None) -> int:
    bounds = RANGES[key]
    value = raw.get(key)
    if value is None:  # absent or null: an optional field takes its default
        value = default
    if value is None:
        raise ValueError(f"{label}.{key}: missing; give {bounds.describe()}")
    return limits.whole_number(
        value, name=f"{label}.{key}", minimum=bounds.minimum, maximum=bounds.maximum
    )


def _vm_type(
    raw: object,
    i: int,
    name: str,
    *,
    class_names: Collection[str] | None,
    classes: Mapping[str, BandwidthClass] | None,
    default_class: str | None,
) -> tuple[VmType | None, list[str]]:
    if not isinstance(raw, Mapping):
        return None, [f"{name}[{i}]: {raw!r} is not a mapping; give a VM type {{name, image, ...}}"]
    problems: list[str] = []
    vm_name = _attempt(
        problems, classad.validate_vm_name, raw.get("name"), name=f"{name}[{i}].name"
    )
    if vm_name is None:
        return None, problems
    label = f"{name}[{vm_name}]"
    problems.extend(limits.unknown_keys(raw, VM_TYPE_KEYS, label))
    image = _attempt(problems, _image, raw, label)
    cpus = _attempt(problems, _number, raw, "cpus", label)
    memory_mb = _attempt(problems, _number, raw, "memory_mb", label)
    disk_gb = _attempt(problems, _number, raw, "disk_gb", label, DEFAULT_DISK_GB)
    cpu_cap = (
        None
        if raw.get("cpu_cap_percent") is None
        else _attempt(problems, _number, raw, "cpu_cap_percent", label)
    )
    os_name = _attempt(
        problems,
        classad.validate_attr_value,
        DEFAULT_OS if raw.get("os") is None else raw["os"],
        name=f"{label}.os",
        attr="os",
    )
    arch = _attempt(
        problems,
        classad.validate_attr_value,
        DEFAULT_ARCH if raw.get("arch") is None else raw["arch"],
        name=f"{label}.arch",
        attr="arch",
    )
    cls_name: str | None = default_class  # its existence is grid_bandwidth_default_class's
    if raw.get("bandwidth_class") is not None:
        cls_name = _attempt(
            problems, _class_name, raw["bandwidth_class"], f"{label}.bandwidth_class"
        )
        if cls_name is not None and class_names is not None and cls_name not in class_names:
            problems.append(
                f"{label}.bandwidth_class: {cls_name!r} is not a class in grid_bandwidth_classes "
                f"({', '.join(sorted(class_names)) or 'none defined'})"
            )
    if (
        problems
        or image is None
        or cpus is None
        or memory_mb is None
        or disk_gb is None
        or os_name is None
        or arch is None
    ):
        return None, problems
    return (
        VmType(
            name=str(vm_name),
            image=image,
            cpus=cpus,
            memory_mb=memory_mb,
            os=os_name,
            arch=arch,
            disk_gb=disk_gb,
            disk_declared=raw.get("disk_gb") is not None,
            bandwidth_class=cls_name,
            caps=None if classes is None or cls_name is None else classes.get(cls_name),
            cpu_cap_percent=cpu_cap,
        ),
        problems,
    )


def _vm_types(
    vm_types: object,
    name: str,
    class_names: Collection[str] | None,
    classes: Mapping[str, BandwidthClass] | None = None,
    default_class: str | None = None,
) -> tuple[tuple[VmType, ...], list[str]]:
    try:
        items = _list(vm_types, name, "VM types")
    except ValueError as exc:
        return (), [str(exc)]
    if not items:
        return (), [f"{name}: the catalogue is empty; define at least one VM type"]
    problems: list[str] = []
    result: list[VmType] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(items):
        parsed, found = _vm_type(
            raw, i, name, class_names=class_names, classes=classes, default_class=default_class
        )
        problems.extend(found)
        raw_name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(raw_name, str):
            # vm_names are lower-case, so names that differ only in case are refused above;
            # compare without case anyway, as HTCondor compares strings with ==.
            key = raw_name.lower()
            if key in seen:
                problems.append(
                    f"{name}[{i}].name: {raw_name!r} is used twice (also by {name}[{seen[key]}])"
                )
                continue
            seen[key] = i
        if parsed is not None:
            result.append(parsed)
    return tuple(result), problems


def vm_type_problems(
    vm_types: object,
    *,
    bandwidth_classes: object = None,
    name: str = "grid_vm_types",
    classes_name: str = "grid_bandwidth_classes",
) -> list[str]:
    """Every problem of the catalogue (empty when fine).

    ``bandwidth_classes`` (the model's ``grid_bandwidth_classes``) are the classes a type may
    name; None where the input carries none (the coordinator's grid file). Their own problems
    are :func:`bandwidth_problems`'s, not reported here.
    """
    class_names = (
        None if bandwidth_classes is None else _classes(bandwidth_classes, classes_name)[1]
    )
    return _vm_types(vm_types, name, class_names)[1]


def parse_vm_types(
    vm_types: object,
    *,
    bandwidth: tuple[Mapping[str, BandwidthClass], str] | None = None,
    name: str = "grid_vm_types",
) -> tuple[VmType, ...]:
    """The catalogue in list order; ``ValueError`` with the first problem.

    ``bandwidth`` (:func:`parse_bandwidth`'s classes and default class) resolves each type's
    class and caps; without it (the coordinator's grid file) they stay None unless named.
    """
    if bandwidth is None:
        result, problems = _vm_types(vm_types, name, None)
    else:
        classes, default = bandwidth
        result, problems = _vm_types(vm_types, name, set(classes), classes, default)
    if problems:
        raise ValueError(problems[0])
    return result
