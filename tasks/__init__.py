"""Thin Prefect wrappers around fairsynth library steps (retries, caching, artifacts)."""
