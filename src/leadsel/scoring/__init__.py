"""Offline scoring passes over the pool: loss, IFD, sentence embeddings. Batched by length,
cached by fingerprint, resumable."""
