"""MkDocs hook: the parts of the documentation that are read from the code at build time.

A page asks for a generated part with a marker line, `<!-- generated: NAME -->`; this hook replaces
the marker with Markdown made from the code, so the reference cannot drift from it:

- `cli`: every command of the `compress` command line, from the Typer app (`typer ... utils docs`);
- `stage-settings`: every stage's settings, from `compress.stages.STAGES`, and every quantization
  method's, from `compress.stages.quantize.METHODS`;
- `recipe-files`: the recipe's top level, its `data:` section and the sweep file, with the models
  they nest, from their pydantic models;
- `modules`: the package's modules, each with the first paragraph of its docstring;
- `results`: the folders under `bench/results/`, each with the titles of its Markdown files;
- `layers`: the package's layers, read from its imports;
- `registries`: every `Registry(...)` table of named entries, with its entries.

An unknown marker stops the build. Every page, and the repository's README.md, is also checked for
paths into the repository written as code (`compress/pipeline/graph.py`, `bench/results/gpu/README.md`,
`compress.models.artifacts.load_artifact`): one that no longer exists is a warning, so
`mkdocs build --strict` fails when a file the text names has moved.
"""

from __future__ import annotations

import ast
import html
import logging
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import yaml
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("mkdocs.hooks.generate")  # a warning here fails `mkdocs build --strict`
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# Text helpers


def _escape(text: str) -> str:
    """Plain text (a docstring or a description) for a Markdown table cell; code spans stay as they are."""
    parts = re.split(r"(`[^`]*`)", " ".join(text.split()))
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(part)
        else:
            out.append(html.escape(part, quote=False).replace("|", "\\|").replace("*", "\\*"))
    return "".join(out)


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _docstring(cls: type) -> str:
    """The class's own docstring (not one inherited), cleaned."""
    doc = cls.__dict__.get("__doc__")
    return " ".join(doc.split()) if doc else ""


# ---------------------------------------------------------------------------------------------
# Pydantic models as tables


class Models:
    """Settings models to document, each with the page and anchor it is documented at, so a field whose
    type is one of them links there."""

    def __init__(self) -> None:
        self.anchors: dict[type, tuple[str, str]] = {}

    def register(self, model: type, page: str, anchor: str) -> None:
        self.anchors.setdefault(model, (page, anchor))

    def link(self, model: type, page: str) -> str:
        where = self.anchors.get(model)
        if where is None:
            return _code(model.__name__)
        target, anchor = where
        href = f"#{anchor}" if target == page else f"{target}#{anchor}"
        return f"[{model.__name__}]({href})"


def _constraints(metadata: list) -> list[str]:
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}
    found = []
    for item in metadata:
        if isinstance(getattr(item, "metadata", None), list):  # a Field(...) inside Annotated
            found.extend(_constraints(item.metadata))
            continue
        for attribute, word in words.items():
            value = getattr(item, attribute, None)
            if value is not None and not callable(value):
                if "length" in attribute:
                    found.append(f"{word} {value} {'entry' if value == 1 else 'entries'}")
                else:
                    found.append(f"{word} {value}")
    return found


