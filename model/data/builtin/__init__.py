"""The built-in offline corpus: sentences (``sentences.py``) spoken by Open JTalk's HTS voice (``build.py``),
optionally spoiled in known ways (``degrade.py``) so quality filters have something to find."""

from model.data.builtin.build import BuiltinCorpus, build_builtin_corpus

__all__ = ["BuiltinCorpus", "build_builtin_corpus"]
