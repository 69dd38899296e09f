#!/usr/bin/python
"""Check a pfSense firewall's REST API v2: reachable, key accepted, version supported; and read
back the objects of the kinds asked for."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pfsense_info
short_description: Check the pfSense REST API v2 before any change, and report its state
description:
  - Reads C(GET /api/v2/system/restapi/version) and C(GET /api/v2/firewall/apply) with the API
    key, over HTTPS with TLS verification on by default, through Ansible's open_url.
  - Fails with a message naming the setting when the key is refused, the TLS certificate is not
    trusted, the host has no REST API v2, or its version is older than O(min_api_version).
  - With O(gather), also reads every object of those kinds (one C(GET) of each kind's plural
    endpoint), with private keys and tls keys replaced by C(<redacted>).
  - Changes nothing; runs in check mode too.
options:
  gather:
    description:
      - Kinds of objects to read back, as named by C(pfsense_objects) (C(ca), C(certificate),
        C(crl), C(openvpn_server), C(openvpn_cso), C(limiter), C(alias), C(rule),
        C(nat_outbound)). C(nat_outbound) also reads the outbound NAT mode.
    type: list
    elements: str
    choices: [ca, certificate, crl, openvpn_server, openvpn_cso, limiter, alias, rule, nat_outbound]
    default: []
extends_documentation_fragment: [pfsense_api]
author: Desktop grid maintainers
"""

EXAMPLES = r"""
- name: Check the firewall's REST API
  pfsense_info:
    url: https://gw1.grid.example.edu
    api_key: "{{ vault_pfsense_api_key }}"
  no_log: true

- name: Read back the firewall's limiters and rules
  pfsense_info:
    url: https://gw1.grid.example.edu
    api_key: "{{ vault_pfsense_api_key }}"
    gather: [limiter, rule]
  register: firewall
"""

RETURN = r"""
api_version:
  description: The REST API version the firewall runs (C(v2.4.0)).
  returned: always
  type: str
pending_subsystems:
  description: Firewall subsystems with changes not applied yet (by anyone).
  returned: always
  type: list
  elements: str
objects:
  description:
    - Kind -> the objects of that kind as the firewall returns them (with their C(id)), secrets
      redacted; only the kinds in O(gather).
  returned: always
  type: dict
outbound_nat_mode:
  description: The outbound NAT mode (C(automatic), C(hybrid), C(advanced), C(disabled)).
  returned: when O(gather) has C(nat_outbound)
  type: str
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pfsense_rest import (
    COMMON_ARGS,
    KIND_BY_NAME,
    KINDS,
    NAT_MODE_PATH,
    PfsenseError,
    client_from_params,
    redact,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **COMMON_ARGS,
            "gather": {
                "type": "list",
                "elements": "str",
                "default": [],
                "choices": [kind.name for kind in KINDS],
            },
        },
        supports_check_mode=True,
    )
    params: dict[str, Any] = module.params
    extra: dict[str, Any] = {}
    try:
        client = client_from_params(params)
        version = client.version(params["min_api_version"])
        apply_state = client.call("GET", "/firewall/apply", what="pending changes") or {}
        gather = list(dict.fromkeys(params["gather"] or []))
        objects = {name: [redact(o) for o in client.list(KIND_BY_NAME[name])] for name in gather}
        if "nat_outbound" in gather:
            mode = client.call("GET", NAT_MODE_PATH, what="outbound NAT mode") or {}
            extra["outbound_nat_mode"] = mode.get("mode")
    except PfsenseError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=False,
        api_version=version,
        pending_subsystems=list(apply_state.get("pending_subsystems") or []),
        objects=objects,
        **extra,
    )


if __name__ == "__main__":
    main()
