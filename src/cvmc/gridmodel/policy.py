"""Policy windows: when a desktop may carry grid load.

The seed's default: with nobody logged on, grid load may run at any time. With someone logged
on, running load is stopped at 07:00 and nothing starts again before 17:00 on weekdays, even
if the machine is idle. The model expresses this as *blackouts*: during a blackout that
applies, running VMs are vacated and nothing new starts.

A blackout belongs to the day it starts on. One whose end is earlier than its start crosses
midnight (``22:00``-``06:00`` on Friday covers Friday night into Saturday morning). A start
equal to the end is refused: it would mean either nothing or the whole day, and the model
must say which (use all seven days and ``00:00``-``23:59`` for "never").
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cvmc.gridmodel import limits

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
APPLIES: tuple[str, ...] = ("user_present", "always")
#: The keys of ``grid_policy`` and of one of its blackouts; anything else is a typo.
POLICY_KEYS: tuple[str, ...] = (
    "blackouts",
    "holidays",
    "require_hw_virtualization",
    "min_battery_percent",
    "keep_awake",
    "owner_idle_minutes",
    "suspend_minutes",
)
BLACKOUT_KEYS: tuple[str, ...] = ("name", "applies", "days", "start", "end")
DEFAULT_REQUIRE_HW_VIRTUALIZATION = True
DEFAULT_MIN_BATTERY_PERCENT = 50
#: While a research VM runs, the agent keeps the desktop from sleeping (a logind inhibitor on
#: Linux, SetThreadExecutionState on Windows) and lets it sleep again when the VM stops.
DEFAULT_KEEP_AWAKE = True
#: Off: the seed's rule, under which a logged-on owner counts as present however long they
#: have been away from the keyboard. N > 0 is HTCondor's ``KeyboardIdle`` idea: a session
#: without keyboard or mouse input for N minutes no longer holds off ``user_present``
#: blackouts (see :func:`counts_as_present`).
DEFAULT_OWNER_IDLE_MINUTES = 0
#: Off: an owner's logon that stops VMs shuts them down (the seed's behaviour). N > 0: a
#: running VM is saved to disk instead (QEMU desktops; its RAM encrypted), kept up to N minutes
#: and resumed when the owner leaves; its job reconnects within HTCondor's job lease
#: (``JOB_DEFAULT_LEASE_DURATION``, 40 minutes), hence at most 30 (``limits.RANGES``).
DEFAULT_SUSPEND_MINUTES = 0
_TIME = re.compile(r"\A(\d{2}):(\d{2})\Z")
_DATE = re.compile(r"\A\d{4}-\d{2}-\d{2}\Z")
_MINUTES_PER_DAY = 24 * 60
_DAY_INDEX = {d: i for i, d in enumerate(DAYS)}


@dataclass(frozen=True)
class Blackout:
    """One window in which grid load is stopped and nothing starts."""

    name: str
    applies: str
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes after midnight
    end: int  # minutes after midnight; < start means the window crosses midnight

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start


@dataclass(frozen=True)
class Policy:
    """The validated policy: blackouts plus holidays on which no blackout applies, and the
    desktop-wide rules (hardware virtualisation, the battery threshold)."""

    blackouts: tuple[Blackout, ...]
    holidays: frozenset[dt.date]
    require_hw_virtualization: bool = DEFAULT_REQUIRE_HW_VIRTUALIZATION
    min_battery_percent: int = DEFAULT_MIN_BATTERY_PERCENT
    keep_awake: bool = DEFAULT_KEEP_AWAKE
    owner_idle_minutes: int = DEFAULT_OWNER_IDLE_MINUTES
    suspend_minutes: int = DEFAULT_SUSPEND_MINUTES


def counts_as_present(policy: Policy, idle_s: float | None) -> bool:
    """Whether a logged-on session counts as its owner present, for ``user_present`` blackouts.

    ``idle_s`` is how long the session has had no keyboard or mouse input, or None when the
    platform cannot tell (a desktop environment that never reports idleness, a session without
    a terminal). The seed's rule (``owner_idle_minutes: 0``) counts every session; the opt-in
    rule counts a session until it has been idle for ``owner_idle_minutes``, and an unknown
    idleness always counts, so that the opt-in can only ever hold VMs back where it cannot see.
    """
    if policy.owner_idle_minutes <= 0 or idle_s is None:
        return True
    return idle_s < policy.owner_idle_minutes * 60


def parse_time(value: object, *, name: str = "value") -> int:
    """Return minutes after midnight for an ``HH:MM`` string (00:00 to 23:59).

    The string is taken as it is (no surrounding spaces): the Windows desktops' Task Scheduler
    triggers are rendered from it verbatim.
    """
    if not isinstance(value, str):
        raise ValueError(f"{name}: {value!r} is not a time; write it as a quoted 'HH:MM' string")
    match = _TIME.match(value)
    if not match:
        raise ValueError(f"{name}: {value!r} is not a time of the form HH:MM (00:00 to 23:59)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{name}: {value!r} is not a time of day (00:00 to 23:59)")
    return hours * 60 + minutes


def parse_blackout(raw: object, *, name: str) -> Blackout:
    """Validate one blackout mapping; every error names the field."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: {raw!r} is not a mapping of {', '.join(BLACKOUT_KEYS)}")
    limits.refuse_unknown_keys(raw, BLACKOUT_KEYS, name)
    label = raw.get("name")
    if not isinstance(label, str) or not label.strip():
        raise ValueError(f"{name}.name: {label!r} is not a name; give the window a name for logs")
    applies = raw.get("applies", "user_present")
    if not isinstance(applies, str) or applies not in APPLIES:
        raise ValueError(f"{name}.applies: {applies!r} is not one of {', '.join(APPLIES)}")
    days_raw = raw.get("days")
    if not isinstance(days_raw, Sequence) or isinstance(days_raw, str) or not days_raw:
        raise ValueError(f"{name}.days: give a non-empty list of days from {', '.join(DAYS)}")
    days: set[int] = set()
    for day in days_raw:
        # Only the short lower-case names: the Windows desktops' Task Scheduler triggers map
        # exactly these (roles/windows_desktop), so 'Monday' would break them on the desktop.
        key = _DAY_INDEX.get(day) if isinstance(day, str) else None
        if key is None:
            raise ValueError(f"{name}.days: {day!r} is not a day; use {', '.join(DAYS)}")
        if key in days:
            raise ValueError(f"{name}.days: {day!r} is listed twice")
        days.add(key)
    start = parse_time(raw.get("start"), name=f"{name}.start")
    end = parse_time(raw.get("end"), name=f"{name}.end")
    if start == end:
        raise ValueError(
            f"{name}: start and end are both {raw.get('start')!r}, an empty or endless window; "
            "make them differ"
        )
    return Blackout(
        name=str(label), applies=str(applies), days=frozenset(days), start=start, end=end
    )


