"""The coordinator service: demand from HTCondor, leases to desktops, the signed image
catalogue and a dashboard (docs/coordinator.md). Server dependencies come with the
``coordinator`` extra; desktops never import this package."""
