"""The training loop: trains on given sample indices, returns what selection methods observe."""
