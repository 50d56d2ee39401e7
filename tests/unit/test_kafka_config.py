"""The broker security settings and their mapping to every client: librdkafka (producer
client, CLI, topic admin, impressions producer), Faust's broker credentials and aiokafka.

The librdkafka configs are handed to real ``confluent_kafka`` clients, which check every key
and load the certificate files when they are built; the Faust credentials go through Faust's
own translation to aiokafka and into a real aiokafka client's constructor.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaClient
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from homestream.kafka_config import (
    aiokafka_config,
    faust_credentials,
    librdkafka_config,
    librdkafka_security,
    ssl_context,
)
from homestream.player.producer import PlayerProducer
from homestream.settings import ConfigError, Settings, load_settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA and a client certificate signed by it (PEM files made with openssl)."""
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
        "ca.pem", "-days", "1", "-subj", "/CN=test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out",
        "client.csr", "-subj", "/CN=homestream")
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "client.pem", "-days", "1")
    return {"ca": str(d / "ca.pem"), "cert": str(d / "client.pem"),
            "key": str(d / "client.key")}


def sasl_ssl(pki: dict[str, str], mechanism: str = "SCRAM-SHA-512") -> Settings:
    return Settings(bootstrap_servers="k1:9093,k2:9093", kafka_security_protocol="SASL_SSL",
                    kafka_sasl_mechanism=mechanism, kafka_sasl_username="svc-homestream",
                    kafka_sasl_password="pa55-word", kafka_ssl_ca_file=pki["ca"],
                    kafka_ssl_cert_file=pki["cert"], kafka_ssl_key_file=pki["key"])


def build_confluent(conf: dict[str, Any]) -> None:
    """librdkafka rejects unknown keys and unreadable certificates when a client is built."""
    Producer(conf)
    AdminClient(conf)


# -- librdkafka ---------------------------------------------------------------------------
def test_plaintext_is_the_default_and_adds_nothing_else() -> None:
    s = Settings(bootstrap_servers="k:9092")
    assert librdkafka_security(s) == {"security.protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None
    assert ssl_context(s) is None
    assert aiokafka_config(s) == {"bootstrap_servers": "k:9092",
                                  "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_maps_every_setting_to_librdkafka_keys(pki: dict[str, str]) -> None:
    conf = librdkafka_config(sasl_ssl(pki), {"client.id": "x"})
    assert conf == {
        "bootstrap.servers": "k1:9093,k2:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc-homestream",
        "sasl.password": "pa55-word", "ssl.ca.location": pki["ca"],
        "ssl.certificate.location": pki["cert"], "ssl.key.location": pki["key"],
        "client.id": "x",
    }
    build_confluent(conf)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_sasl_plaintext_has_no_tls_keys(mechanism: str) -> None:
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                 kafka_sasl_username="u", kafka_sasl_password="p")
    conf = librdkafka_config(s)
    assert conf["sasl.mechanism"] == mechanism
    assert not [k for k in conf if k.startswith("ssl.")]
    build_confluent(conf)


def test_ssl_with_only_a_ca_file(pki: dict[str, str]) -> None:
    s = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki["ca"])
    assert librdkafka_security(s) == {"security.protocol": "SSL",
                                      "ssl.ca.location": pki["ca"]}
    build_confluent(librdkafka_config(s))


