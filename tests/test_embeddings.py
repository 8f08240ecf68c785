"""Sentence embedders: the real all-MiniLM-L6-v2 as an embedder, dropped, distilled on texts alone, exported and
quantized; its vectors checked against sentence-transformers, onnxruntime and transformers.js, its scores against
values computed here independently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression

import compress
from compress.errors import CompressError
from compress.data.loading import HOLDOUT, DataSettings, as_embedding_data, load_task_data
from compress.evaluation.embedding import evaluate_embedder, retrieval_metrics, retrieval_set
from compress.exporters.onnx_runtime import ort_session
from compress.models.artifacts import predictor_for
from compress.models.embedding import Embedding, EmbeddingSettings, mark_embedder, read_embedding
from compress.models.loading import load_encoder, load_tokenizer, resolve_model
from compress.pipeline.cache import read_stage_record
from compress.search.goal import goal_sweep, load_goal
from compress.benchmarking.records import RESULTS_FILE, read_records
from tests.helpers import GLUE, REPO, assert_one_line_error, bench, invoke, write_recipe

SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer
from sentence_transformers.evaluation import InformationRetrievalEvaluator  # noqa: E402  (after the skip)
JS = Path(__file__).resolve().parent / "js"
needs_glue = pytest.mark.skipif(not (GLUE / "STS-B").is_dir(), reason=f"the GLUE files are not at {GLUE}")


def sts_settings(**caps) -> dict:
    return {"source": "glue-dir", "path": str(GLUE), **caps}


def test_pooling_is_read_from_the_sentence_transformers_config():
    assert read_embedding(Path(resolve_model("minilm-l6"))) == Embedding(pooling="mean", normalize=True)
    assert EmbeddingSettings(pooling="cls", normalize=False).resolve("minilm-l6") == Embedding(pooling="cls", normalize=False)
    assert EmbeddingSettings().resolve("minilm-l6") == Embedding(pooling="mean", normalize=True)


def test_a_hub_model_s_pooling_config_is_fetched_and_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # this machine cannot reach the hub; the real download code runs and fails
    with pytest.raises(CompressError, match=r"model: cannot read the pooling config of 'sentence-transformers/all-MiniLM-L6-v2'"):
        EmbeddingSettings().resolve("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def sts_run(module_folder):
    """MiniLM-L6 on STS-B: top-3 dropped, distilled from the full embedder on 256 training pairs' texts, exported, int8."""
    if not (GLUE / "STS-B").is_dir():
        pytest.skip(f"the GLUE files are not at {GLUE}")
    folder = module_folder("sts")
    recipe = {"model": "minilm-l6", "task": "stsb", "embedding": {},
              "data": sts_settings(max_train_examples=256, max_eval_examples=300), "max_length": 64,
              "stages": [{"stage": "drop", "strategy": "top", "k": 3},
                         {"stage": "distill", "teacher": "base", "epochs": 1, "batch_size": 16, "learning_rate": 1e-4},
                         {"stage": "export"},
                         {"stage": "quantize", "mode": "dynamic-int8"}]}
    result = invoke("run", write_recipe(folder, "sts", recipe), "-o", folder / "run")
    assert result.exit_code == 0, result.output
    return folder / "run"


def dev_sentences(count: int = 200) -> list[str]:
    dev = load_task_data("stsb", DataSettings(**sts_settings())).dev["validation"]
    return list(dict.fromkeys(list(dev["text_a"]) + list(dev["text_b"])))[-count:]  # the end: past the run's dev cap


@pytest.mark.slow
def test_distilled_student_is_closer_to_the_teacher_than_the_dropped_one(sts_run):
    sentences = dev_sentences()
    teacher = SentenceTransformer(resolve_model("minilm-l6"), device="cpu").encode(sentences)
    dropped, distilled = (compress.load(sts_run / name)(sentences) for name in ("01-drop", "02-distill"))
    cosine = [float(np.mean(np.sum(v * teacher, axis=1))) for v in (dropped, distilled)]  # all three normalise
    assert cosine[1] > cosine[0] + 0.02, cosine
    notes = read_stage_record(sts_run / "02-distill").notes
    assert notes["loss"] == "vector-mse" and notes["cosine_to_teacher_after"] > notes["cosine_to_teacher_before"]


