"""The one type of every seed a recipe or sweep sets."""

from typing import Annotated

from pydantic import Field

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
"""numpy, datasets and the Trainer take seeds of 0..2**32-1 only: any other fails once training starts."""
