"""The grid model's pure logic: address plan, bandwidth units, ClassAd requirements, memory,
and the model's validation. Standard library only; no I/O, no clock, no network. The Ansible
filter plugins in filter_plugins/ and the agent/coordinator both import from here, so each
rule is written once."""
