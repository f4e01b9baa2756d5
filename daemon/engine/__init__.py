"""Everything about the model: GGUF import, tokenizer, chat template, streaming generation."""

from .openmp import prefer_llvm_openmp

# Before any module of this package loads CTranslate2 (see openmp.py).
prefer_llvm_openmp()
