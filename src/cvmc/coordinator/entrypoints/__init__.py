"""Part of the coordinator service (docs/coordinator.md)."""
