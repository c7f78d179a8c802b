"""The documentation stays true: every link resolves, every repository path it names exists, and
every command it shows is one the project has (a make target, a `sent` subcommand with its
options, a module that `python -m` can run)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from sent_testing import ROOT

DOCS = sorted(
    [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "docker" / "README.md",
        ROOT / "configs" / "README.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
_REPO_PATH = re.compile(r"^(sent|tasks|flows|configs|docs|scripts|benchmarks|tests|docker)/[\w./-]*$")
_OUR_MODULES = ("sent", "tasks", "flows", "scripts", "benchmarks")


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces
    as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _prose(text: str) -> str:
    return _FENCE.sub("", text)


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_link_resolves(doc):
    broken = []
    for target in _LINK.findall(_prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == []


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_repository_path_named_exists(doc):
    text = doc.read_text(encoding="utf-8")
    named = {m for span in _INLINE.findall(_prose(text)) for m in span.split() if _REPO_PATH.match(m)}
    for _, block in _FENCE.findall(text):
        named |= {w for w in re.split(r"[\s=,]+", block) if _REPO_PATH.match(w)}
    missing = sorted(p for p in named if not (ROOT / p.rstrip(".,;:")).exists())
    assert missing == []


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", text, re.M))


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _commands(text: str) -> list[str]:
    """Shell commands of the bash blocks (continuations joined, comments dropped, one per
    ``&&``/``;``) and inline code that starts with a command we own."""
    commands = []
    for lang, block in _FENCE.findall(text):
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [c.strip() for c in re.split(r"&&|;|\|", line) if c.strip()]
    for span in _INLINE.findall(_prose(text)):
        for part in re.split(r"&&|;|\|", span):
            if re.match(r"^(make |sent |\.venv/bin/sent |python -m (sent|tasks|flows)\b)", part.strip()):
                commands.append(part.strip())
    return commands


def _problem(command: str, parser: argparse.ArgumentParser, targets: set[str]) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None  # a fragment (an unclosed quote in prose): nothing to check
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # VAR=value prefixes
    if not words:
        return None
    head = words[0]
    if head == "make":
        unknown = [w for w in words[1:] if not w.startswith("-") and "=" not in w and w not in targets]
        return f"no make target {unknown}" if unknown else None
    if head in ("sent", ".venv/bin/sent"):
        current, path = parser, ["sent"]
        for word in words[1:]:
            if "<" in word:  # a placeholder (`sent <command> --help`): the rest is generic
                return None
            sub = _subcommands(current)
            if sub and not word.startswith("-"):
                if word not in sub:
                    return f"{' '.join(path)} has no subcommand {word!r}"
                current = sub[word]
                path.append(word)
            elif word.startswith("--"):
                option = word.split("=", 1)[0]
                if option not in _options(current):
                    return f"{' '.join(path)} has no option {option}"
        return None
    if head.endswith("python") and words[1:2] == ["-m"] and len(words) > 2:
        module = words[2]
        if module.split(".")[0] in _OUR_MODULES and importlib.util.find_spec(module) is None:
            return f"no module {module}"
        return None
    if re.match(r"^(\./)?scripts/", head) and not (ROOT / head).exists():
        return f"no script {head}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_every_command_shown_exists(doc):
    from sent.cli import build_parser

    parser, targets = build_parser(), _make_targets()
    problems = []
    for command in _commands(doc.read_text(encoding="utf-8")):
        problem = _problem(command, parser, targets)
        if problem is not None:
            problems.append(f"{command!r}: {problem}")
    assert problems == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """A wrong target, subcommand, option and module are each reported; real ones are not."""
    from sent.cli import build_parser

    parser, targets = build_parser(), _make_targets()
    assert _problem("make demo", parser, targets) is None
    assert _problem(".venv/bin/sent ablate --config configs/toy.yaml --seeds 0,1", parser, targets) is None
    assert _problem("sent toy bootstrap --config configs/toy.yaml", parser, targets) is None
    assert _problem("make demoo", parser, targets) == "no make target ['demoo']"
    assert _problem("sent trian --stage 1", parser, targets) == "sent has no subcommand 'trian'"
    assert _problem("sent train --stages 1", parser, targets) == "sent train has no option --stages"
    assert _problem("python -m sent.config_referenc", parser, targets) == "no module sent.config_referenc"
    assert _slug("The ablation: does the curriculum help?") == "the-ablation-does-the-curriculum-help"
    assert _slug("Modes: `sent_online` (issue 29)") == "modes-sent_online-issue-29"
    assert _commands("```bash\nmake lint && sent eval \\\n  --n 8  # a comment\n```\n") == [
        "make lint",
        "sent eval    --n 8",
    ]
