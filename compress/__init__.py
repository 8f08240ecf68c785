"""compress: make pre-trained Transformer encoders smaller and faster (drop layers, fine-tune, distil, quantize).

`compress.load(folder)` runs any folder compress wrote on raw texts (compress/pipeline/serving.py)."""


def __getattr__(name: str):
    # Imported on first use: `import compress` (and the CLI's start) stays free of torch and transformers.
    if name in ("load", "CompressedModel", "Prediction"):
        from compress.pipeline import serving

        return getattr(serving, name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")


__all__ = ["load", "CompressedModel", "Prediction"]
