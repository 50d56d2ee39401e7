"""``homestream dead-letters`` reads the dead-letter topic with the broker's security
settings, like every other client (the mapping itself: tests/unit/test_kafka_config.py)."""

from __future__ import annotations

from typing import Any

import pytest

import topics.reader
from homestream.player.cli import main


class RefusingConsumer:
    """Records the configuration it was built with; knows no topic."""

    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.configs.append(dict(config))

    def list_topics(self, topic: str, timeout: float) -> Any:
        class Metadata:
            topics: dict[str, Any] = {}
        return Metadata()

    def close(self) -> None:
        pass  # nothing to release: the fake holds no connection


def test_dead_letters_connects_with_the_sasl_settings(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(topics.reader, "Consumer", RefusingConsumer)
    for key, value in {"BOOTSTRAP_SERVERS": "kafka.example:9093",
                       "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                       "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                       "KAFKA_SASL_USERNAME": "ops", "KAFKA_SASL_PASSWORD": "s3cret"}.items():
        monkeypatch.setenv(f"HOMESTREAM_{key}", value)
    assert main(["dead-letters", "--max", "1"]) == 0
    [config] = RefusingConsumer.configs
    assert config["bootstrap.servers"] == "kafka.example:9093"
    assert (config["security.protocol"], config["sasl.mechanism"], config["sasl.username"],
            config["sasl.password"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "ops", "s3cret")
    assert "no dead-letter topic homestream.dead-letter" in capsys.readouterr().err