def test_a_missing_certificate_is_refused_by_librdkafka_too(pki: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The mapping passes paths through; the settings check is what names the variable."""
    conf = librdkafka_config(sasl_ssl(pki)) | {"ssl.ca.location": str(tmp_path / "gone.pem")}
    with pytest.raises(Exception, match=r"ssl\.ca\.location|CA"):
        Producer(conf)


def test_the_producer_client_and_topic_admin_use_the_mapping(pki: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    s = sasl_ssl(pki)
    made: list[dict[str, Any]] = []
    producer = PlayerProducer(s, client_factory=lambda c: made.append(c) or object(),
                              exit_flush_timeout_s=None)
    assert producer.config["client.id"] == "homestream-player"
    assert librdkafka_security(s).items() <= made[0].items()

    import confluent_kafka.admin

    seen: list[dict[str, Any]] = []

    class Admin:
        def __init__(self, conf: dict[str, Any]) -> None:
            seen.append(conf)
            raise RuntimeError("stop here")

    monkeypatch.setattr(confluent_kafka.admin, "AdminClient", Admin)
    from topics.registry import ensure_topics

    with pytest.raises(RuntimeError, match="stop here"):
        ensure_topics(s)
    assert seen == [librdkafka_config(s)]


# -- Faust and aiokafka -------------------------------------------------------------------
def test_faust_sasl_ssl_credentials_become_the_same_aiokafka_settings(
        pki: dict[str, str]) -> None:
    s = sasl_ssl(pki)
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    direct = aiokafka_config(s)
    assert auth["security_protocol"] == direct["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == direct["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == direct["sasl_plain_username"] == "svc-homestream"
    assert auth["sasl_plain_password"] == direct["sasl_plain_password"] == "pa55-word"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_faust_ssl_and_sasl_plaintext_credentials(pki: dict[str, str]) -> None:
    tls = faust_credentials(Settings(kafka_security_protocol="SSL",
                                     kafka_ssl_ca_file=pki["ca"]))
    assert isinstance(tls, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(tls)["security_protocol"] == "SSL"
    plain = faust_credentials(Settings(kafka_security_protocol="SASL_PLAINTEXT",
                                       kafka_sasl_mechanism="PLAIN",
                                       kafka_sasl_username="u", kafka_sasl_password="p"))
    auth = credentials_to_aiokafka_auth(plain)
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["ssl_context"]) == \
        ("SASL_PLAINTEXT", "PLAIN", None)


def test_an_aiokafka_client_accepts_the_settings(pki: dict[str, str]) -> None:
    async def build() -> AIOKafkaClient:
        return AIOKafkaClient(**aiokafka_config(sasl_ssl(pki, "SCRAM-SHA-256")))

    client = asyncio.run(build())
    assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL",
                                                                   "SCRAM-SHA-256")


def test_the_faust_app_accepts_the_credentials(pki: dict[str, str]) -> None:
    app = faust.App("kafka-config-test", broker="kafka://k1:9093",
                    broker_credentials=faust_credentials(sasl_ssl(pki)))
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert app.conf.broker_credentials.username == "svc-homestream"


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "named"), [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_username": "u"}, "HOMESTREAM_KAFKA_SASL_PASSWORD: required"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "HOMESTREAM_KAFKA_SASL_MECHANISM: required"),
    ({"kafka_sasl_username": "u"}, "HOMESTREAM_KAFKA_SASL_*: set, but"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_ca_file": "/no/such/ca.pem"},
     "HOMESTREAM_KAFKA_SSL_CA_FILE: no such file"),
    ({"kafka_security_protocol": "SASL_MD5"}, "HOMESTREAM_KAFKA_SECURITY_PROTOCOL:"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI",
      "kafka_sasl_username": "u", "kafka_sasl_password": "p"},
     "HOMESTREAM_KAFKA_SASL_MECHANISM:"),
])
def test_bad_security_settings_name_the_variable(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    assert named in str(err.value)


def test_tls_files_need_tls_and_come_in_pairs(pki: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="HOMESTREAM_KAFKA_SSL_CA_FILE: set, but"):
        load_settings(kafka_ssl_ca_file=pki["ca"])
    with pytest.raises(ConfigError, match="HOMESTREAM_KAFKA_SSL_CERT_FILE and "
                                          "HOMESTREAM_KAFKA_SSL_KEY_FILE"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_cert_file=pki["cert"])


def test_the_password_is_never_printed_but_reaches_child_processes(
        pki: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    s = sasl_ssl(pki)
    assert "pa55-word" not in repr(s) and "pa55-word" not in str(s)
    env = s.to_env()
    assert env["HOMESTREAM_KAFKA_SASL_PASSWORD"] == "pa55-word"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s


def test_the_worker_impressions_producer_and_page_stream_use_the_mapping(
        pki: dict[str, str]) -> None:
    from serving.impressions import producer_config
    from streams.app import faust_config

    s = sasl_ssl(pki)
    creds = faust_config(s)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "svc-homestream"
    assert faust_config(Settings())["broker_credentials"] is None
    conf = producer_config(s)
    assert librdkafka_security(s).items() <= conf.items()
    build_confluent(conf)