def parse_policy(raw: object, *, name: str = "grid_policy") -> Policy:
    """Validate the policy mapping of the grid model (``grid_policy``).

    Absent keys take the role's defaults: no blackouts, no holidays,
    ``require_hw_virtualization: true``, ``min_battery_percent: 50``, ``keep_awake: true``,
    ``owner_idle_minutes: 0``, ``suspend_minutes: 0``. ``suspend_minutes`` needs a blackout
    that applies to ``user_present``: only an owner's return saves a VM, and without such a
    blackout a logon never stops one.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: {raw!r} is not a mapping of {', '.join(POLICY_KEYS)}")
    limits.refuse_unknown_keys(raw, POLICY_KEYS, name)
    # A null list of blackouts is refused, not taken as none: the Windows desktops' role loops
    # over it to make Task Scheduler triggers, and a loop over null fails on the desktop.
    blackouts_raw = raw.get("blackouts", [])
    if not isinstance(blackouts_raw, Sequence) or isinstance(blackouts_raw, str):
        raise ValueError(f"{name}.blackouts: must be a list of windows")
    blackouts = tuple(
        parse_blackout(item, name=f"{name}.blackouts[{i}]") for i, item in enumerate(blackouts_raw)
    )
    holidays_raw = raw.get("holidays", [])
    if holidays_raw is None:
        holidays_raw = []
    if not isinstance(holidays_raw, Sequence) or isinstance(holidays_raw, str):
        raise ValueError(f"{name}.holidays: must be a list of dates (YYYY-MM-DD)")
    holidays: set[dt.date] = set()
    for i, day in enumerate(holidays_raw):
        holidays.add(_parse_date(day, name=f"{name}.holidays[{i}]"))
    require = limits.flag(
        raw.get("require_hw_virtualization", DEFAULT_REQUIRE_HW_VIRTUALIZATION),
        name=f"{name}.require_hw_virtualization",
    )
    battery = limits.setting(
        raw.get("min_battery_percent", DEFAULT_MIN_BATTERY_PERCENT),
        "grid_policy.min_battery_percent",
        name=f"{name}.min_battery_percent",
    )
    keep_awake = limits.flag(raw.get("keep_awake", DEFAULT_KEEP_AWAKE), name=f"{name}.keep_awake")
    owner_idle = limits.setting(
        raw.get("owner_idle_minutes", DEFAULT_OWNER_IDLE_MINUTES),
        "grid_policy.owner_idle_minutes",
        name=f"{name}.owner_idle_minutes",
    )
    suspend = limits.setting(
        raw.get("suspend_minutes", DEFAULT_SUSPEND_MINUTES),
        "grid_policy.suspend_minutes",
        name=f"{name}.suspend_minutes",
    )
    if suspend and not any(b.applies == "user_present" for b in blackouts):
        raise ValueError(
            f"{name}.suspend_minutes: {suspend} saves a VM when its owner comes back, but no "
            f"blackout of {name}.blackouts applies to user_present, so a logon never stops a "
            "VM; add one or set suspend_minutes to 0"
        )
    return Policy(
        blackouts=blackouts,
        holidays=frozenset(holidays),
        require_hw_virtualization=require,
        min_battery_percent=battery,
        keep_awake=keep_awake,
        owner_idle_minutes=owner_idle,
        suspend_minutes=suspend,
    )


def _parse_date(value: object, *, name: str) -> dt.date:
    # A date and time is not a holiday; JSON (the agent's config) has no date type, so a date
    # must survive as its YYYY-MM-DD string.
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{name}: {value!r} is not a date of the form YYYY-MM-DD")


def active_blackout(policy: Policy, now: dt.datetime, *, user_present: bool) -> Blackout | None:
    """Return the blackout in force at local time ``now``, or None when load may run.

    A blackout that crosses midnight belongs to the day it starts on, so its early-morning
    part is looked up on the previous day. Holidays switch off the blackouts that start on them.
    """
    minute = now.hour * 60 + now.minute
    today, yesterday = now.date(), now.date() - dt.timedelta(days=1)
    for blackout in policy.blackouts:
        if blackout.applies == "user_present" and not user_present:
            continue
        if _covers(blackout, today, minute, policy) or _covers_from_yesterday(
            blackout, yesterday, minute, policy
        ):
            return blackout
    return None


def _covers(blackout: Blackout, day: dt.date, minute: int, policy: Policy) -> bool:
    if day in policy.holidays or day.weekday() not in blackout.days:
        return False
    if blackout.crosses_midnight:
        return minute >= blackout.start
    return blackout.start <= minute < blackout.end


def _covers_from_yesterday(blackout: Blackout, day: dt.date, minute: int, policy: Policy) -> bool:
    if not blackout.crosses_midnight or day in policy.holidays:
        return False
    return day.weekday() in blackout.days and minute < blackout.end


def minutes_until_change(policy: Policy, now: dt.datetime, *, user_present: bool) -> int:
    """Minutes until the answer of :func:`active_blackout` next changes (at most a week).

    The agent uses it to sleep until a window's edge instead of polling.
    """
    current = active_blackout(policy, now, user_present=user_present)
    base = now.replace(second=0, microsecond=0)
    for step in range(1, 7 * _MINUTES_PER_DAY + 1):
        probe = base + dt.timedelta(minutes=step)
        if active_blackout(policy, probe, user_present=user_present) != current:
            return step
    return 7 * _MINUTES_PER_DAY
