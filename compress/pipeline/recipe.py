"""Recipes: a YAML file naming a model, a task with its data, and an ordered list of stages.

A recipe is validated whole before any work starts: first its shape (unknown keys, types,
values), then what needs the model's config (architecture supported, every K fits the layers
left at that point of the chain) and the data files (present, with the columns named).
"""

from __future__ import annotations

import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.data.loading import DataSettings, TaskData, load_task_data
from compress.data.seeds import Seed
from compress.errors import CompressError, excerpt
from compress.folders import FINAL, RECIPE_FILE, RUN_SUMMARY_FILE, check_folder_name
from compress.models.artifacts import base_kind
from compress.models.embedding import EmbeddingSettings
from compress.models.loading import check_weights, load_config, load_tokenizer
from compress.stages import STAGES
from compress.stages.base import BASE_MODEL
from compress.stages.quantize import METHODS
from compress.surgery.architectures import check_max_length, layout_for, num_layers

BASE = BASE_MODEL
"""The name a stage's `from` uses for the pre-trained model itself."""
RESERVED_NAMES = (BASE, FINAL, RECIPE_FILE, RUN_SUMMARY_FILE)
"""Names a stage cannot take: 'base', and what a run folder holds beside the stage folders."""
MAX_YAML_VALUES = 100_000
"""Values (scalars and items) a recipe or sweep file may expand to: far above any real one, far below
what YAML aliases of aliases can blow a few lines up to."""
MAX_YAML_BYTES = 1_000_000
"""Bytes a recipe or sweep file may hold: real ones hold a few thousand."""
EXTENDS_KEY = "extends"
"""The field by which a recipe, sweep or goal file builds on another (`read_yaml_with_bases`)."""
MAX_EXTENDS = 20
"""Files a chain of `extends:` may pass through: real variants build on a file or two."""

AnyStage = Annotated[Union[tuple(stage.settings for stage in STAGES.values())], Field(discriminator="stage")]


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Run name; default: the recipe file's name.")
    description: str | None = None
    model: str = Field(description="Alias (minilm-l6, mpnet-12), local folder or Hugging Face hub id.")
    task: str | None = Field(None, description="GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli), "
                             "rotten-tomatoes (embedded), or your own name with data.source: files. Left out, the "
                             "stages may only drop layers by a fixed strategy, and the model keeps the head it has.")
    data: DataSettings = Field(default_factory=DataSettings)
    embedding: EmbeddingSettings | None = Field(
        None, description="Make a sentence embedder (the encoder and its pooling) rather than a classifier: scored on "
        "its vectors, distilled from the full embedder on texts alone (`{}`: pooling as the model's sentence-transformers "
        "config says).")
    max_length: int = Field(128, ge=8, description="Tokens per example, for training and evaluation.")
    eval_batch_size: int = Field(64, ge=1)
    seed: Seed = Field(42, description="Seeds the new classification head of the pre-trained model.")
    stages: list[AnyStage] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return None if name is None else check_folder_name(name, "name")

    @model_validator(mode="after")
    def _data_needs_a_task(self):
        if self.task is None and "data" in self.model_fields_set:
            raise ValueError("data: given without a task; name the task (task:) these data are for")
        return self

    @model_validator(mode="after")
    def _stage_names_and_sources(self):
        seen: list[str] = [BASE]
        for index, stage in enumerate(self.stages):
            stage.name = check_folder_name(stage.name or f"{index + 1:02d}-{stage.stage}", f"stages[{index}].name")
            if stage.name in seen or stage.name in RESERVED_NAMES:
                raise ValueError(f"stages[{index}].name: '{stage.name}' is used twice or reserved ({', '.join(RESERVED_NAMES)})")
            if stage.source is not None and stage.source not in seen:
                raise ValueError(
                    f"stages[{index}].from: expected '{BASE}' or an earlier stage's name "
                    f"({', '.join(seen)}), got '{stage.source}'"
                )
            seen.append(stage.name)
        return self

    @model_validator(mode="after")
    def _embedding_needs_a_task(self):
        if self.embedding is not None and self.task is None:
            raise ValueError("embedding: an embedder is scored on a task's texts; name the task (task:) too")
        return self

    def load_data(self) -> TaskData | None:
        """The task's examples (None without a task), as an embedder takes them where the recipe makes one."""
        if self.task is None:
            return None
        return load_task_data(self.task, self.data, embedder=self.embedding is not None)

    def chain(self, last: str) -> list:
        """The stages that lead from the model to stage `last`, in order (following `from`; a stage read,
        such as a teacher, is not on the chain)."""
        index_of = {stage.name: i for i, stage in enumerate(self.stages)}
        stages, name = [], last
        while name != BASE:
            stages.append(self.stages[index_of[name]])
            name = self.source_of(index_of[name])
        return stages[::-1]

    def source_of(self, index: int) -> str:
        """Name of the model stage `index` starts from: 'base' or an earlier stage."""
        stage = self.stages[index]
        if stage.source is not None:
            return stage.source
        return BASE if index == 0 else self.stages[index - 1].name