@pytest.mark.slow
def test_onnx_sentence_embedding_equals_sentence_transformers_encode(sts_run):
    sentences = dev_sentences()
    expected = SentenceTransformer(str(sts_run / "02-distill"), device="cpu").encode(sentences)
    tokenizer = load_tokenizer(sts_run / "03-export")
    session = ort_session(sts_run / "03-export" / "onnx" / "model.onnx")
    names = [i.name for i in session.get_inputs()]
    got = np.concatenate([session.run(["sentence_embedding"], {n: v.astype(np.int64) for n, v in tokenizer(
        sentence, truncation=True, max_length=64, return_tensors="np").items() if n in names})[0] for sentence in sentences])
    assert got.shape == expected.shape == (200, 384)
    assert np.abs(got - expected).max() < 1e-4
    # compress.load runs the exported folder on raw text the same way
    assert np.abs(compress.load(sts_run / "03-export")(sentences) - expected).max() < 1e-4
    assert compress.load(sts_run).is_embedder and compress.load(sts_run).kind == "onnx"


@pytest.mark.slow
def test_sts_spearman_and_retrieval_match_an_independent_computation(sts_run):
    record = read_stage_record(sts_run / "02-distill")
    dev = load_task_data("stsb", DataSettings(**sts_settings(max_train_examples=256, max_eval_examples=300))).dev["validation"]
    model = SentenceTransformer(str(sts_run / "02-distill"), device="cpu")
    first, second = model.encode(list(dev["text_a"])), model.encode(list(dev["text_b"]))
    scores = np.asarray(dev["label"])
    assert record.metrics["spearman_cosine"] == pytest.approx(spearmanr(np.sum(first * second, axis=1), scores).statistic, abs=1e-4)
    # recall@1 and MRR@10, by brute force: each query's relevant text among the split's distinct second texts
    documents = list(dict.fromkeys(dev["text_b"]))
    doc_vectors = model.encode(documents)
    hits, reciprocal = [], []
    for i, (text, score) in enumerate(zip(dev["text_a"], scores)):
        if score < scores.min() + 0.8 * (scores.max() - scores.min()):
            continue
        ranking = [documents[j] for j in np.argsort(-(doc_vectors @ first[i]), kind="stable")]
        rank = ranking.index(dev["text_b"][i]) + 1
        hits.append(rank == 1)
        reciprocal.append(1 / rank if rank <= 10 else 0.0)
    assert len(hits) > 20
    assert record.metrics["recall@1"] == pytest.approx(np.mean(hits), abs=1e-6)
    assert record.metrics["mrr@10"] == pytest.approx(np.mean(reciprocal), abs=1e-6)
    assert 0 < record.metrics["ndcg@10"] <= 1


def test_retrieval_set_takes_the_top_fifth_of_the_score_range():
    queries, documents, relevant = retrieval_set(["a", "b", "c"], ["x", "y", "x"], np.array([5.0, 0.0, 4.1]))
    assert queries == [0, 2] and documents == ["x", "y"] and list(relevant) == [0, 0]


def test_retrieval_metrics_grade_relevance_and_count_every_relevant_document():
    # one query; documents at cosine 1, 0.8 and 0: ranked 0, 1, 2; documents 1 (grade 2) and 2 (grade 1) relevant
    metrics = retrieval_metrics(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.8, 0.6], [0.0, 1.0]]), [{1: 2.0, 2: 1.0}])
    dcg, ideal = 2 / np.log2(3) + 1 / np.log2(4), 2 + 1 / np.log2(3)
    assert metrics["ndcg@10"] == pytest.approx(dcg / ideal)
    assert (metrics["mrr@10"], metrics["recall@1"], metrics["recall@10"]) == (0.5, 0.0, 1.0)


