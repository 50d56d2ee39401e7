"""Reading whole topics from the beginning (topics.reader) on the real broker."""

from __future__ import annotations

import time
import uuid

import pytest

from homestream.player.producer import PlayerProducer
from homestream.settings import Settings
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


def test_artwork_logs_read_impressions_plays_and_the_latest_catalog(settings: Settings) -> None:
    from confluent_kafka import Producer

    from evaluation.artwork.logs import read_catalog, read_events
    from homestream.player.simulator import publish_catalog
    from tests.integration.helpers import make_titles
    from topics.models import Impression, Play

    ensure_topics(settings)
    specs = topic_specs(settings)
    titles = make_titles(5)
    publish_catalog(settings, titles)
    renamed = titles[0].model_copy(update={"name": "Renamed"})
    publish_catalog(settings, [renamed])  # a later record of t0 wins
    tomb = Producer({"bootstrap.servers": settings.bootstrap_servers})
    tomb.produce(specs["catalog"].name, key=titles[1].title_id.encode(), value=None)
    assert tomb.flush(10) == 0
    now = int(time.time() * 1000)
    with PlayerProducer(settings) as producer:
        for i in range(6):
            producer.send(Impression(event_id=f"i{i}", profile_id=f"p{i}", event_ts_ms=now,
                                     request_id="r", title_id="t2", row_id="top-picks",
                                     row=0, column=i, artwork_id="t2-a", propensity=0.5,
                                     policy="uniform"))
            producer.send(Play(event_id=f"s{i}", profile_id=f"p{i}", event_ts_ms=now + 1,
                               title_id="t2", action="start", position_s=0.0,
                               duration_s=100.0))
            producer.send(Scroll(event_id=f"c{i}", profile_id=f"p{i}", event_ts_ms=now + 2,
                                 row=1))
    impressions, plays, bad = read_events(
        settings.bootstrap_servers, [specs["impressions"].name, specs["player_events"].name],
        timeout_s=30)
    assert (len(impressions), len(plays), bad) == (6, 6, 0)  # scrolls skipped
    got = {t.title_id: t for t in read_catalog(settings.bootstrap_servers,
                                               specs["catalog"].name)}
    assert set(got) == {"t0", "t2", "t3", "t4"} and got["t0"].name == "Renamed"
