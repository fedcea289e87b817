from .embeddings import LanguageTables
from .transformer import MultilingualTransformer, build_model

__all__ = ["LanguageTables", "MultilingualTransformer", "build_model"]
