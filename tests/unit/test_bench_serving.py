"""The serving bench's pure parts: the wrk script, parsing wrk's output, result keys and the
targets that make ``make bench`` fail."""

from __future__ import annotations

import json

import pytest

from bench.serving import BenchError, check_serving, lua_script, parse_wrk, pass_keys


def test_the_wrk_script_rotates_over_every_request_with_post_bodies_quoted() -> None:
    body = json.dumps({"profile_id": 'p"1', "title_ids": ["t1"]})
    script = lua_script([("/v1/homepage/p1?country=US", None), ("/v1/rerank", body)])
    assert '{"/v1/homepage/p1?country=US",nil}' in script
    assert json.dumps(body) in script  # the body as one escaped string literal
    assert "function done(summary, latency, requests)" in script
    assert "WRKJSON" in script and "%%" not in script


def test_wrk_output_without_the_result_line_is_an_error_naming_the_output() -> None:
    with pytest.raises(BenchError, match="no result line"):
        parse_wrk("Running 10s test @ http://x\nunable to connect\n")


def test_pass_keys_give_ratios_to_the_floor() -> None:
    res = {"rps": 300.0, "p50_ms": 5.0, "p99_ms": 20.0, "errors": 0, "client_cpu_share": 0.1,
           "server_cpu_ms": 2.0}
    floor = {"rps": 600.0, "p99_ms": 10.0, "server_cpu_ms": 0.5}
    keys = pass_keys("return", res, floor)
    assert keys["serve_return_rps"] == 300.0 and keys["serve_return_ratio"] == 0.5
    assert keys["serve_return_p99_ratio"] == 2.0 and keys["serve_return_cpu_ratio"] == 0.25
    assert "serve_similar_ratio" not in pass_keys("similar", res, None)


def test_targets_apply_to_first_visits_and_returning_members_and_errors_to_every_pass() -> None:
    result = {"serve_first_ratio": 0.6, "serve_first_p99_ratio": 1.9,
              "serve_return_ratio": 0.49, "serve_return_p99_ratio": 2.5,
              "serve_mixed_ratio": 0.1, "serve_first_n_p99_ratio": 3.0,  # reported only
              "serve_search_errors": 3, "serve_mixed_errors": 1, "serve_first_errors": 0}
    assert check_serving(result, 0.5, 2.0) == [
        "serve_return_ratio 0.49 < 0.5", "serve_return_p99_ratio 2.5 > 2.0",
        "serve_search_errors: 3 request(s) not answered with 200",
        "serve_mixed_errors: 1 request(s) not answered with 200"]
    assert check_serving(result, None, None) == [
        "serve_search_errors: 3 request(s) not answered with 200",
        "serve_mixed_errors: 1 request(s) not answered with 200"]
