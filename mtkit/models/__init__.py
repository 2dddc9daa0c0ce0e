"""Models: scratch cells, the recurrent stack, encoder, attention, decoders, seq2seq."""
