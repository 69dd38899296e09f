"""Options every pfsense_* module shares: how to reach the pfSense REST API v2."""

from __future__ import annotations


class ModuleDocFragment:
    """Documentation fragment ``pfsense_api`` (see module_utils/pfsense_rest.py COMMON_ARGS)."""

    DOCUMENTATION = r"""
options:
  url:
    description: Base URL of the firewall, such as C(https://gw1.example.edu).
    type: str
    required: true
  api_key:
    description: A pfrest API key (System > REST API > Keys); keep it in ansible-vault.
    type: str
    required: true
  validate_certs:
    description: Verify the firewall's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: PEM CA bundle that signs the firewall's certificate.
    type: path
  timeout:
    description: Seconds per request.
    type: int
    default: 30
  min_api_version:
    description: Refuse a firewall whose REST API is older than this.
    type: str
    default: 2.4.0
"""
