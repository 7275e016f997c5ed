"""Ingest: a gateway's sync batch applied once, its readings written, rollups kept."""
