"""Pools in (JSONL / datasets, four formats), the bundled real pool, chat-template encoding."""