TAGS = {"stage": list(STAGES), "mode": list(METHODS)}
"""Fields whose value picks a settings model (a stage; a quantization method), and the values they take."""


def recipe_yaml(recipe: Recipe) -> str:
    """The recipe as YAML a person reads and `compress check` accepts: settings at their defaults are left out,
    except the fields that pick a stage's kind (its stage; a quantize stage's mode)."""
    content = recipe.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    content["stages"] = [{**{tag: getattr(stage, tag) for tag in TAGS if hasattr(stage, tag)}, **dumped}
                         for stage, dumped in zip(recipe.stages, content["stages"])]
    return yaml.safe_dump(content, sort_keys=False)


def _field_path(location: tuple[Any, ...]) -> str:
    path = ""
    for index, part in enumerate(location):
        if isinstance(part, int):
            path += f"[{part}]"
        elif location[0] == "stages" and index >= 2 and (part in STAGES or part in METHODS):
            continue  # the tags pydantic inserts into a stage's location: its stage, a quantize stage's mode
        else:
            path += f".{part}" if path else str(part)
    return path


UNKNOWN_TAG_ERRORS = ("union_tag_invalid", "union_tag_not_found")


def _tag_field(error: dict[str, Any]) -> str:
    return error["ctx"]["discriminator"].strip("'")


def _describe(error: dict[str, Any]) -> str:
    if error["type"] in UNKNOWN_TAG_ERRORS:
        tag = _tag_field(error)
        return f"expected one of {', '.join(TAGS[tag])}" + (
            f" (got {excerpt(error['input'].get(tag))})" if isinstance(error["input"], dict) else ""
        )
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required field is missing"
    message = error["msg"]
    if error["type"].startswith(("literal_", "int_", "float_", "bool_", "string_", "greater", "less")):
        message += f" (got {excerpt(error['input'])})"
    return message.removeprefix("Value error, ")


def format_validation_error(where: str | Path, error: ValidationError) -> str:
    problems = []
    for e in error.errors():
        path = _field_path(e["loc"]) + (f".{_tag_field(e)}" if e["type"] in UNKNOWN_TAG_ERRORS else "")
        problems.append(": ".join(filter(None, (path, _describe(e)))))
    return f"{where}: " + "; ".join(problems)


