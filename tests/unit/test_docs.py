"""The README documents every setting and every schema fingerprint as the code has them."""

from __future__ import annotations

from pathlib import Path

from homestream.settings import ENV_PREFIX, Settings
from topics.codec import default_codec

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for name, field in Settings.model_fields.items():
        row = f"| `{ENV_PREFIX}{name.upper()}` | `{field.default}` |"
        assert row in README, f"README configuration table lacks or misstates {row}"


def test_schema_fingerprints_in_the_readme_match_the_schemas() -> None:
    codec = default_codec()
    for name in codec.schema_names:
        short = name.split(".")[-1]
        assert f"| `{short}` | `{codec.fingerprint_hex(name)}` |" in README, name


def test_the_readme_rules_example_is_valid() -> None:
    import json

    from online_models.rules import Rules

    start = README.index('{"kids_max_rating"')
    example = json.loads(README[start: README.index("```", start)])
    rules = Rules.model_validate(example)
    assert rules.relevance_weights["model"] == 0.5 and rules.history_decay == 0.9


def _headings(text: str) -> list[tuple[int, str]]:
    """``(level, title)`` of every ``##`` and ``###`` heading outside code blocks."""
    out, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith(("## ", "### ")):
            out.append((line.index(" "), line.split(" ", 1)[1].strip()))
    return out


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def test_the_contents_list_every_section_with_a_working_link() -> None:
    start = README.index("## Contents\n")
    contents = README[start: README.index("\n## ", start + 1)]
    for level, title in _headings(README):
        if title == "Contents":
            continue
        entry = f"{'  ' * (level - 2)}- [{title.replace('`', '')}](#{_anchor(title)})"
        assert entry in contents, f"the README's contents lack {entry!r}"


def test_every_link_in_the_readme_and_docs_leads_somewhere() -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    anchors = {_anchor(title) for _, title in _headings(README)}
    for target in re.findall(r"\]\(#([^)]+)\)", README):
        assert target in anchors, f"README links to a missing section #{target}"
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name} links to missing {target}"


def test_the_readme_speaks_to_readers_not_to_its_authors() -> None:
    import re

    for phrase in (r"\bthis session\b", r"\bsession \d", r"\bhelper\b", r"shared/notes"):
        assert not re.search(phrase, README, re.I), phrase


def _shell_commands(text: str) -> list[str]:
    """Command lines of the README's ``sh`` blocks (comments and env assignments stripped)."""
    import re

    out, block = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block != "sh":
            continue
        command = re.sub(r"^(\s*\w+=\S+\s+)+", "", line.split("#", 1)[0]).strip(" &\\")
        for part in command.split(" | "):
            if part.startswith(("homestream ", "python -m ")):
                out.append(part.strip())
    return out


def test_every_command_the_readme_shows_exists() -> None:
    """The README's ``homestream ...`` lines parse with the CLI and its ``python -m ...``
    modules exist, so a reader's copy-paste does not meet a renamed command."""
    import importlib.util
    import shlex

    from homestream.player.cli import build_parser

    commands = _shell_commands(README)
    assert "homestream catalog load examples/catalog.jsonl" in commands
    parser = build_parser()
    for command in commands:
        words = shlex.split(command)
        if words[0] == "homestream":
            args = parser.parse_args(words[1:])
            assert callable(args.handler), command
        else:
            assert importlib.util.find_spec(words[2]) is not None, command
