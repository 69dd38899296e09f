"""Policy windows: parsing, and the seed's default evaluated over a week."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cvmc.gridmodel.policy import (
    active_blackout,
    minutes_until_change,
    parse_policy,
    parse_time,
)

SEED = parse_policy(
    {
        "blackouts": [
            {
                "name": "owner-workday",
                "applies": "user_present",
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "start": "07:00",
                "end": "17:00",
            }
        ],
        "holidays": ["2026-12-25"],
    }
)
# 2026-11-23 is a Monday.
MONDAY = dt.date(2026, 11, 23)


def at(day: dt.date, hhmm: str) -> dt.datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hours, minutes))


@pytest.mark.parametrize(
    ("value", "minutes"), [("00:00", 0), ("07:00", 420), ("17:30", 1050), ("23:59", 1439)]
)
def test_parse_time(value: str, minutes: int) -> None:
    assert parse_time(value) == minutes


@pytest.mark.parametrize(
    "value", ["24:00", "7:00", "07:60", "0700", "", None, 700, " 07:00", "07:00\n"]
)
def test_parse_time_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^t: "):
        parse_time(value, name="t")


def test_seed_policy_with_a_user_logged_on() -> None:
    assert active_blackout(SEED, at(MONDAY, "06:59"), user_present=True) is None
    assert active_blackout(SEED, at(MONDAY, "07:00"), user_present=True) is not None
    assert active_blackout(SEED, at(MONDAY, "12:00"), user_present=True) is not None
    assert active_blackout(SEED, at(MONDAY, "16:59"), user_present=True) is not None
    assert active_blackout(SEED, at(MONDAY, "17:00"), user_present=True) is None
    saturday = MONDAY + dt.timedelta(days=5)
    assert active_blackout(SEED, at(saturday, "12:00"), user_present=True) is None


def test_seed_policy_with_nobody_logged_on_runs_any_time() -> None:
    for minute in range(0, 7 * 24 * 60, 7):
        now = at(MONDAY, "00:00") + dt.timedelta(minutes=minute)
        assert active_blackout(SEED, now, user_present=False) is None


def test_holiday_lifts_the_blackout() -> None:
    christmas = dt.date(2026, 12, 25)  # a Friday
    assert christmas.weekday() == 4
    assert active_blackout(SEED, at(christmas, "10:00"), user_present=True) is None


def test_window_across_midnight_belongs_to_its_start_day() -> None:
    policy = parse_policy(
        {
            "blackouts": [
                {
                    "name": "n",
                    "applies": "always",
                    "days": ["fri"],
                    "start": "22:00",
                    "end": "06:00",
                }
            ]
        }
    )
    friday = MONDAY + dt.timedelta(days=4)
    saturday = friday + dt.timedelta(days=1)
    assert active_blackout(policy, at(friday, "21:59"), user_present=False) is None
    assert active_blackout(policy, at(friday, "22:00"), user_present=False) is not None
    assert active_blackout(policy, at(saturday, "05:59"), user_present=False) is not None
    assert active_blackout(policy, at(saturday, "06:00"), user_present=False) is None
    # Thursday night is not covered: the window starts on Fridays only.
    assert active_blackout(policy, at(friday, "03:00"), user_present=False) is None


def test_minutes_until_change_finds_the_window_edges() -> None:
    assert minutes_until_change(SEED, at(MONDAY, "06:30"), user_present=True) == 30
    assert minutes_until_change(SEED, at(MONDAY, "16:00"), user_present=True) == 60
    assert minutes_until_change(SEED, at(MONDAY, "12:00"), user_present=False) == 7 * 24 * 60


@pytest.mark.parametrize("day", ["Monday", "monday", "TUE", "Mon", " mon", 1, None])
def test_only_the_short_lower_case_day_names(day: object) -> None:
    """roles/windows_desktop maps exactly mon..sun to Task Scheduler days; anything else would
    fail on the desktop, after the gateways changed, so the model refuses it."""
    blackout = {"name": "x", "days": ["wed", day], "start": "01:00", "end": "02:00"}
    with pytest.raises(ValueError, match=r"^grid_policy\.blackouts\[0\]\.days: .* is not a day"):
        parse_policy({"blackouts": [blackout]})
    policy = parse_policy({"blackouts": [{**blackout, "days": ["mon", "tue"]}]})
    assert policy.blackouts[0].days == frozenset({0, 1})


@pytest.mark.parametrize(
    ("blackout", "message"),
    [
        ({"name": "x", "days": [], "start": "07:00", "end": "17:00"}, "non-empty list of days"),
        ({"name": "x", "days": "mon", "start": "07:00", "end": "17:00"}, "non-empty list"),
        (
            {"name": "x", "days": ["mon", "mon"], "start": "07:00", "end": "17:00"},
            "listed twice",
        ),
        (
            {
                "name": "x",
                "days": ["mon"],
                "applies": "sometimes",
                "start": "07:00",
                "end": "17:00",
            },
            "applies: 'sometimes'",
        ),
        ({"name": "x", "days": ["mon"], "start": "07:00"}, "end: None is not a time"),
    ],
)
def test_bad_blackouts_are_refused(blackout: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=r"^grid_policy\.blackouts\[0\]") as err:
        parse_policy({"blackouts": [blackout]})
    assert message in str(err.value)


@given(
    start=st.integers(0, 1439),
    end=st.integers(0, 1439),
    probe=st.integers(0, 14 * 24 * 60 - 1),
)
def test_blackout_length_matches_its_window(start: int, end: int, probe: int) -> None:
    """Over two weeks, an 'always' blackout on every day covers exactly its window's minutes."""
    assume(start != end)
    fmt = f"{start // 60:02d}:{start % 60:02d}", f"{end // 60:02d}:{end % 60:02d}"
    policy = parse_policy(
        {
            "blackouts": [
                {
                    "name": "w",
                    "applies": "always",
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": fmt[0],
                    "end": fmt[1],
                }
            ]
        }
    )
    now = at(MONDAY, "00:00") + dt.timedelta(minutes=probe)
    minute = probe % (24 * 60)
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    assert (active_blackout(policy, now, user_present=False) is not None) == inside


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, r"^grid_policy: None is not a mapping"),
        ({"blackouts": None}, r"^grid_policy\.blackouts: must be a list"),
        ({"holidays": "2026-12-25"}, r"^grid_policy\.holidays: must be a list of dates"),
        ({"holidays": ["2026-12-25T10:00:00"]}, r"^grid_policy\.holidays\[0\]: "),
        ({"holidays": [dt.datetime(2026, 12, 25, 10, 0)]}, r"^grid_policy\.holidays\[0\]: "),
        ({"require_hw_virtualization": "yes"}, r"^grid_policy\.require_hw_virtualization: 'yes'"),
        ({"min_battery_percent": 150}, r"^grid_policy\.min_battery_percent: 150 is out of"),
        ({"min_battery_percent": True}, r"^grid_policy\.min_battery_percent: True is true or"),
        ({"min_battery": 20}, r"^grid_policy\.min_battery: unknown key"),
        ({"blackouts": [{"days": ["mon"], "start": "07:00", "end": "08:00"}]}, r"\.name: None"),
        (
            {
                "blackouts": [
                    {"name": "w", "days": ["mon"], "start": "07:00", "end": "08:00", "x": 1}
                ]
            },
            r"^grid_policy\.blackouts\[0\]\.x: unknown key",
        ),
        ({"blackouts": ["w"]}, r"^grid_policy\.blackouts\[0\]: 'w' is not a mapping"),
    ],
)
def test_the_policy_is_strict(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policy(raw)


def test_the_policy_carries_the_desktop_wide_rules() -> None:
    assert (SEED.require_hw_virtualization, SEED.min_battery_percent) == (True, 50)
    policy = parse_policy(
        {"holidays": None, "require_hw_virtualization": False, "min_battery_percent": 0}
    )
    assert (policy.holidays, policy.require_hw_virtualization, policy.min_battery_percent) == (
        frozenset(),
        False,
        0,
    )
    assert parse_policy({"holidays": [dt.date(2026, 12, 25)]}).holidays == {dt.date(2026, 12, 25)}
