"""Ansible filters for bandwidth caps: thin wrappers around cvmc.gridmodel.bandwidth."""

from __future__ import annotations

from collections.abc import Callable

from cvmc.ansible.filters import filter_errors
from cvmc.gridmodel import bandwidth

DOCUMENTATION = r"""
name: grid_rate_bits
short_description: Parse and render bandwidth caps for tc, pfSense and VirtualBox
description:
  - Filters of the desktop grid's bandwidth model; rates are integers in bits per second.
  - C(grid_rate_bits) parses a tc(8) rate string (C(20mbit), C(1.5 Mbit)) into bits per
    second. Units are case-insensitive; C(bit kbit mbit gbit tbit) are SI bits and
    C(kibit mibit gibit tibit) binary bits. tc's byte units (C(bps kbps mbps gbps tbps),
    C(kibps) ...) are refused in any case, because an admin's everyday "Mbps" means megabits
    and tc's means megabytes; the message shows the two unambiguous spellings. A bare number
    is refused (no unit to guess), as are zero, negative rates and rates above 1tbit.
  - C(grid_rate_tc) renders a rate for tc(8) in the largest of gbit/mbit/kbit/bit that divides
    it exactly (C(20mbit), C(1500kbit)).
  - C(grid_rate_pfsense) renders a rate for the pfSense REST API v2 limiter as
    C({bw, bwscale}) with C(bwscale) one of C(Mb), C(Kb), C(b).
  - C(grid_rate_vbox) renders a rate for C(VBoxManage bandwidthctl --limit) as C(20m) (bits,
    largest of g/m/k); fails if the rate is not a whole number of kbit/s.
  - The three render filters take either an int (bits per second) or a rate string.
  - Errors name the variable given as O(name).
positional: _input, name
options:
  _input:
    description: A rate string such as C(20mbit) (or, for the render filters, an int of bits/s).
    type: raw
    required: true
  name:
    description: Name of the variable being checked, used at the start of error messages.
    type: str
    default: value
"""

EXAMPLES = r"""
- name: Parse a cap into bits per second
  ansible.builtin.debug:
    msg: "{{ '20mbit' | grid_rate_bits('grid_bandwidth_classes.standard.down') }}"  # 20000000

- name: Render a cap for tc, pfSense and VirtualBox
  ansible.builtin.debug:
    msg:
      tc: "{{ '1.5mbit' | grid_rate_tc }}"             # 1500kbit
      pfsense: "{{ '20mbit' | grid_rate_pfsense }}"    # {bw: 20, bwscale: Mb}
      vbox: "{{ 20000000 | grid_rate_vbox }}"          # 20m
"""

RETURN = r"""
_value:
  description:
    - C(grid_rate_bits) returns the rate in bits per second (int).
    - C(grid_rate_tc) and C(grid_rate_vbox) return a string (C(20mbit), C(20m)).
    - "C(grid_rate_pfsense) returns a dict C({bw: int, bwscale: Mb|Kb|b})."
  type: raw
"""


@filter_errors
def grid_rate_bits(value: str, name: str = "value") -> int:
    return bandwidth.parse_rate(value, name=name)


@filter_errors
def grid_rate_tc(value: str | int, name: str = "value") -> str:
    return bandwidth.tc_rate(bandwidth.as_bits(value, name=name), name=name)


@filter_errors
def grid_rate_pfsense(value: str | int, name: str = "value") -> bandwidth.PfsenseBandwidth:
    return bandwidth.pfsense_bandwidth(bandwidth.as_bits(value, name=name), name=name)


@filter_errors
def grid_rate_vbox(value: str | int, name: str = "value") -> str:
    return bandwidth.vbox_limit(bandwidth.as_bits(value, name=name), name=name)


class FilterModule:
    """The bandwidth filters."""

    def filters(self) -> dict[str, Callable[..., object]]:
        return {
            "grid_rate_bits": grid_rate_bits,
            "grid_rate_tc": grid_rate_tc,
            "grid_rate_pfsense": grid_rate_pfsense,
            "grid_rate_vbox": grid_rate_vbox,
        }