def _type_name(annotation, models: Models, page: str) -> str:
    """A field's type in the words a recipe author needs: YAML values, lists, mappings, nested sections."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = _type_name(args[0], models, page)
        extra = _constraints(list(args[1:]))
        return f"{inner} ({', '.join(extra)})" if extra else inner
    if origin is typing.Literal:
        return " \\| ".join(_code(str(value)) for value in args)
    if origin in (typing.Union, types.UnionType):
        named = [a for a in args if a is not type(None)]
        text = " or ".join(_type_name(a, models, page) for a in named)
        return f"{text} or `null`" if len(named) < len(args) else text
    if origin is list:
        return f"list of {_type_name(args[0], models, page)}"
    if origin is dict:
        return f"mapping of {_type_name(args[0], models, page)} to {_type_name(args[1], models, page)}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return models.link(annotation, page)
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type):
        return {"str": "text", "int": "integer", "float": "number", "bool": "`true` \\| `false`"}.get(
            annotation.__name__, annotation.__name__
        )
    return _escape(str(annotation))


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return "its defaults" if isinstance(field.default_factory, type) else _code(_yaml(field.default_factory()))
    if field.default is PydanticUndefined:
        return "required"
    return _code(_yaml(field.default))


def _yaml(value) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def settings_table(model: type, models: Models, page: str, last: tuple[str, ...] = ()) -> str:
    """One row per field of a pydantic model: name (its alias where it has one), type, default, description.
    Fields named in `last` (those every stage shares) go to the end."""
    fields = list(model.model_fields.items())
    fields.sort(key=lambda item: 0 if item[0] in ("stage", "mode") else 2 if item[0] in last else 1)
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in fields:
        annotation = field.annotation
        constraints = _constraints(field.metadata)
        type_text = _type_name(annotation, models, page)
        if constraints:
            type_text += f" ({', '.join(constraints)})"
        rows.append(
            f"| {_code(field.alias or name)} | {type_text} | {_default(field)} | {_escape(field.description or '')} |"
        )
    return "\n".join(rows)


def _nested_models(model: type) -> list[type]:
    """The settings models a model's fields hold (a recipe's `data:`, a sweep's `latency:`), depth first."""
    from pydantic import BaseModel

    found: list[type] = []

    def walk(annotation) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
            return
        for arg in typing.get_args(annotation):
            walk(arg)

    for field in model.model_fields.values():
        walk(field.annotation)
    return found


# ---------------------------------------------------------------------------------------------
# The generated parts


def stage_settings(page: str) -> str:
    from compress.stages import STAGES
    from compress.stages.base import StageSettings
    from compress.stages.quantize import METHODS

    models = Models()
    for name, stage in STAGES.items():
        if name != "quantize":
            models.register(stage.settings, page, f"stage-{name}")
    for mode, method in METHODS.items():
        models.register(method.settings, page, f"quantize-{mode}")
    shared = tuple(StageSettings.model_fields)

    out = []
    for name, stage in STAGES.items():
        out.append(f"## `{name}` {{#stage-{name}}}\n")
        if name == "quantize":
            out.append(
                "One settings model per method; `mode` picks it, and only that method's fields are accepted. "
                f"Methods: {', '.join(f'[`{m}`](#quantize-{m})' for m in METHODS)}.\n"
            )
            for mode, method in METHODS.items():
                out.append(f"### `mode: {mode}` {{#quantize-{mode}}}\n")
                makes = "the kind the chosen method makes" if method.chooses else f"`{method.makes}`"
                facts = (f"Takes a model of kind `{method.takes}`, makes {makes}. "
                         f"Named `{method.precision}` in sweeps, tables and plots.")
                doc = _docstring(method.settings)
                out.append(" ".join(filter(None, [_escape(doc), facts])) + "\n")
                out.append(settings_table(method.settings, models, page, last=shared) + "\n")
            continue
        doc = _docstring(stage.settings)
        trains = "It trains on the task, so its model is scored on the dev set." if stage.trains else ""
        intro = " ".join(filter(None, [_escape(doc), trains]))
        if intro:
            out.append(intro + "\n")
        out.append(settings_table(stage.settings, models, page, last=shared) + "\n")
    return "\n".join(out)


