"""The pipeline: recipes, the executor and its stage cache, model artifacts, loading and model cards."""
