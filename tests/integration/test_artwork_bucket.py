"""A policy bucket next to a uniform fill on the real pipeline (Tansu + Redis + a worker and
two servers): the bucket's decisions are the only ones measured and the only ones its policy
learns from (``HOMESTREAM_ARTWORK_LEARN_FROM``), while every member's plays still reach the
worker. Runs its own local stack (``evaluation.artwork.simulate.run_policy``)."""

from __future__ import annotations

from evaluation.artwork.simulate import SimConfig, make_members, run_policy


def test_bucket_with_uniform_fill_learns_from_its_own_decisions_only(tmp_path) -> None:
    cfg = SimConfig(policy="lin_ucb", seconds=10.0, members=12, titles_per_genre=20,
                    visit_interval_s=(3.5, 4.0), think_s=(0.1, 0.3), bucket=3,
                    fill_uniform=True, partitions=2)
    run = run_policy(cfg, tmp_path)
    bucket = {m.profile_id for m in make_members(cfg)}  # m0000, m0003, m0006, m0009
    assert len(bucket) == 4
    assert run.rounds and {r.policy for r in run.rounds} == {"lin_ucb"}
    assert {r.profile_id for r in run.rounds} <= bucket
    # one logged decision per item measured (the join's counts say what was dropped)
    assert len(run.rounds) == len(run.outcomes), (len(run.rounds), len(run.outcomes),
                                                  run.join.to_dict())
    assert run.http_errors == 0
    # the worker settled the fill members' uniform decisions too (its counters), but its
    # policy learned only the bucket's: at most one update per bucket decision
    assert run.final_version is not None and 0 < run.final_version <= len(run.rounds)
    assert run.worker_counters["artwork_rewards"] > run.final_version
