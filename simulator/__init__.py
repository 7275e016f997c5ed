"""Simulated ESP32 sensor fleet for the demo, tests, benchmarks and UIs.

``fleet.Fleet`` runs N devices (``device.SimulatedDevice``, one paho client each) that publish
``shared.schemas.Telemetry`` at QoS 1; ``signals`` replays bundled public data or synthesises
signals; ``faults`` injects SIMULATED faults; ``cli.main`` is ``smaint simulate``. Nothing is
imported here, so ``import simulator.signals`` does not pull in paho.
"""
