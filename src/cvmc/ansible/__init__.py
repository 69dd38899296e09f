"""The controller's Ansible adapters: what the filter plugins share (never on a desktop)."""
