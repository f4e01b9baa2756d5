"""Everything about the model: GGUF import, tokenizer, chat template, streaming generation."""
