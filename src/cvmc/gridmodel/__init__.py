"""The grid model's pure logic: address plan, bandwidth units, ClassAd requirements, memory,
the VM type catalogue, the settings' ranges, and the model's validation (the gate). Standard
library only; no I/O, no clock, no network. The Ansible filter plugins in filter_plugins/ and
the agent/coordinator all import from here, so each rule is written once and the gate applies
every rule any of them applies."""
