"""Evaluation of a run's trained model: held-out loss per eval set (:mod:`.heldout`)."""
