"""The writer: one shard's durable ingest with group commit."""
