"""ONNX export and onnxruntime quantization of Hugging Face sequence-classification models.

Independent of the `compress` pipeline: each function takes a model or an ONNX file and writes files.
"""
