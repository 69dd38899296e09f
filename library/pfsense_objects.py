#!/usr/bin/python
"""Bring the objects a grid owns on a pfSense firewall to a desired state, over pfrest v2."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pfsense_objects
short_description: Reconcile owned pfSense objects through the REST API v2, staged and applied once
description:
  - Talks to the pfSense REST API v2 (pfrest, 2.4.0 or later) over HTTPS with an X-API-Key,
    through Ansible's open_url. TLS verification is on unless O(validate_certs=false).
  - Manages only objects whose description starts with O(owner) in brackets. For each kind it
    reads every object, compares the fields it sets, then creates, patches or deletes its own
    objects. An object of someone else that clashes with ours (same limiter, alias or CSO name,
    or a rule that uses one of our limiters) stops the run before any write, naming the object.
  - Firewall objects (limiters, aliases, rules, outbound NAT) are staged; the module verifies
    the staged state and only then calls POST /firewall/apply, once, and only if something
    changed. On any failure it undoes its own writes and does not apply, so the running
    firewall keeps its previous applied state.
  - Supports check mode and diff mode (secrets are redacted).
options:
  owner:
    description: Marker of the objects this run owns (description prefix C([owner])).
    type: str
    required: true
  objects:
    description:
      - Kind -> list of request bodies. Kinds are C(ca), C(certificate), C(crl),
        C(openvpn_server), C(openvpn_cso), C(limiter), C(alias), C(rule), C(nat_outbound).
      - "A value C({__ref__: [kind, key, attr]}) is replaced by that object's C(attr)
        (C(refid), C(vpnid)). A kind left out is not touched; an empty list removes ours."
    type: dict
    required: true
  secrets:
    description:
      - "Secret values (private keys, the tls-crypt key) by name; an object's value
        C({__secret__: name}) is replaced by one. They are never logged and are redacted in
        diffs."
    type: dict
    default: {}
  nat_mode:
    description:
      - Outbound NAT mode to switch to when it is C(automatic) or C(disabled) and NAT mappings
        are managed.
    type: str
    choices: [hybrid, advanced]
    default: hybrid
extends_documentation_fragment: [pfsense_api]
author: Desktop grid maintainers
"""

EXAMPLES = r"""
- name: Keep the grid's limiters
  pfsense_objects:
    url: https://gw1.grid.example.edu
    api_key: "{{ vault_pfsense_api_key }}"
    owner: grid:example-grid
    objects:
      limiter:
        - {name: grid_standard_in, description: "[grid:example-grid] standard up", mask: srcaddress,
           maskbits: 32, aqm: droptail, sched: wf2q+, bandwidth: [{bw: 10, bwscale: Mb}]}
  no_log: true
"""

RETURN = r"""
summary:
  description: Per kind, how many objects were (or would be) created, patched and deleted.
  returned: always
  type: dict
applied:
  description: Whether POST /firewall/apply was called.
  returned: always
  type: bool
api_version:
  description: The firewall's REST API version.
  returned: always
  type: str
requests:
  description: Number of HTTP requests sent.
  returned: always
  type: int
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.pfsense_rest import (
    COMMON_ARGS,
    PfsenseError,
    Reconciler,
    client_from_params,
    decode_refs,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **COMMON_ARGS,
            "owner": {"type": "str", "required": True},
            "objects": {"type": "dict", "required": True},
            "secrets": {"type": "dict", "no_log": True, "default": {}},
            "nat_mode": {"type": "str", "default": "hybrid", "choices": ["hybrid", "advanced"]},
        },
        supports_check_mode=True,
    )
    params: dict[str, Any] = module.params
    try:
        client = client_from_params(params)
        reconciler = Reconciler(
            client,
            f"[{params['owner']}]",
            check_mode=module.check_mode,
            min_version=params["min_api_version"],
            nat_mode=params["nat_mode"],
        )
        secrets = params["secrets"] or {}
        objects = {
            kind: decode_refs(list(items or []), secrets)
            for kind, items in params["objects"].items()
        }
        result = reconciler.run(objects)
    except PfsenseError as exc:
        module.fail_json(msg=str(exc))
    output: dict[str, Any] = {
        "changed": result.changed,
        "applied": result.applied,
        "summary": result.summary,
        "api_version": result.version,
        "requests": result.requests,
    }
    if module._diff:
        output["diff"] = {
            "before": "\n".join(result.before) + "\n",
            "after": "\n".join(result.after) + "\n",
        }
    module.exit_json(**output)


if __name__ == "__main__":
    main()
