"""Scoring with a model: the offline stage (base loss, warm-up IFD, embeddings, LESS), the passes
under it (batched by length, cached by fingerprint, resumable), per-sample gradient features and
their store, and :class:`~.online.ModelScorer`, what a selector may compute with the model being
trained (counted as the cost LEAD claims to save)."""
