"""The wire contract and the code both sides of Smart Maintenance run."""

WIRE_VERSION = 1
