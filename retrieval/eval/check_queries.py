#!/usr/bin/env python3
"""Validate a retrieval query set (JSONL) against a corpus folder.

Usage: check_queries.py QUERIES.jsonl CORPUS_DIR
Checks: JSON parses, keys are exactly id/query/relevant, ids and queries are
unique, grades are 1 or 2, each query has a grade-2 document, and every judged
id is a file under CORPUS_DIR. Prints counts; exits 1 on any error.
"""
import json
import os
import sys
from collections import Counter


def main(path, corpus):
    errors, ids, queries = [], set(), set()
    grades, top = Counter(), Counter()
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"{where}: bad JSON: {e}")
                continue
            n += 1
            if not isinstance(obj, dict) or set(obj) != {"id", "query", "relevant"}:
                errors.append(f"{where}: keys must be exactly id, query, relevant")
                continue
            qid, query, rel = obj["id"], obj["query"], obj["relevant"]
            where = f"line {lineno} ({qid})"
            if qid in ids:
                errors.append(f"{where}: duplicate id")
            ids.add(qid)
            if not isinstance(query, str) or not query.strip():
                errors.append(f"{where}: empty query")
            elif query in queries:
                errors.append(f"{where}: duplicate query")
            queries.add(query)
            if not isinstance(rel, dict) or not rel:
                errors.append(f"{where}: relevant must be a non-empty object")
                continue
            for doc, g in rel.items():
                if g not in (1, 2) or isinstance(g, bool):
                    errors.append(f"{where}: grade {g!r} for {doc} is not 1 or 2")
                if not os.path.isfile(os.path.join(corpus, doc)):
                    errors.append(f"{where}: {doc} is not a file under {corpus}")
                grades[g] += 1
                if g == 2:
                    top[doc] += 1
            if 2 not in rel.values():
                errors.append(f"{where}: no grade-2 document")
    print(f"{n} queries, {sum(grades.values())} judgements: "
          f"{grades[2]} at grade 2, {grades[1]} at grade 1; "
          f"{len(top)} distinct grade-2 documents, most used: {top.most_common(3)}")
    for e in errors:
        print("ERROR", e)
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2]))