def _too_many_values(content: Any) -> bool:
    """Whether `content` holds more than MAX_YAML_VALUES values, counted as expanded (stops early)."""
    pending, seen = [content], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            return True
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, but a key given twice in one mapping is an error: PyYAML keeps the last silently (a
    second `stages:` would drop the first list). Keys a merge (`<<: *anchor`) brings in may be overridden."""

    def construct_mapping(self, node, deep=False):
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the safe loader refuses it itself
                continue
            if key in first_lines:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {excerpt(key)} given twice (first at line {first_lines[key] + 1}); expected each key once",
                    key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _read_text(file: Path, kind: str) -> str:
    """The text of a regular file of at most MAX_YAML_BYTES: a device, pipe or huge file is refused before it is read."""
    try:
        status = file.stat()
    except FileNotFoundError:
        raise CompressError(f"{file}: no such {kind} file") from None
    except OSError as error:
        raise CompressError(f"{file}: cannot read ({error.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise CompressError(f"{file}: is a folder; expected a {kind} file")
    if not stat.S_ISREG(status.st_mode):
        raise CompressError(f"{file}: not a regular file (a device, pipe or socket); expected a YAML {kind} file")
    try:
        with file.open("rb") as lines:
            content = lines.read(MAX_YAML_BYTES + 1)  # bounded: the file may grow after stat
    except OSError as error:
        raise CompressError(f"{file}: cannot read ({error.strerror})") from None
    if len(content) > MAX_YAML_BYTES:
        raise CompressError(f"{file}: more than {MAX_YAML_BYTES:,} bytes; expected a YAML {kind} file a person can read")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CompressError(f"{file}: not UTF-8 text (byte {error.start}); expected a YAML {kind} file") from None


def read_yaml(file: Path, kind: str) -> Any:
    """The content of a YAML file (a recipe, a sweep or a goal), each file it extends laid under it
    (`read_yaml_with_bases`); every problem is one line naming the file."""
    return read_yaml_with_bases(file, kind)[0]


def read_yaml_with_bases(file: Path, kind: str) -> tuple[Any, list[Path]]:
    """The content of a YAML file and the files it builds on, nearest first.

    A mapping with `extends: <file>` (a path relative to this file) is that file's content with this one's laid
    over it (`laid_over`), so a variant, such as a sweep again with another training seed, writes only what it
    changes. The base's `name:` is not inherited: two files sharing a name would share a results folder."""
    contents, files = [_parse_yaml(file, kind)], [file]
    read = {file.resolve()}  # read already, so it resolves
    while isinstance(contents[-1], dict) and EXTENDS_KEY in contents[-1]:
        current, base_name = files[-1], contents[-1].pop(EXTENDS_KEY)
        where = f"{file}: {EXTENDS_KEY}" + (f" (through {current})" if current != file else "")
        if not isinstance(base_name, str) or not base_name.strip() or "\0" in base_name:
            raise CompressError(f"{where}: expected the path of a {kind} file to build on, relative to the file "
                                f"(got {excerpt(base_name)})")
        if len(files) > MAX_EXTENDS:
            raise CompressError(f"{where}: more than {MAX_EXTENDS} files deep; expected a base a few files away")
        base_file = current.parent / base_name
        try:
            resolved = base_file.resolve()
        except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before Python 3.13)
            raise CompressError(f"{where}: {base_file}: cannot be read ({error})") from None
        if resolved in read:
            raise CompressError(f"{where}: {base_name} leads back to a file already read; expected a chain of files that ends")
        try:
            contents.append(_parse_yaml(base_file, kind))
        except CompressError as error:
            raise CompressError(f"{where}: {error}") from None
        if not isinstance(contents[-1], dict):
            raise CompressError(f"{where}: {base_file} holds no mapping to build on")
        files.append(base_file)
        read.add(resolved)
    merged = contents.pop()
    try:
        for content in reversed(contents):
            merged.pop("name", None)
            merged = laid_over(merged, content)
    except RecursionError:
        raise CompressError(f"{file}: nested too deeply to be a {kind}") from None
    return merged, files[1:]


def recipe_file_text(file: Path) -> str:
    """What a run keeps of its recipe file (beside the run, in model cards): the text as written, or for a file that
    extends another, the recipe it stands for written out, as the base's path need not resolve from there."""
    content, bases = read_yaml_with_bases(file, "recipe")
    if not bases:
        return _read_text(file, "recipe")
    laid = " over ".join(map(str, [file, *bases]))
    return f"# {laid}, written out\n" + yaml.safe_dump(content, sort_keys=False)


def laid_over(base: dict, over: dict) -> dict:
    """`over` laid over `base` as a JSON Merge Patch (RFC 7396) lays it: a mapping merges key by key, a key set to
    null is removed (so a variant can take out, say, one of the base's tasks), anything else (a list, a value) replaces."""
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict):
            merged[key] = laid_over(merged[key] if isinstance(merged.get(key), dict) else {}, value)
        else:
            merged[key] = value
    return merged


