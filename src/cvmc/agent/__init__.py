"""The desktop agent ``cvmc``: local policy, image store and research VM life cycle.

Layout (see docs/agent.md):

- ``domain``: pure rules (config, policy engine, slot state machine, lease planning, the
  coordinator wire format). Imports no adapter, no psutil, no subprocess, no HTTP.
- ``ports``: the small abstract classes the service drives.
- ``service``: the control loop.
- ``adapters``: the real world (sessions, resources, hypervisors, image store, HTTP...).
- ``compose``: the one composition root; ``entrypoints.cli`` is the ``cvmc`` command.
"""