def recipe_files(page: str) -> str:
    from compress.benchmarking.sweep import Sweep
    from compress.pipeline.recipe import Recipe
    from compress.search.goal import Goal
    from compress.stages import STAGES
    from compress.stages.quantize import METHODS

    models = Models()
    for name, stage in STAGES.items():
        if name != "quantize":
            models.register(stage.settings, "stages.md", f"stage-{name}")
    for mode, method in METHODS.items():
        models.register(method.settings, "stages.md", f"quantize-{mode}")
    sections = [("Recipe file", Recipe), ("Sweep file", Sweep), ("Goal file", Goal)]
    documented: list[type] = []
    for _, top in sections:
        models.register(top, page, top.__name__.lower())
        for nested in _nested_models(top):
            if nested not in models.anchors:
                models.register(nested, page, nested.__name__.lower())
                documented.append(nested)

    out = []
    for title, top in sections:
        out.append(f"## {title}: `{top.__name__}` {{#{top.__name__.lower()}}}\n")
        out.append(f"`{top.__module__}.{top.__name__}`. {_escape(_docstring(top))}".strip() + "\n")
        out.append(settings_table(top, models, page) + "\n")
    out.append("## Sections these files nest\n")
    for nested in documented:
        out.append(f"### `{nested.__name__}` {{#{nested.__name__.lower()}}}\n")
        out.append(f"`{nested.__module__}.{nested.__name__}`. {_escape(_docstring(nested))}".strip() + "\n")
        out.append(settings_table(nested, models, page) + "\n")
    return "\n".join(out)


def sweep_trainings(page: str) -> str:
    """How a sweep grid's `training` values make a student, from the registry of training kinds."""
    from compress.benchmarking.sweep import TRAININGS

    rows = ["| training | stages |", "|---|---|"]
    rows += [f"| `{name}` | {_escape(kind.about)} |" for name, kind in TRAININGS.items()]
    return "\n".join(rows) + "\n"


