"""Private, throw-away service instances (Mosquitto, PostgreSQL) for the demo, tests and bench.

Each one runs on a free loopback port in its own temporary directory, so it never collides
with a broker or database the machine already runs (a Pi often has Mosquitto on 1883).
"""
