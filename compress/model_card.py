"""The short README.md written beside every model `compress` saves."""

from __future__ import annotations

from transformers import PreTrainedModel

from compress.architectures import num_layers
from compress.layer_drop import PROVENANCE_FIELD, kept_original_layers, original_num_layers
from compress.models import count_parameters


def render_model_card(
    model: PreTrainedModel,
    base_model: str,
    task: str,
    data_source: str,
    metrics: dict[str, float] | None,
    recipe_text: str | None,
) -> str:
    drops = (getattr(model.config, PROVENANCE_FIELD, None) or {}).get("drops", [])
    original = original_num_layers(model)
    kept = kept_original_layers(model)
    lines = [
        f"# {base_model}, {num_layers(model.config)} of {original} layers, for {task}",
        "",
        "Made with `compress` (layer dropping after Sajjad et al., arXiv 2004.03844). "
        "Layer indices are 0-based positions in the original model.",
        "",
        f"- base model: `{base_model}`",
        f"- task: {task} (data: {data_source})",
        f"- layers: {num_layers(model.config)} of {original}; kept {kept}",
    ]
    for step in drops:
        lines.append(f"- dropped {step['dropped_layers']} by strategy `{step['strategy']}`")
    if not drops:
        lines.append("- no layers dropped")
    lines.append(f"- parameters: {count_parameters(model):,}")
    if metrics:
        lines += ["", "## Dev metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
    if recipe_text:
        lines += ["", "## Recipe", "", "```yaml", recipe_text.rstrip(), "```"]
    lines += ["", "Load it with `AutoModelForSequenceClassification.from_pretrained(<this folder>)`.", ""]
    return "\n".join(lines)
