"""A retrieval set built from GLUE's RTE, laid out as BEIR and MTEB lay one out (corpus.jsonl, queries.jsonl,
qrels/<split>.tsv), into a folder outside the repository's tracked files (the GLUE data is never copied into it).

Each RTE hypothesis is a short claim written about a news or Wikipedia passage (its premise), whether the passage
entails it or not: the claim is a query, the passages it was written about (one, for most claims; a recurring claim
has several, in either file) its relevant documents, and the corpus is every distinct passage of the training and
dev files. Short queries against long passages, as in search; train and dev claims
keep their own splits, so a model distilled on the training texts never sees a dev query.

    .venv/bin/python bench/glue_retrieval.py --glue ../shared/glue --out bench/runs/rte_passages
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.data.loading import BEIR_FILES, QRELS, QRELS_COLUMNS, TRAIN_QRELS, DataSettings, load_task_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue", type=Path, default=Path("../shared/glue"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-train", type=int, default=None, help="the first N training examples only (a small set for tests)")
    parser.add_argument("--max-dev", type=int, default=None, help="the first N dev examples only")
    args = parser.parse_args()
    data = load_task_data("rte", DataSettings(source="glue-dir", path=args.glue))
    dev = data.dev["validation"]
    splits = {TRAIN_QRELS: data.train.select(range(min(args.max_train or len(data.train), len(data.train)))),
              "dev.tsv": dev.select(range(min(args.max_dev or len(dev), len(dev))))}
    passages = {text: f"d{i}" for i, text in enumerate(dict.fromkeys(p for split in splits.values() for p in split["text_a"]))}
    claims = {text: f"q{i}" for i, text in enumerate(dict.fromkeys(c for split in splits.values() for c in split["text_b"]))}
    (args.out / QRELS).mkdir(parents=True, exist_ok=True)
    for name, ids in zip(BEIR_FILES, (passages, claims)):
        with (args.out / name).open("w", encoding="utf-8") as out:
            out.writelines(json.dumps({"_id": id_, "text": text}) + "\n" for text, id_ in ids.items())
    written_about: dict[str, dict[str, None]] = {}  # a claim (some recur) -> every passage it was written about
    for examples in splits.values():
        for passage, claim in zip(examples["text_a"], examples["text_b"]):
            written_about.setdefault(claim, {})[passage] = None
    for file, examples in splits.items():
        judged = [(claims[c], passages[p]) for c in dict.fromkeys(examples["text_b"]) for p in written_about[c]]
        lines = ["\t".join(QRELS_COLUMNS)] + [f"{query}\t{document}\t1" for query, document in judged]
        (args.out / QRELS / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{file}: {len(dict.fromkeys(examples['text_b'])):,} claims, {len(judged):,} judgements")
    print(f"{len(passages):,} passages, {len(claims):,} claims of RTE -> {args.out}")


if __name__ == "__main__":
    main()
