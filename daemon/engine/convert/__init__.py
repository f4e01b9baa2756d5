"""Import time: a GGUF file becomes a model directory the run time loads.

GGUF reading and dequantization, the numpy reference model, SmoothQuant calibration, rotation,
int8 rows, vocabulary pruning, the tokenizer and CTranslate2 spec builders, and fetching catalog
models. It sits beside the run time as CTranslate2's `converters/` sits beside its runtime:
`hush model pull` and `hush model import` run it in the user's process, and hushd never imports
it.
"""