@pytest.fixture(scope="module")
def rte_passages(module_folder) -> Path:
    """A small retrieval set in BEIR's layout, as bench/glue_retrieval.py builds it from RTE: 60 dev claims and 40
    training ones, each relevant to the passage it was written about, among the passages of all 100."""
    if not (GLUE / "RTE").is_dir():
        pytest.skip(f"the GLUE files are not at {GLUE}")
    folder = module_folder("beir") / "rte-passages"
    run = subprocess.run([sys.executable, "bench/glue_retrieval.py", "--glue", str(GLUE), "--out", str(folder),
                          "--max-train", "40", "--max-dev", "60"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return folder


def beir_settings(folder: Path, **settings) -> DataSettings:
    return DataSettings(source="beir-dir", path=folder, **settings)


def test_a_retrieval_folder_is_scored_as_sentence_transformers_own_evaluator_scores_it(rte_passages, tokenizer):
    data = load_task_data("rte-passages", beir_settings(rte_passages), embedder=True)
    judged = lambda split: (rte_passages / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    assert data.task.primary_metric == "ndcg@10" and list(data.dev) == ["dev"]
    assert (len(data.train), len(data.dev["dev"])) == (len(judged("train")), len(judged("dev")))
    embedder = mark_embedder(load_encoder("minilm-l6"), Embedding(pooling="mean", normalize=True))
    ours = evaluate_embedder(predictor_for(embedder), data, tokenizer, 256, 32)  # all-MiniLM-L6-v2's max_seq_length
    # the files read here on their own, scored by sentence-transformers' InformationRetrievalEvaluator
    read = lambda name: {r["_id"]: r["text"] for r in map(json.loads, (rte_passages / name).read_text().splitlines())}
    relevant: dict[str, set[str]] = {}
    for line in judged("dev"):
        query, document, _ = line.split("\t")
        relevant.setdefault(query, set()).add(document)
    theirs = InformationRetrievalEvaluator(read("queries.jsonl"), read("corpus.jsonl"), relevant, mrr_at_k=[10], ndcg_at_k=[10],
                                           accuracy_at_k=[1], precision_recall_at_k=[1, 10], map_at_k=[10], write_csv=False)(
        SentenceTransformer(resolve_model("minilm-l6"), device="cpu"))
    assert len(relevant) > 50 and len(read("corpus.jsonl")) > 90
    for name in ("ndcg@10", "mrr@10", "recall@1", "recall@10"):
        assert ours[name] == pytest.approx(theirs[f"cosine_{name}"], abs=1e-3), name
    assert 0 < ours["ndcg@10_stderr"] < 0.1


def test_a_retrieval_set_is_held_out_and_capped_by_whole_queries(rte_passages):
    data = load_task_data("rte-passages", beir_settings(rte_passages, holdout=0.25), embedder=True)
    held, kept = set(data.dev[HOLDOUT]["text_a"]), set(data.train["text_a"])
    assert round(0.25 * len(held | kept)) == len(held) and not held & kept
    whole = load_task_data("rte-passages", beir_settings(rte_passages), embedder=True).train
    assert sorted(data.dev[HOLDOUT]["text_b"]) == sorted(b for a, b in zip(whole["text_a"], whole["text_b"]) if a in held)
    capped = load_task_data("rte-passages", beir_settings(rte_passages, max_eval_examples=7), embedder=True).dev["dev"]
    assert len(set(capped["text_a"])) == 7


@pytest.mark.parametrize("damage, expected", [
    (lambda folder: (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq0\tnowhere\t1\n"),
     ("qrels/dev.tsv, line 2", "corpus-id 'nowhere' is not in corpus.jsonl")),
    (lambda folder: (folder / "qrels" / "dev.tsv").unlink(), ("qrels", "no relevance judgements", "dev.tsv")),
    (lambda folder: (folder / "queries.jsonl").write_text('{"id": "q0", "text": "a claim"}\n'), ("queries.jsonl", "column '_id' not found")),
])
def test_a_damaged_retrieval_folder_gets_one_line(rte_passages, tmp_path, damage, expected):
    folder = tmp_path / "set"
    shutil.copytree(rte_passages, folder)
    damage(folder)
    recipe = {"model": "minilm-l6", "task": "mine", "embedding": {}, "data": {"source": "beir-dir", "path": str(folder)},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "bad", recipe)), "bad.yaml", *expected)


def test_a_retrieval_set_without_an_embedder_gets_one_line(rte_passages, tmp_path):
    recipe = {"model": "minilm-l6", "task": "mine", "data": {"source": "beir-dir", "path": str(rte_passages)},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "classifier", recipe)), "retrieval set", "embedding")


def test_without_training_judgements_the_documents_are_the_texts_to_learn_from(rte_passages, tmp_path):
    folder = tmp_path / "no-train"
    shutil.copytree(rte_passages, folder)
    (folder / "qrels" / "train.tsv").unlink()
    data = load_task_data("mine", beir_settings(folder), embedder=True)
    assert data.train["text_a"] == data.corpus and "text_b" not in data.train.column_names
    recipe = {"model": "minilm-l6", "task": "mine", "embedding": {}, "data": {"source": "beir-dir", "path": str(folder), "holdout": 0.1},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}, {"stage": "distill", "teacher": "base"}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "held", recipe)), "holdout", "qrels/train.tsv")


