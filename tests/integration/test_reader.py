"""Reading whole topics from the beginning (topics.reader) on the real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from player.producer import PlayerProducer
from settings import Settings
from topics.models import Scroll
from topics.reader import TopicReadTimeout, read_topics
from topics.registry import ensure_topics, topic_specs


def test_reads_every_partition_to_its_end_once(settings: Settings) -> None:
    ensure_topics(settings)
    topic = topic_specs(settings)["player_events"].name
    now = int(time.time() * 1000)
    with PlayerProducer(settings, max_batch_events=1) as producer:
        for i in range(40):  # 40 profiles: spread over the partitions
            producer.send(Scroll(event_id=uuid.uuid4().hex, profile_id=f"p{i}",
                                 event_ts_ms=now + i, row=i % 5))
    got = list(read_topics(settings.bootstrap_servers, [topic], timeout_s=30,
                           min_messages=40))
    assert len(got) == 40  # all of them, none twice
    assert len({(m.partition(), m.offset()) for m in got}) == 40
    assert len({m.partition() for m in got}) > 1
    # a second read stops at the ends by itself: nothing new, no waiting for a timeout
    t0 = time.monotonic()
    again = list(read_topics(settings.bootstrap_servers, [topic], timeout_s=30))
    assert len(again) == 40 and time.monotonic() - t0 < 20


def test_an_unknown_topic_is_named_and_an_unreached_count_times_out(settings: Settings) -> None:
    ensure_topics(settings)
    missing = f"{settings.topic_prefix}no-such-topic"
    with pytest.raises(LookupError, match="no-such-topic"):
        list(read_topics(settings.bootstrap_servers, [missing], timeout_s=5))
    assert list(read_topics(settings.bootstrap_servers, [missing], timeout_s=5,
                            missing_ok=True)) == []
    topic = topic_specs(settings)["dead_letter"].name
    with pytest.raises(TopicReadTimeout, match="1 messages"):
        list(read_topics(settings.bootstrap_servers, [topic], timeout_s=2, min_messages=1))
