"""Operator interfaces: the gateway's web panel (ui/panel, NiceGUI).

The cloud console is not built yet: the cloud is used through its HTTP API (README).
"""
