#!/usr/bin/python
"""Check a pfSense firewall's REST API v2: reachable, key accepted, version supported."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pfsense_info
short_description: Check the pfSense REST API v2 before any change, and report its state
description:
  - Reads C(GET /api/v2/system/restapi/version) and C(GET /api/v2/firewall/apply) with the API
    key, over HTTPS with TLS verification on by default, through Ansible's open_url.
  - Fails with a message naming the setting when the key is refused, the TLS certificate is not
    trusted, the host has no REST API v2, or its version is older than O(min_api_version).
  - Changes nothing; runs in check mode too.
extends_documentation_fragment: [pfsense_api]
author: Desktop grid maintainers
"""

EXAMPLES = r"""
- name: Check the firewall's REST API
  pfsense_info:
    url: https://gw1.grid.example.edu
    api_key: "{{ vault_pfsense_api_key }}"
  no_log: true
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
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pfsense_rest import COMMON_ARGS, PfsenseError, client_from_params


def main() -> None:
    module = AnsibleModule(argument_spec=dict(COMMON_ARGS), supports_check_mode=True)
    params: dict[str, Any] = module.params
    try:
        client = client_from_params(params)
        version = client.version(params["min_api_version"])
        apply_state = client.call("GET", "/firewall/apply", what="pending changes") or {}
    except PfsenseError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=False,
        api_version=version,
        pending_subsystems=list(apply_state.get("pending_subsystems") or []),
    )


if __name__ == "__main__":
    main()
