"""Run time for the model: loading an imported model, the tokenizer, chat templates, streaming
generation, thread and CPU-path choices, and the catalog's lookup. Making a model from a GGUF
file is the importer's, in convert/, which hushd never imports."""

from .openmp import prefer_llvm_openmp

# Before any module of this package loads CTranslate2 (see openmp.py).
prefer_llvm_openmp()