def test_classification_on_frozen_vectors_is_a_logistic_regression(tokenizer):
    data = as_embedding_data(load_task_data("rotten-tomatoes", DataSettings(source="embedded", max_train_examples=600,
                                                                             max_eval_examples=200)))
    embedder = mark_embedder(load_encoder("minilm-l6"), Embedding(pooling="mean", normalize=True))
    metrics = evaluate_embedder(predictor_for(embedder), data, tokenizer, 128, 32)
    model = SentenceTransformer(resolve_model("minilm-l6"), device="cpu")
    probe = LogisticRegression(max_iter=1000).fit(model.encode(list(data.train["text_a"])), data.train["label"])
    dev = data.dev["validation"]
    expected = float(np.mean(probe.predict(model.encode(list(dev["text_a"]))) == np.asarray(dev["label"])))
    assert metrics["accuracy"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.6  # the embedder's vectors carry the reviews' sentiment


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_transformers_js_feature_extraction_gives_the_onnxruntime_vectors(sts_run, tmp_path):
    assert (JS / "node_modules" / "@huggingface" / "transformers").is_dir(), "make test installs tests/js (npm ci)"
    sentences = dev_sentences()
    (tmp_path / "sentences.json").write_text(json.dumps(sentences))
    folder = sts_run / "03-export"
    node = subprocess.run(["node", JS / "embed.mjs", folder, tmp_path / "sentences.json", "mean", "true"],
                          capture_output=True, text=True, cwd=JS, timeout=300, env={**os.environ, "NODE_NO_WARNINGS": "1"})
    assert node.returncode == 0, node.stderr
    in_node = np.array(json.loads(node.stdout))
    in_python = compress.load(folder, batch_size=1)(sentences)
    assert in_node.shape == in_python.shape == (200, 384)
    assert np.abs(in_node - in_python).max() < 1e-4


@pytest.mark.parametrize("change, expected", [
    ({"stages": [{"stage": "finetune"}]}, ("stages[0].stage", "finetune", "distill")),
    ({"task": None}, ("embedding", "name the task")),
    ({"embedding": {"pooling": "sum"}}, ("embedding.pooling", "mean")),
    ({"embedding": None, "stages": [{"stage": "distill", "teacher": "base"}]}, ("teacher", "base")),
])
def test_settings_of_the_other_kind_get_one_line(tmp_path, change, expected):
    recipe = {"model": "minilm-l6", "task": "rotten-tomatoes", "embedding": {}, "data": {"source": "embedded"},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}]}
    recipe.update(change)
    recipe = {key: value for key, value in recipe.items() if value is not None}
    if "task" not in recipe:
        recipe.pop("data")
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "bad", recipe)), "bad.yaml", *expected)


def test_sentences_without_an_embedder_and_an_embedder_without_a_pooling_config_get_one_line(tmp_path):
    (tmp_path / "texts.txt").write_text("one text\nanother\n")
    recipe = {"model": "minilm-l6", "task": "rotten-tomatoes", "data": {"source": "embedded"},
              "stages": [{"stage": "finetune", "name": "teacher"},
                         {"stage": "distill", "from": "base", "teacher": "teacher", "sentences": str(tmp_path / "texts.txt")}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "classifier", recipe)), "sentences", "embedding")
    bare = tmp_path / "bare"
    load_encoder("minilm-l6").save_pretrained(bare)  # config and weights, no sentence-transformers files
    load_tokenizer("minilm-l6").save_pretrained(bare)
    recipe = {"model": str(bare), "task": "rotten-tomatoes", "embedding": {}, "data": {"source": "embedded"},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "bare", recipe)), "embedding.pooling", "sentence-transformers")


def test_single_text_scores_are_no_embedding_task(tmp_path):
    rows = "".join(f'{{"text": "text {i}", "score": {i / 10}}}\n' for i in range(10))
    (tmp_path / "train.jsonl").write_text(rows)
    (tmp_path / "dev.jsonl").write_text(rows)
    recipe = {"model": "minilm-l6", "task": "mine", "embedding": {},
              "data": {"source": "files", "train": str(tmp_path / "train.jsonl"), "dev": str(tmp_path / "dev.jsonl"),
                       "text_columns": ["text"], "label_column": "score", "regression": True},
              "stages": [{"stage": "drop", "strategy": "top", "k": 2}]}
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "single", recipe)), "embedding", "scored sentence pairs")


