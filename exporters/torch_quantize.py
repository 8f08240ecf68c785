"""PyTorch-side quantization of Hugging Face sequence-classification models: dynamic int8 Linear
layers (CPU), bitsandbytes 8-bit and 4-bit weights, and fp16 (CUDA). Each function takes a model
and returns the converted model; none writes files."""

from __future__ import annotations

import tempfile

import torch
from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig, PreTrainedModel


class QuantizationError(RuntimeError):
    """This machine cannot run the conversion asked for; the message says why, in one line."""


def torch_dynamic_int8(model: PreTrainedModel, inplace: bool = False) -> PreTrainedModel:
    """int8 weights and dynamically quantized activations in every Linear layer (runs on the CPU); `inplace`
    converts `model` itself, without the float copy that would double a large model's memory."""
    return torch.ao.quantization.quantize_dynamic(model.cpu().eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=inplace)


def bitsandbytes(model: PreTrainedModel, bits: int, quant_type: str = "nf4") -> PreTrainedModel:
    """Reload through BitsAndBytesConfig, keeping the task head (everything outside the encoder) in full precision."""
    head = [name for name, _ in model.named_children() if name != model.base_model_prefix]
    cuda = torch.cuda.is_available()
    if bits == 8:
        config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=head)
    else:
        compute = torch.float16 if cuda else torch.float32
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type, bnb_4bit_compute_dtype=compute,
                                    llm_int8_skip_modules=head)
    with tempfile.TemporaryDirectory() as scratch:
        model.save_pretrained(scratch)
        try:
            return AutoModelForSequenceClassification.from_pretrained(
                scratch, quantization_config=config, device_map="cuda" if cuda else "cpu",
                dtype=torch.float16 if cuda else torch.float32,
            )
        except (RuntimeError, ImportError, ValueError, NotImplementedError) as error:
            where = "this CUDA device" if cuda else "the CPU (it may need a CUDA device)"
            raise QuantizationError(f"bitsandbytes cannot run {bits}-bit weights on {where}: {error}") from None


def fp16(model: PreTrainedModel) -> PreTrainedModel:
    """Half-precision weights on the CUDA device."""
    if not torch.cuda.is_available():
        raise QuantizationError("fp16 needs a CUDA device and this machine has none (use dynamic-int8 on a CPU)")
    return model.half().to("cuda")
