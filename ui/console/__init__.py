"""The cloud console: fleet, device explorer, alerts inbox and maintenance orders in NiceGUI.

Served by the cloud process (``smaint cloud serve``) at ``/``. Every figure it shows and every
action it takes goes through the cloud's own HTTP API, in process, with the signed-in user's
API key: the console can do exactly what that user's role may do through the API, no more.
"""
