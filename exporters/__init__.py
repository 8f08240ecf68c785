"""ONNX export and onnxruntime quantization of Hugging Face sequence-classification models.

Independent of the `compress` pipeline: each function takes a model or an ONNX file and writes files.
"""

ONNX_FILE = "model.onnx"
"""The graph's file name in a model folder, beside config.json and the tokenizer."""