def _parse_yaml(file: Path, kind: str) -> Any:
    try:
        content = yaml.load(_read_text(file, kind), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CompressError(f"{file}: not valid YAML{where}: {str(getattr(error, 'problem', error))[:200]}") from None
    except RecursionError:
        raise CompressError(f"{file}: nested too deeply to be a {kind}") from None
    if _too_many_values(content):
        raise CompressError(f"{file}: expands to more than {MAX_YAML_VALUES:,} values (YAML aliases?); expected a {kind} a person can read")
    return content


def validate_yaml_file(file: Path, schema: type[BaseModel], kind: str, top_keys: str) -> BaseModel:
    """Read a YAML file into `schema`; every error is one line naming the file and the field."""
    content, bases = read_yaml_with_bases(file, kind)
    if not isinstance(content, dict):
        raise CompressError(f"{file}: expected a mapping with {top_keys} at the top")
    try:
        return schema.model_validate(content)
    except ValidationError as error:  # a field may come from a base: say which files the content is
        where = f"{file} (laid over {', '.join(map(str, bases))})" if bases else file
        raise CompressError(format_validation_error(where, error)) from None


def named_after_file(document, file: Path):
    """A recipe or sweep without `name:` takes its file's name (which must then be a plain folder name)."""
    if document.name is None:
        try:
            document.name = check_folder_name(file.stem, "name")
        except ValueError as error:
            raise CompressError(f"{file}: {error} (the name comes from the file name unless the file sets name:)") from None
    return document


def parse_recipe(file: Path) -> Recipe:
    return named_after_file(validate_yaml_file(file, Recipe, "recipe", "model, task and stages"), file)


def recipe_from_mapping(content: dict, where: str) -> Recipe:
    """A recipe assembled elsewhere (e.g. from command-line options), validated like a file."""
    try:
        return Recipe.model_validate(content)
    except ValidationError as error:
        raise CompressError(format_validation_error(where, error)) from None


def check_recipe(recipe: Recipe, file: Path | str) -> TaskData | None:
    """The checks that need the model's config and the data: all before any work starts. Returns the data
    (None for a recipe without a task)."""
    try:
        config = load_config(recipe.model)
        layout_for(config)
        check_max_length(config, recipe.max_length, "max_length")
        check_weights(recipe.model)
        if base_kind(recipe.model) == "torch":
            load_tokenizer(recipe.model)
        if recipe.embedding is not None:
            recipe.embedding.resolve(recipe.model)
        data = recipe.load_data()
    except CompressError as error:
        raise CompressError(f"{file}: {error}") from None

    layers_after = {BASE: num_layers(config)}
    kinds = {BASE: base_kind(recipe.model)}
    for index, stage in enumerate(recipe.stages):
        where = f"{file}: stages[{index}]"
        source = recipe.source_of(index)
        if kinds[source] != stage.input_kind():
            hint = "; add an export stage before it" if stage.input_kind() == "onnx" else ""
            raise CompressError(
                f"{where}: {stage.stage} needs a model of kind '{stage.input_kind()}', "
                f"but '{source}' is of kind '{kinds[source]}'{hint}"
            )
        if data is None and (use := stage.task_data_use()):
            raise CompressError(f"{where}: {stage.stage} {use}; name a task (task:, or --task) or leave the stage out")
        if problem := stage.kind_problem(recipe.embedding is not None):
            raise CompressError(f"{where}.{problem}")
        try:
            stage.check_chain(config, layers_after[source], len(data.train) if data else 0)
        except CompressError as error:
            raise CompressError(f"{where}.{error}") from None
        for field, ref in stage.model_references().items():
            if ref == BASE and recipe.embedding is not None:
                continue  # the full embedder is a teacher as it is
            if ref == BASE:
                raise CompressError(f"{where}.{field}: '{BASE}' has no trained head; name a fine-tuned stage or model")
            later = [s.name for s in recipe.stages[index:]]
            if ref in later:
                raise CompressError(f"{where}.{field}: '{ref}' runs at or after this stage; name an earlier stage")
            if ref in kinds:
                if kinds[ref] != "torch":
                    raise CompressError(f"{where}.{field}: '{ref}' is a {kinds[ref]} model; a torch model is needed")
            else:
                try:
                    check_weights(ref)
                except CompressError as error:
                    raise CompressError(f"{where}.{field}: {str(error).removeprefix('model: ')}") from None
        layers_after[stage.name] = stage.layers_after(layers_after[source])
        kinds[stage.name] = stage.output_kind()
    return data


def load_recipe(file: Path) -> Recipe:
    recipe = parse_recipe(file)
    check_recipe(recipe, file)
    return recipe