@needs_glue
def test_every_kind_of_embedder_folder_loads_and_gives_the_vectors_of_its_source(tmp_path):
    """No training: the cut embedder in PyTorch, ONNX (static int8 too), OpenVINO (int8) and torch int8, each loaded by
    compress.load and compared with the PyTorch folder's vectors on real sentences."""
    recipe = {"model": "minilm-l6", "task": "stsb", "embedding": {}, "data": sts_settings(max_train_examples=64, max_eval_examples=64),
              "max_length": 64,
              "stages": [{"stage": "drop", "strategy": "top", "k": 3}, {"stage": "export"},
                         {"stage": "quantize", "name": "static", "mode": "static-int8", "calibration_examples": 64},
                         {"stage": "quantize", "name": "openvino", "from": "02-export", "mode": "openvino-int8", "calibration_examples": 64},
                         {"stage": "quantize", "name": "torch-int8", "from": "01-drop", "mode": "torch-dynamic-int8"}]}
    result = invoke("run", write_recipe(tmp_path, "kinds", recipe), "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    sentences = dev_sentences(64)
    reference = compress.load(tmp_path / "run" / "01-drop")(sentences)
    assert np.abs(compress.load(tmp_path / "run" / "02-export")(sentences) - reference).max() < 1e-4
    for name, kind in (("static", "onnx"), ("openvino", "openvino"), ("torch-int8", "torch-int8")):
        model = compress.load(tmp_path / "run" / name)
        vectors = model(sentences)
        assert model.kind == kind and vectors.shape == reference.shape
        assert np.sum(vectors * reference, axis=1).min() > 0.93, name  # int8: near, not equal


def test_a_sweep_of_embedders_measures_the_full_embedder_and_the_cut_ones(tmp_path):
    sweep = {"name": "embedders", "models": ["minilm-l6"], "embedding": {},
             "tasks": {"rotten-tomatoes": {"source": "embedded", "max_train_examples": 200, "max_eval_examples": 100}},
             "max_length": 64, "latency": {"batch_sizes": [1], "repeats": 3, "warmup": 0, "task_lengths": False},
             "grids": [{"strategies": ["top", "bottom"], "k": [3], "training": ["none"], "precisions": ["torch-fp32"]}]}
    file = tmp_path / "embedders.yaml"
    file.write_text(yaml.safe_dump(sweep))
    result = bench(file, "--out", tmp_path / "out", "--no-peak-memory")
    assert result.exit_code == 0, result.output
    records = {r.key: r for r in read_records(tmp_path / "out" / RESULTS_FILE)}
    assert all(r.status == "ok" for r in records.values()), {k: r.error for k, r in records.items()}
    assert set(records) == {"minilm-l6|rotten-tomatoes|full|k0|none|torch-fp32", "minilm-l6|rotten-tomatoes|full|k0|none|onnx-int8-dynamic",
                            "minilm-l6|rotten-tomatoes|top|k3|none|torch-fp32", "minilm-l6|rotten-tomatoes|bottom|k3|none|torch-fp32"}
    full = records["minilm-l6|rotten-tomatoes|full|k0|none|torch-fp32"]
    assert full.layers == 6 and full.primary_metric == "accuracy" and full.score > 0.6  # a linear probe on the full embedder
    sweep["grids"][0]["training"] = ["finetune"]
    file.write_text(yaml.safe_dump(sweep))
    assert_one_line_error(invoke("check", file), "grids[0].training", "'finetune' cannot train embedders")


def test_a_goal_for_an_embedder_distils_and_refuses_fine_tuning(tmp_path):
    goal = {"model": "minilm-l6", "task": "rotten-tomatoes", "data": {"source": "embedded"}, "embedding": {}, "max_score_drop": 1.0}
    file = tmp_path / "goal.yaml"
    file.write_text(yaml.safe_dump(goal))
    assert invoke("check", file).exit_code == 0
    assert load_goal(file).trainings == ["distill"]
    assert goal_sweep(load_goal(file)).full_training == "none"
    file.write_text(yaml.safe_dump({**goal, "search": {"training": ["finetune"]}}))
    assert_one_line_error(invoke("check", file), "goal.yaml", "'finetune' cannot train embedders")
