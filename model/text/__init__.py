"""Japanese text frontend: normalisation, g2p with accent (tones), symbol table, word2ph, BERT features."""

from model.text.g2p import FRONTEND_VERSION, G2PResult, g2p, segment_labels, to_sequence
from model.text.normalize import normalize_text

__all__ = ["FRONTEND_VERSION", "G2PResult", "g2p", "normalize_text", "segment_labels", "to_sequence"]
