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
from typing import Any

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
APPLIES: tuple[str, ...] = ("user_present", "always")
_TIME = re.compile(r"^(\d{2}):(\d{2})$")
_MINUTES_PER_DAY = 24 * 60
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_NAMES = {**{d: i for i, d in enumerate(DAYS)}, **{d: i for i, d in enumerate(_FULL_DAYS)}}


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
    """The validated policy: blackouts plus holidays on which no blackout applies."""

    blackouts: tuple[Blackout, ...]
    holidays: frozenset[dt.date]


def parse_time(value: object, *, name: str = "value") -> int:
    """Return minutes after midnight for an ``HH:MM`` string (00:00 to 23:59)."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: {value!r} is not a time; write it as a quoted 'HH:MM' string")
    match = _TIME.match(value.strip())
    if not match:
        raise ValueError(f"{name}: {value!r} is not a time of the form HH:MM (00:00 to 23:59)")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours > 23 or minutes > 59:
        raise ValueError(f"{name}: {value!r} is not a time of day (00:00 to 23:59)")
    return hours * 60 + minutes


def parse_blackout(raw: Mapping[str, Any], *, name: str) -> Blackout:
    """Validate one blackout mapping; every error names the field."""
    label = str(raw.get("name", "")) or name
    applies = raw.get("applies", "user_present")
    if applies not in APPLIES:
        raise ValueError(f"{name}.applies: {applies!r} is not one of {', '.join(APPLIES)}")
    days_raw = raw.get("days")
    if not isinstance(days_raw, Sequence) or isinstance(days_raw, str) or not days_raw:
        raise ValueError(f"{name}.days: give a non-empty list of days from {', '.join(DAYS)}")
    days: set[int] = set()
    for day in days_raw:
        key = _DAY_NAMES.get(str(day).strip().lower())
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
    return Blackout(name=label, applies=str(applies), days=frozenset(days), start=start, end=end)


def parse_policy(raw: Mapping[str, Any], *, name: str = "grid_policy") -> Policy:
    """Validate the policy mapping of the grid model (``grid_policy``)."""
    blackouts_raw = raw.get("blackouts", [])
    if not isinstance(blackouts_raw, Sequence) or isinstance(blackouts_raw, str):
        raise ValueError(f"{name}.blackouts: must be a list of windows")
    blackouts = tuple(
        parse_blackout(item, name=f"{name}.blackouts[{i}]") for i, item in enumerate(blackouts_raw)
    )
    holidays: set[dt.date] = set()
    for i, day in enumerate(raw.get("holidays", []) or []):
        holidays.add(_parse_date(day, name=f"{name}.holidays[{i}]"))
    return Policy(blackouts=blackouts, holidays=frozenset(holidays))


def _parse_date(value: object, *, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a date of the form YYYY-MM-DD") from None


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
