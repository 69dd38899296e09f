"""cvmc: the Condor VM Coordinator (desktop agent, coordinator) and the shared grid model."""

__version__ = "0.1.0"
