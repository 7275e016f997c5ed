"""The gateway's web panel (NiceGUI), served by the gateway process on its HTTP port.

auth: password and sessions; series and snapshot: what the pages show, read from the
gateway; frame: layout and sign-in guard; pages/: one module per page; origin: the
cross-site check; server: composing the panel with the gateway; cli: ``smaint panel``.
"""
