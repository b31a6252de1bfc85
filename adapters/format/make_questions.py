"""Questions with known answers, generated from the git documentation corpus, for training the
format adapter (see README.md next to this file).

Each git-<command>.txt page yields questions of three kinds:
- what the command is for, from its NAME line ("git-bisect - Use binary search to find the
  commit that introduced a bug"), asked both ways ("What does git bisect do?", "Which git
  command can I use to find the commit that introduced a bug?");
- what it does, from the first sentence of its DESCRIPTION;
- its options, subcommands and configuration variables: the AsciiDoc definition lists
  `term::` followed by an indented description.
The answer is that sentence and the quote is the sentence exactly as it stands in the page (up
to whitespace), so the server's quote check can verify it.

Usage: python3 adapters/format/make_questions.py CORPUS_DIR OUT.jsonl
Deterministic: the same corpus gives the same file.
"""

import json
import pathlib
import random
import re
import sys

PER_PAGE = 2  # option/subcommand/variable questions per page
SEED = 7

TERM = re.compile(r"^(\S[^\n]*?)::\s*$")
CONFIG_VARIABLE = re.compile(r"^[a-z][a-zA-Z]*\.[a-zA-Z.<>*]+$")
OPTION = re.compile(r"^--?[a-zA-Z][-a-zA-Z0-9\[\]]*")

TEMPLATES = {
    "option": [
        "What does the {term} option of {command} do?",
        "In {command}, what is {term} for?",
        "What happens when I pass {term} to {command}?",
    ],
    "config": [
        "What does the {term} configuration variable control?",
        "What is the {term} setting in git config for?",
    ],
    "subcommand": [
        "What does {command} {term} do?",
        "How does the {term} subcommand of {command} work?",
    ],
    "purpose": [
        "What does {command} do?",
        "What is {command} for?",
        "Which git command can I use to {task}?",
        "How can I {task} with git?",
    ],
    "description": [
        "Can you explain what {command} does?",
        "When would I use {command}?",
        "Tell me about {command}.",
    ],
}


def first_sentence(paragraph: str) -> str | None:
    text = " ".join(paragraph.split())
    match = re.search(r"(?<=[a-z0-9)'`>])\.(\s|$)", text)
    sentence = text[: match.start() + 1] if match else text
    if not 30 <= len(sentence) <= 220:
        return None
    if any(mark in sentence for mark in ("{", "include::", "link:", "<<", "::")):
        return None
    return sentence


def entries(lines: list[str]):
    """(terms, description paragraph, section) for each definition-list entry."""
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            section = line.strip()
        terms = []
        while i < len(lines) and TERM.match(lines[i]):
            terms.append(TERM.match(lines[i]).group(1).strip())
            i += 1
        if not terms:
            i += 1
            continue
        while i < len(lines) and not lines[i].strip():
            i += 1
        body = []
        while i < len(lines) and lines[i].strip() and lines[i][:1] in ("\t", " "):
            body.append(lines[i])
            i += 1
        if body:
            yield terms, "\n".join(body), section


def page_questions(doc_id: str, command: str, lines: list[str], rng: random.Random):
    """The NAME line and the DESCRIPTION's first sentence as questions about the command."""
    found = []
    for n, line in enumerate(lines):
        match = re.match(r"^git-[a-z0-9-]+ - (.+)$", line)
        if match and n > 0 and lines[n - 1].strip().startswith("-"):
            summary = match.group(1).strip()
            template = rng.choice(TEMPLATES["purpose"])
            task = summary[0].lower() + summary[1:]
            found.append(("purpose", template.format(command=command, task=task), f"{command}: {summary}.", line.strip()))
            break
    for n, line in enumerate(lines):
        if line.strip() == "DESCRIPTION" and n + 1 < len(lines) and lines[n + 1].startswith("---"):
            paragraph = []
            for body in lines[n + 2 :]:
                if not body.strip():
                    if paragraph:
                        break
                    continue
                if body[:1] in ("\t", " ", "[", "'") or body.startswith("--"):
                    break
                paragraph.append(body)
            sentence = first_sentence("\n".join(paragraph)) if paragraph else None
            if sentence and sentence.endswith("."):
                template = rng.choice(TEMPLATES["description"])
                found.append(("description", template.format(command=command), sentence, sentence))
            break
    return [
        {"question": q, "doc_id": doc_id, "term": command, "kind": kind, "answer": answer, "quote": quote}
        for kind, q, answer, quote in found
    ]


def questions_for(path: pathlib.Path, rng: random.Random):
    command = path.stem.replace("-", " ", 1)
    lines = path.read_text(errors="replace").splitlines()
    pages = page_questions(path.name, command, lines, rng)
    found = []
    for terms, body, section in entries(lines):
        sentence = first_sentence(body)
        if sentence is None:
            continue
        term = max(terms, key=len).strip("`'\"")
        if OPTION.match(term):
            kind, term = "option", OPTION.match(max(terms, key=len)).group(0)
        elif CONFIG_VARIABLE.match(term):
            kind = "config"
        elif section.upper() == "COMMANDS" and re.match(r"^[a-z][a-z-]+", term):
            kind, term = "subcommand", re.match(r"^[a-z][a-z-]+", term).group(0)
        else:
            continue
        question = rng.choice(TEMPLATES[kind]).format(term=term, command=command)
        found.append(
            {
                "question": question,
                "doc_id": path.name,
                "term": term,
                "kind": kind,
                "answer": sentence,
                "quote": sentence,
            }
        )
    rng.shuffle(found)
    return pages + found[:PER_PAGE]


def main() -> int:
    corpus, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    rng = random.Random(SEED)
    rows = []
    for path in sorted(corpus.glob("git-*.txt")):
        rows.extend(questions_for(path, rng))
    with out.open("w") as f:
        for n, row in enumerate(rows):
            f.write(json.dumps({"id": f"q{n:04d}", **row}) + "\n")
    kinds = {k: sum(r["kind"] == k for r in rows) for k in TEMPLATES}
    print(f"{len(rows)} questions from {len({r['doc_id'] for r in rows})} pages: {kinds}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
