"""The agent's control loop, driven only through the ports in ``cvmc.agent.ports``."""
