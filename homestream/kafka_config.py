"""Broker connection settings for every Kafka client of the pipeline, from one set of settings.

The ``HOMESTREAM_KAFKA_*`` security settings (protocol, SASL mechanism and credentials, CA
and client certificate files) are turned here, and only here, into each client's own terms:

* :func:`librdkafka_config` — confluent-kafka producers, consumers and the topic admin
  (``security.protocol``, ``sasl.*``, ``ssl.*.location``);
* :func:`faust_credentials` — the Faust worker's ``broker_credentials``
  (:class:`faust.SASLCredentials` / :class:`faust.SSLCredentials`);
* :func:`aiokafka_config` — aiokafka clients (``security_protocol``, ``sasl_*``,
  ``ssl_context``).

>>> from homestream.settings import Settings
>>> librdkafka_config(Settings(bootstrap_servers="k1:9092"))
{'bootstrap.servers': 'k1:9092', 'security.protocol': 'PLAINTEXT'}
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from homestream.settings import Settings


def librdkafka_security(settings: Settings) -> dict[str, str]:
    """The librdkafka security keys (no bootstrap address) for ``settings``."""
    conf = {"security.protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL_"):
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username
        conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    for key, path in (("ssl.ca.location", settings.kafka_ssl_ca_file),
                      ("ssl.certificate.location", settings.kafka_ssl_cert_file),
                      ("ssl.key.location", settings.kafka_ssl_key_file)):
        if path:
            conf[key] = path
    return conf


DeliveryCallback = Callable[[Any, Any], None]


class ProducerLike(Protocol):
    """The part of ``confluent_kafka.Producer`` the pipeline's producers use (tests pass a
    fake)."""

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                *, on_delivery: DeliveryCallback | None = None) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


def librdkafka_config(settings: Settings,
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A confluent-kafka client config: bootstrap servers and security, then ``extra``
    (librdkafka keys such as ``client.id``, which may override anything before them)."""
    return {"bootstrap.servers": settings.bootstrap_servers, **librdkafka_security(settings),
            **(extra or {})}


def idempotent_producer_config(settings: Settings, client_id: str,
                               extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings of the pipeline's producers: the broker and its security,
    idempotence with ``acks=all``, the linger and delivery timeout settings and lz4 (ids and
    contexts repeat in every message: a fraction of the bytes for the broker), then
    ``extra``."""
    return librdkafka_config(settings, {
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.producer_linger_ms,
        "delivery.timeout.ms": settings.producer_delivery_timeout_ms,
        "compression.type": "lz4",
        **(extra or {}),
    })


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the asyncio clients (``None`` without TLS): verifies the brokers
    against the CA file (the system's CAs when none is set), with the client certificate
    when one is set."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.kafka_ssl_ca_file or None)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file)
    return context


def faust_credentials(settings: Settings) -> Any:
    """The Faust app's ``broker_credentials``: :class:`faust.SASLCredentials` for SASL
    (with the TLS context under SASL_SSL), :class:`faust.SSLCredentials` for SSL, ``None``
    for PLAINTEXT."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context(settings))
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    return None


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of aiokafka clients (``AIOKafkaProducer(**aiokafka_config(s))``)."""
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers,
                              "security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs
