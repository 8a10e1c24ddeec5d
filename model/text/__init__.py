"""Japanese text frontend: normalisation, g2p with accent (tones), symbol table, word2ph, BERT features."""
