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
