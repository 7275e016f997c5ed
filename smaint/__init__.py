"""The ``smaint`` command: one entry point for the gateway, cloud, simulator and demo."""
