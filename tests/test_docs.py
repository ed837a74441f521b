"""The documentation agrees with the code and with itself.

* docs/configuration.md lists every option of `python -m bridge serve`, with the flags, the
  environment variable and the default its declaration in bridge/config.py gives it, and no
  option that does not exist.
* Every relative link in README.md, CONTRIBUTING.md, DESIGN.md and docs/*.md reaches an
  existing file and, for `#anchor`, an existing heading of it (GitHub's anchors).
* Every section of DESIGN.md the code cites ("DESIGN.md "Streaming"") exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config, choices_of

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "docs" / "configuration.md"
PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "DESIGN.md",
    *sorted((ROOT / "docs").glob("*.md")),
]


# ----------------------------------------------------------------------------- options


def _flags() -> dict[str, list[str]]:
    """Each option's flags, as `serve --help` offers them (`--x`, and `--no-x` for on/off)."""
    parser = argparse.ArgumentParser()
    Config.add_arguments(parser)
    return {a.dest: list(a.option_strings) for a in parser._actions if a.dest != "help"}


def _rows(text: str) -> dict[str, list[str]]:
    """The option tables of docs/configuration.md: each row's cells, by its flags cell."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| `--"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            assert len(cells) == 4, f"a row of flag, environment, default, meaning: {line}"
            assert cells[0] not in rows, f"listed twice: {cells[0]}"
            rows[cells[0]] = cells
    return rows


def _default(f: dataclasses.Field[Any]) -> str:
    """How the page writes a default: `unset`, on/off, `text` in code, seconds with `s`."""
    value = f.default
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, float):  # every float option is a number of seconds
        return f"{value:g} s"
    return str(value)


def option_problems(text: str) -> list[str]:
    """Where the option tables of `text` disagree with the declarations of bridge/config.py."""
    rows = _rows(text)
    flags = _flags()
    problems = []
    for f in Config.options():
        key = ", ".join(f"`{flag}`" for flag in flags[f.name])
        if key not in rows:
            problems.append(f"{key}: missing")
            continue
        _, env, default, meaning = rows.pop(key)
        if env != f"`{f.metadata['env']}`":
            problems.append(f"{key}: environment {env}, not `{f.metadata['env']}`")
        expected = _default(f)
        if default != expected and not default.startswith(expected + " ("):
            problems.append(f"{key}: default {default}, not {expected}")
        if not meaning:
            problems.append(f"{key}: no meaning")
        problems += [f"{key}: `{c}` not named" for c in choices_of(f) if f"`{c}`" not in meaning]
    problems += [f"{key}: no such option" for key in rows]
    return problems


def test_the_configuration_page_lists_every_option_exactly() -> None:
    assert option_problems(CONFIGURATION.read_text()) == []


def test_the_option_check_sees_a_missing_a_wrong_and_an_extra_row() -> None:
    text = CONFIGURATION.read_text()
    cut = "\n".join(
        line for line in text.splitlines() if not line.startswith("| `--max-response-bytes`")
    )
    assert option_problems(cut) == ["`--max-response-bytes`: missing"]
    wrong = text.replace("| `--workers` | `BRIDGE_WORKERS` | 1 |", "| `--workers` | `W` | 2 |")
    assert option_problems(wrong) == [
        "`--workers`: environment `W`, not `BRIDGE_WORKERS`",
        "`--workers`: default 2, not 1",
    ]
    extra = text + "\n| `--gone` | `BRIDGE_GONE` | off | an option removed |\n"
    assert option_problems(extra) == ["`--gone`: no such option"]


# ----------------------------------------------------------------------------- links

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """Text without code blocks or code spans, where a link is text, not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading's get `-1`, `-2`, ..."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slugs_follow_github() -> None:
    assert slug("Who may use the bridge's credential") == "who-may-use-the-bridges-credential"
    assert slug("Limits and keepalive") == "limits-and-keepalive"
    assert slug("`--workers` and the `/metrics` port") == "--workers-and-the-metrics-port"
    assert slug("Quick start, offline") == "quick-start-offline"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        reached = (page.parent / path).resolve() if path else page
        if not reached.exists():
            broken.append(f"{target}: no such file")
        elif anchor and reached.suffix == ".md" and anchor not in anchors(reached):
            broken.append(f"{target}: no such heading")
    assert broken == []


# ----------------------------------------------------------------------------- DESIGN.md

_CITATIONS = (
    # DESIGN.md "Streaming", DESIGN.md ("Retries"), DESIGN.md, "Error mapping", DESIGN.md's
    # "Retries", DESIGN.md, section "Fidelity", also across a comment's line end: a quoted
    # name after DESIGN.md is a section's, whole (CONTRIBUTING.md, "Conventions").
    re.compile(r"DESIGN\.md(?:'s)?,?\s*(?:#\s*)?(?:section\s+)?\(?[\"“]([^\"”\n]+)[\"”]"),
    # "Credentials" in DESIGN.md
    re.compile(r"[\"“]([^\"”\n]+)[\"”],? in DESIGN\.md"),
)


def _cited_sections() -> dict[str, set[str]]:
    """The sections of DESIGN.md the code names (`_CITATIONS`), each with the files that
    name it (this file's own examples left out)."""
    cited: dict[str, set[str]] = {}
    for folder in ("bridge", "client", "dev", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == Path(__file__).resolve():
                continue
            text = path.read_text()
            for citation in _CITATIONS:
                for name in citation.findall(text):
                    cited.setdefault(name.strip(), set()).add(str(path.relative_to(ROOT)))
    return cited


def test_every_section_of_design_md_the_code_cites_exists() -> None:
    headings = [
        line.lstrip("#").strip()
        for line in (ROOT / "DESIGN.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    cited = _cited_sections()
    assert {"Streaming", "Credentials", "Retries", "Error mapping"} <= set(cited)
    missing = {
        name: sorted(files)
        for name, files in cited.items()
        if not any(heading == name or heading.startswith(name + " (") for heading in headings)
    }
    assert not missing, f"cited sections DESIGN.md does not have: {missing}"
