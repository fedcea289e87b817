"""mtmeta: low-resource X->English translation with a shared multilingual
encoder, universal lexical representation and meta-learned initialisation."""

__version__ = "0.1.0"
