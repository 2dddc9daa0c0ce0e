"""Data: sources and splits, normalisation, tokenisers, vocabularies, encoded splits, batching."""