def cli(page: str) -> str:
    """The command line's own documentation, by Typer's `utils docs`, one heading level down."""
    result = subprocess.run(
        [sys.executable, "-m", "typer", "compress.cli", "utils", "docs", "--name", "compress"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if result.returncode != 0:
        raise PluginError(f"typer utils docs failed: {result.stderr.strip()[-2000:]}")
    lines = []
    command = ""
    for line in result.stdout.splitlines():
        heading = re.match(r"^#+ `(compress[^`]*)`$", line)
        if heading:  # every command a section of its own, in the page's table of contents
            command = heading.group(1)
            line = f"## `{command}`"
        listed = re.match(r"^\* `([\w-]+)`: (.*)$", line)
        in_command_list = lines[-2:] == ["**Commands**:", ""] or (lines and lines[-1].startswith("* [`"))
        if listed and in_command_list:  # a subcommand: link it to its section
            slug = re.sub(r"[^a-z0-9]+", "-", f"{command} {listed.group(1)}").strip("-")
            line = f"* [`{listed.group(1)}`](#{slug}): {listed.group(2)}"
        if line == "* `--help`: Show this message and exit.":
            continue
        lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"\*\*Options\*\*:\n+(?=\*\*|##|$)", "", text)  # left empty once --help is gone
    return text.strip() + "\n"


def _first_paragraph(doc: str | None) -> str:
    return " ".join(doc.strip().split("\n\n")[0].split()) if doc else ""


def modules(page: str) -> str:
    """Every module of the installed packages (compress/ and exporters/), with its docstring's first sentence."""
    rows = ["| module | what it is |", "|---|---|"]
    for package_dir in (ROOT / "compress", ROOT / "exporters"):
        for path in sorted(package_dir.rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            shown = path.relative_to(ROOT).as_posix()
            rows.append(f"| `{shown}` | {_escape(_first_paragraph(doc))} |")
    return "\n".join(rows) + "\n"


def _title(markdown: Path) -> str:
    """A Markdown file's first heading, else its first line (cut short)."""
    lines = [line.strip() for line in markdown.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("# "):
            return line[2:].strip()
    first = lines[0] if lines else ""
    return first if len(first) <= 160 else first[:157] + "..."


def results(page: str) -> str:
    """The folders under bench/results/, each with its Markdown files (and their titles where they have one)."""
    base = ROOT / "bench" / "results"
    rows = ["| folder or file | what it holds |", "|---|---|"]
    for entry in sorted(base.iterdir()):
        shown = entry.relative_to(ROOT).as_posix()
        if entry.is_file():
            if entry.suffix == ".md":
                rows.append(f"| `{shown}` | {_escape(_title(entry))} |")
            continue
        pages = sorted(p for p in entry.rglob("*.md") if "work" not in p.relative_to(entry).parts)
        described = []
        readme = entry / "README.md"
        if readme in pages:
            described.append(f"**README.md**: {_escape(_title(readme))}")
        others = [p.relative_to(entry).as_posix() for p in pages if p != readme]
        if others:
            described.append(", ".join(f"`{o}`" for o in others))
        if not pages:
            described.append("records and plots only (no Markdown file yet)")
        rows.append(f"| `{shown}/` | {'; '.join(described)} |")
    return "\n".join(rows) + "\n"


def _package_units() -> dict[str, list[Path]]:
    """The parts of the installed code, by the name the layering knows them by: each subpackage of
    compress/, each module directly in it, and exporters/ (installed as compress.exporters)."""
    units: dict[str, list[Path]] = {"exporters": sorted((ROOT / "exporters").rglob("*.py"))}
    for path in sorted((ROOT / "compress").iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            units[path.name] = sorted(path.rglob("*.py"))
        elif path.suffix == ".py" and path.name != "__init__.py":
            units[path.stem] = [path]
    return units


def _imported_units(files: list[Path], units: dict) -> set[str]:
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "compress" and len(parts) > 1 and parts[1] in units:
                    found.add(parts[1])
    return found


def layers(page: str) -> str:
    """The code's layers, bottom up, from what each part imports (inside functions too): a part sits one row
    above the highest part it imports. Parts that import each other share a row and are named below."""
    units = _package_units()
    imports = {name: _imported_units(files, units) - {name} for name, files in units.items()}
    reach = {name: set(deps) for name, deps in imports.items()}
    changed = True
    while changed:  # transitive closure; a few dozen parts
        changed = False
        for name in reach:
            more = set().union(*(reach[d] for d in reach[name])) - reach[name]
            if more:
                reach[name] |= more
                changed = True
    group = {name: frozenset({name} | {o for o in reach[name] if name in reach[o]}) for name in units}
    level: dict[frozenset, int] = {}

    def level_of(members: frozenset) -> int:
        if members not in level:
            below = {group[d] for m in members for d in imports[m]} - {members}
            level[members] = 1 + max((level_of(b) for b in below), default=-1)
        return level[members]

    rows: dict[int, list[frozenset]] = {}
    for members in sorted(set(group.values()), key=lambda g: sorted(g)):
        rows.setdefault(level_of(members), []).append(members)

    def label(members: frozenset) -> str:
        return " + ".join(f"{m}/" if len(units[m]) > 1 or m == "exporters" else f"{m}.py" for m in sorted(members))

    lines = []
    for number in sorted(rows, reverse=True):
        lines.append(f"{number:>2}  " + "    ".join(label(m) for m in rows[number]))
    diagram = "```\n" + "\n".join(lines) + "\n```\n"
    table = ["| part | what it is | imports |", "|---|---|---|"]
    for number in sorted(rows, reverse=True):
        for members in rows[number]:
            for m in sorted(members):
                deps = ", ".join(f"`{d}`" for d in sorted(imports[m])) or "nothing of compress"
                main = next((f for f in units[m] if f.name == "__init__.py" and f.parent.name == m), units[m][0])
                doc = _first_paragraph(ast.get_docstring(ast.parse(main.read_text(encoding="utf-8"))))
                table.append(f"| `{label(frozenset({m}))}` | {_escape(doc)} | {deps} |")
    both_ways = [g for g in set(group.values()) if len(g) > 1]
    note = ""
    if both_ways:
        note = "Parts that import each other (directly or through others), and so share a row: " + "; ".join(
            ", ".join(f"`{m}`" for m in sorted(g)) for g in sorted(both_ways, key=sorted)) + ".\n"
    return diagram + "\n" + note + "\n" + "\n".join(table) + "\n"


def registries(page: str) -> str:
    """Every table of named entries (`Registry(...)` at a module's top level), with its entries."""
    import importlib

    rows = ["| registry | in | entries |", "|---|---|---|"]
    for package_dir, dotted in ((ROOT / "compress", "compress"), (ROOT / "exporters", "compress.exporters")):
        for path in sorted(package_dir.rglob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
                targets = (node.targets if isinstance(node, ast.Assign) else [node.target]) if value is not None else []
                if not (isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Registry"):
                    continue
                what = value.args[0].value if value.args and isinstance(value.args[0], ast.Constant) else ""
                parts = [p for p in path.relative_to(package_dir).with_suffix("").parts if p != "__init__"]
                module = importlib.import_module(".".join([dotted, *parts]))
                for target in targets:
                    entries = getattr(module, target.id)
                    names = ", ".join(f"`{name}`" for name in entries)
                    rows.append(f"| `{target.id}`: {_escape(what)} | `{path.relative_to(ROOT).as_posix()}` | {names} |")
    if len(rows) == 2:
        raise PluginError("no Registry(...) found under compress/: the registries page has nothing to show")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------------------------
# Paths the text names


PATH = re.compile(r"^(?:compress|exporters|bench|recipes|tests|docs)/[\w./*-]*$")
DOTTED = re.compile(r"^compress(?:\.\w+)+$")
NOT_COMMITTED = ("bench/runs", "tests/js/node_modules")


def _missing_paths(markdown: str) -> list[str]:
    """Code spans naming a file, folder or Python name of the repository that does not exist."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    missing = []
    packages = {p.name for p in (ROOT / "compress").iterdir() if (p / "__init__.py").exists()}
    spans = []
    for span in re.findall(r"`([^`\n]+)`", text):
        span = re.sub(r"\(.*\)$", "", span.strip())  # `compress.load(folder)`: the name called
        if re.match(r"^(\w+)/[\w/]+\.py$", span) and span.split("/")[0] in packages:
            span = f"compress/{span}"  # `pipeline/graph.py`: a module of a subpackage
        spans.append(span)
    for span in dict.fromkeys(spans):
        if PATH.match(span):
            if span.startswith(NOT_COMMITTED) or "/work/" in span:
                continue
            if not (list(ROOT.glob(span.rstrip("/"))) if "*" in span else (ROOT / span).exists()):
                missing.append(span)
        elif DOTTED.match(span) and not _python_name_exists(span):
            missing.append(span)
    return missing


def _python_name_exists(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = parts[:cut]
        bases = [ROOT / "exporters", *module[2:]] if module[1:2] == ["exporters"] else [ROOT, *module]
        folder = Path(*bases)
        source = folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")
        if source.is_file():
            rest = parts[cut:]
            return not rest or rest[0] in _defined_names(source)
    return False


def _defined_names(source: Path) -> set[str]:
    """The names a module defines at its top level, imports, or lists in `__all__`."""
    names = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def on_config(config):
    readme = ROOT / "README.md"
    for span in _missing_paths(readme.read_text(encoding="utf-8")):
        log.warning("README.md names %s, which does not exist", span)
    return config


GENERATORS = {
    "cli": cli,
    "stage-settings": stage_settings,
    "recipe-files": recipe_files,
    "sweep-trainings": sweep_trainings,
    "modules": modules,
    "results": results,
    "layers": layers,
    "registries": registries,
}


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise PluginError(f"{page.file.src_uri}: unknown generated part '{name}' (known: {', '.join(GENERATORS)})")
        return GENERATORS[name](Path(page.file.src_uri).name)

    markdown = MARKER.sub(replace, markdown)
    for span in _missing_paths(markdown):
        log.warning("%s names %s, which does not exist", page.file.src_uri, span)
    return markdown
