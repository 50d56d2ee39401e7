"""``python -m evaluation``: one front door whose subcommands reach each evaluation."""

from __future__ import annotations

import pytest

from evaluation import cli
from evaluation.obd.check import run_bts_check
from evaluation.published import OBD_BTS, OBD_BTS_N_SIM, OBD_BTS_SEED
from evaluation.stats import Z95, Interval, z_value


@pytest.mark.parametrize(("command", "usage"), [
    ("movielens", "usage: python -m evaluation.movielens"),
    ("artwork", "usage: python -m evaluation.artwork"),
])
def test_delegated_subcommands_parse_their_own_options(command, usage, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(usage)


def test_top_level_help_lists_every_evaluation(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for command in ("movielens", "artwork", "obd"):
        assert command in out


def test_obd_defaults_are_the_published_run(capsys) -> None:
    args = cli.build_parser().parse_args(["obd"])
    assert (args.n_sim, args.seed) == (OBD_BTS_N_SIM, OBD_BTS_SEED) == (100_000, 12345)
    assert run_bts_check.__kwdefaults__["n_sim"] == OBD_BTS_N_SIM
    assert OBD_BTS["ipw"] == 0.004553
    with pytest.raises(SystemExit) as exit_:
        cli.main(["obd", "--n-sim", "0"])
    assert exit_.value.code == 2
    assert "--n-sim must be positive" in capsys.readouterr().err


def test_unknown_subcommand_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["nope"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_one_z_value_and_interval() -> None:
    assert abs(Z95 - 1.959964) < 1e-6
    assert z_value(0.99) == pytest.approx(2.575829, abs=1e-6)
    with pytest.raises(ValueError, match="confidence must be in"):
        z_value(1.0)
    ci = Interval.normal(0.1, 0.01)
    assert (ci.low, ci.high) == pytest.approx((0.1 - Z95 * 0.01, 0.1 + Z95 * 0.01))
    assert ci.contains(0.1) and not ci.contains(0.2)
    assert ci.excludes_zero() and not Interval.normal(0.0, 0.01).excludes_zero()
    assert str(ci) == "+0.1000 ± 0.0196"
