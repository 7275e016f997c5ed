"""Operator interfaces (NiceGUI gateway panel, cloud console).

Nothing is here yet: today people use the gateway's and the cloud's HTTP APIs (README).
"""
