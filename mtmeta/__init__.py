"""mtmeta: low-resource X->English translation with a shared multilingual
encoder, universal lexical representation and meta-learned initialisation."""
import logging
import warnings

__version__ = "0.1.0"

# fairseq announces optional speech/logging extras at import time; the
# translation path needs none of them.
logging.getLogger("fairseq").setLevel(logging.WARNING)
# Raised by torch for fairseq's float attention mask + bool padding mask; harmless.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")
