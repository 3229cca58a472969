"""Serving: an OpenAI-compatible HTTP API over a chosen model variant (`python -m lifecycle.serving`)."""
