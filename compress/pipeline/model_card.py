"""The short README.md written beside every model `compress` saves."""

from __future__ import annotations

from transformers import PretrainedConfig

from compress.evaluation.metrics import metric_texts
from compress.models.artifacts import QUANTIZATION_FIELD
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import PROVENANCE_FIELD, kept_original_layers, original_num_layers

CARD_FILE = "README.md"
"""The model card's file name in a model folder (what the Hugging Face hub shows)."""


def render_model_card(
    config: PretrainedConfig,
    parameters: int,
    base_model: str,
    task: str | None,
    data_source: str | None,
    metrics: dict[str, float] | None,
    recipe_text: str | None,
) -> str:
    drops = (getattr(config, PROVENANCE_FIELD, None) or {}).get("drops", [])
    quantization = getattr(config, QUANTIZATION_FIELD, None)
    layers, original = num_layers(config), original_num_layers(config)
    lines = [
        f"# {base_model}, {layers} of {original} layers" + (f", for {task}" if task else ""),
        "",
        "Made with `compress` (layer dropping after Sajjad et al., arXiv 2004.03844). "
        "Layer indices are 0-based positions in the original model.",
        "",
        f"- base model: `{base_model}`",
        f"- task: {task} (data: {data_source})" if task else "- no task: not fine-tuned",
        f"- layers: {layers} of {original}; kept {kept_original_layers(config)}",
    ]
    lines += [f"- dropped {step['dropped_layers']} by strategy `{step['strategy']}`" for step in drops]
    if not drops:
        lines.append("- no layers dropped")
    if quantization:
        lines.append(f"- quantization: `{quantization['mode']}`")
    lines.append(f"- parameters: {parameters:,}")
    if metrics:
        lines += ["", "## Dev metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {text} |" for name, text in metric_texts(metrics).items()]
    if recipe_text:
        lines += ["", "## Recipe", "", "```yaml", recipe_text.rstrip(), "```"]
    lines.append("")
    return "\n".join(lines)
