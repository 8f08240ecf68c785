"""The package's layers, as pyproject.toml's [tool.importlinter] contracts state them: each package imports only
from those below it, and the backends in exporters/ import nothing of compress. A new upward import fails here."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_imports_only_the_layers_below_it():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    # run from the repository's root: exporters/ is read as a package of its own there; no cache, as the tree changes under it
    result = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
