"""Ingestion: parse uploaded files (``ingest.parsers``) and chunk them (``ingest.chunking``)."""
