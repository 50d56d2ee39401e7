"""Artwork-selection bandits: the policy contract (every registered policy), learning direction,
checkpoints, sticky assignment, the featurizer and hybrid model, and a seeded simulation in
which contextual policies beat the non-contextual one, which beats or ties uniform."""

from __future__ import annotations

import functools
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from online_models.bandits import (
    POLICIES,
    Arm,
    ArtworkPolicy,
    Assignment,
    ContextualEpsilonGreedy,
    Featurizer,
    HybridRidge,
    LinUCB,
    StickyAssignment,
    UniformRandom,
    make_policy,
)
from online_models.bandits.features import stable_hash

NAMES = sorted(POLICIES)
LEARNING = [n for n in NAMES if n != "uniform"]
CONTEXTUAL = ["epsilon_greedy", "lin_ucb", "thompson"]
TAGS = ["comedy", "romance", "cast", "scenic", "action"]
GENRES = ["Comedy", "Romance", "Horror", "Drama"]


# -- a synthetic population ---------------------------------------------------------------
def _member(rng: random.Random) -> tuple[dict, str]:
    """A comedy fan (60 %) or a romance fan, with noise features."""
    comedy = rng.random() < 0.6
    fan, other = ("Comedy", "Romance") if comedy else ("Romance", "Comedy")
    context = {
        f"genre:{fan}": rng.uniform(0.5, 1.0),
        f"genre:{other}": rng.uniform(0.0, 0.3),
        "genre:Drama": rng.uniform(0.0, 0.5),
        f"recent:{fan}": rng.randint(1, 4),
        "country": rng.choice(["US", "GB", "BR"]),
        "device": rng.choice(["tv", "mobile", "web"]),
        "hour": rng.randint(0, 23),
    }
    return context, fan.lower()


def _title_arms(t: int, rng: random.Random) -> list[Arm]:
    """A new title: new artwork ids, shared tags, shuffled order."""
    tags = [("comedy",), ("romance",), ("scenic",)]
    rng.shuffle(tags)
    return [Arm(f"t{t}-art{i}", tag) for i, tag in enumerate(tags)]


def _train(policy: ArtworkPolicy, n_titles: int = 10, per_title: int = 10,
           seed: int = 5) -> ArtworkPolicy:
    """Feed logged-uniform interactions: matching-tag art rewarded more often."""
    rng = random.Random(seed)
    for t in range(n_titles):
        arms = _title_arms(t, rng)
        for _ in range(per_title):
            context, fan = _member(rng)
            arm = rng.choice(arms)
            p = 0.3 if fan in arm.tags else 0.1
            policy.learn_one(context, arm, 1.0 if rng.random() < p else 0.0)
    return policy


@functools.cache
def _trained_bytes(name: str) -> bytes:
    return _train(make_policy(name, seed=3)).to_bytes()


def _trained(name: str) -> ArtworkPolicy:
    """A fresh copy of a policy trained on 100 interactions (cached as a checkpoint)."""
    return ArtworkPolicy.from_bytes(_trained_bytes(name))


# -- strategies ---------------------------------------------------------------------------
contexts = st.fixed_dictionaries(
    {},
    optional={
        **{f"genre:{g}": st.floats(0.0, 1.0) for g in GENRES},
        **{f"recent:{g}": st.integers(0, 6) for g in GENRES},
        "country": st.sampled_from(["US", "GB", "BR", "JP"]),
        "device": st.sampled_from(["tv", "mobile", "web"]),
        "hour": st.integers(0, 23),
    },
)
arm_lists = st.lists(
    st.tuples(st.text("abcdef0123456789-", min_size=1, max_size=8),
              st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
    min_size=1, max_size=6, unique_by=lambda a: a[0],
).map(lambda arms: [Arm(aid, tuple(tags)) for aid, tags in arms])


# -- the contract -------------------------------------------------------------------------
def test_registry_has_the_five_policies() -> None:
    assert NAMES == ["epsilon_greedy", "lin_ucb", "non_contextual", "thompson", "uniform"]
    for name in NAMES:
        policy = make_policy(name, seed=1)
        assert policy.name == name and policy.seed == 1 and policy.version == 0
    with pytest.raises(ValueError, match="unknown artwork policy"):
        make_policy("greedy", seed=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("trained", [False, True], ids=["cold", "trained"])
@settings(max_examples=30, deadline=None)
@given(context=contexts, arms=arm_lists)
def test_propensities_are_positive_and_sum_to_one(name: str, trained: bool, context: dict,
                                                  arms: list[Arm]) -> None:
    policy = _trained(name) if trained else make_policy(name, seed=1)
    props = policy.propensities(context, arms)
    assert list(props) == [a.artwork_id for a in arms]
    assert all(p > 0.0 for p in props.values()), props
    assert sum(props.values()) == pytest.approx(1.0, abs=1e-9)
    assert policy.propensities(context, arms) == props      # asking does not change state


@pytest.mark.parametrize("name", NAMES)
def test_select_is_deterministic_for_a_seed(name: str) -> None:
    rng = random.Random(0)
    requests = [(_member(rng)[0], _title_arms(t, rng)) for t in range(40)]
    runs = []
    for _ in range(2):
        policy = make_policy(name, seed=42)
        choices = []
        for context, arms in requests:
            choice = policy.select(context, arms)
            choices.append(choice)
            arm = next(a for a in arms if a.artwork_id == choice.artwork_id)
            policy.learn_one(context, arm, 1.0 if "comedy" in arm.tags else 0.0)
        runs.append(choices)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", NAMES)
def test_select_reproduces_its_propensities(name: str) -> None:
    policy = _trained(name)
    context = {"genre:Comedy": 0.9, "recent:Comedy": 2, "country": "US", "hour": 21}
    arms = [Arm("new-a", ("comedy",)), Arm("new-b", ("romance",)), Arm("new-c", ("scenic",)),
            Arm("new-d", ("cast",))]
    props = policy.propensities(context, arms)
    n = 3000
    counts = dict.fromkeys(props, 0)
    for _ in range(n):
        choice = policy.select(context, arms)
        assert choice.propensity == props[choice.artwork_id]
        assert (choice.policy, choice.policy_version) == (name, policy.version)
        counts[choice.artwork_id] += 1
    stat = sum((counts[a] - n * p) ** 2 / (n * p) for a, p in props.items())
    assert stat < chi2.ppf(0.999, df=len(arms) - 1), (props, counts)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_keeps_behaviour(name: str) -> None:
    policy = _trained(name)
    restored = type(policy).from_bytes(policy.to_bytes())
    assert type(restored) is type(policy) and restored.version == policy.version
    rng = random.Random(9)
    for t in range(20):
        context, fan = _member(rng)
        arms = _title_arms(100 + t, rng)
        assert restored.propensities(context, arms) == policy.propensities(context, arms)
        a, b = policy.select(context, arms), restored.select(context, arms)
        assert a == b
        arm = next(x for x in arms if x.artwork_id == a.artwork_id)
        reward = 1.0 if fan in arm.tags else 0.0
        policy.learn_one(context, arm, reward)
        restored.learn_one(context, arm, reward)


def test_checkpoints_are_checked() -> None:
    data = make_policy("lin_ucb", seed=1).to_bytes()
    with pytest.raises(ValueError, match="holds a 'LinUCB', expected LinearThompson"):
        POLICIES["thompson"].from_bytes(data)
    with pytest.raises(ValueError, match=r"is a pickle .* never unpickled"):
        ArtworkPolicy.from_bytes(b"\x80\x04N.")   # pickled None


@pytest.mark.parametrize("name", LEARNING)
def test_a_rewarded_arm_gains_probability(name: str) -> None:
    policy = make_policy(name, seed=1)
    context = {"genre:Comedy": 0.8, "country": "US", "device": "tv"}
    arms = [Arm("t1-a", ("comedy",)), Arm("t1-b", ("romance",)), Arm("t1-c", ("scenic",))]
    before = policy.propensities(context, arms)["t1-a"]
    for _ in range(20):
        policy.learn_one(context, arms[0], 1.0)
        policy.learn_one(context, arms[1], 0.0)
        policy.learn_one(context, arms[2], 0.0)
    after = policy.propensities(context, arms)
    assert policy.version == 60
    assert after["t1-a"] > before
    assert after["t1-a"] == max(after.values())


def test_uniform_does_not_learn() -> None:
    policy = UniformRandom(seed=1)
    arms = [Arm("a", ("comedy",)), Arm("b", ())]
    policy.learn_one({}, arms[0], 1.0)
    assert policy.version == 1
    assert policy.propensities({}, arms) == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize("name", CONTEXTUAL)
def test_contextual_policies_score_a_new_titles_art_by_its_tags(name: str) -> None:
    policy = _trained(name)
    new = [Arm("fresh-x", ("scenic",)), Arm("fresh-y", ("romance",)), Arm("fresh-z", ("comedy",))]
    comedy_fan = {"genre:Comedy": 0.9, "genre:Romance": 0.1, "recent:Comedy": 3}
    romance_fan = {"genre:Romance": 0.9, "genre:Comedy": 0.1, "recent:Romance": 3}
    rng = random.Random(2)
    for t in range(150):   # more evidence than _trained, to be clear of exploration noise
        context, fan = ((comedy_fan, "comedy") if rng.random() < 0.5
                        else (romance_fan, "romance"))
        for arm in _title_arms(200 + t, rng):
            policy.learn_one(context, arm, 1.0 if fan in arm.tags else 0.0)
    for context, best in ((comedy_fan, "fresh-z"), (romance_fan, "fresh-y")):
        props = policy.propensities(context, new)
        assert max(props, key=props.__getitem__) == best, props


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_rejected(name: str) -> None:
    policy = make_policy(name, seed=1)
    with pytest.raises(ValueError, match="duplicate"):
        policy.propensities({}, [Arm("a"), Arm("a")])
    with pytest.raises(ValueError, match="at least one arm"):
        policy.select({}, [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        policy.learn_one({}, Arm("a"), 2.0)
    assert policy.version == 0


def test_exploration_settings_must_keep_propensities_positive() -> None:
    with pytest.raises(ValueError):
        ContextualEpsilonGreedy(epsilon=0.0)
    with pytest.raises(ValueError):
        LinUCB(exploration_floor=0.0)


# -- sticky assignment --------------------------------------------------------------------
class _Spy(UniformRandom):
    calls = 0

    def _propensities(self, context, arms):
        self.calls += 1
        return super()._propensities(context, arms)


def test_sticky_keeps_the_image_and_its_original_propensity() -> None:
    arms = [Arm("a", ("comedy",)), Arm("b", ("romance",)), Arm("c", ())]
    sticky = StickyAssignment(period_s=60)
    policy = _Spy(seed=1)
    first = sticky.assign(policy, {}, arms, previous=None, now_ms=1_000)
    assert first.is_new and first.assignment.chosen_at_ms == 1_000
    assert first.choice.propensity == pytest.approx(1 / 3)
    stored = Assignment(first.choice.artwork_id, 1_000, propensity=0.9, policy="old",
                        policy_version=7)
    kept = sticky.assign(policy, {}, arms, previous=stored, now_ms=60_999)
    assert not kept.is_new and kept.assignment == stored
    assert (kept.choice.artwork_id, kept.choice.propensity, kept.choice.policy,
            kept.choice.policy_version) == (stored.artwork_id, 0.9, "old", 7)
    assert policy.calls == 1                  # the policy was not consulted within the period
    expired = sticky.assign(policy, {}, arms, previous=stored, now_ms=61_000)
    assert expired.is_new and expired.assignment.chosen_at_ms == 61_000
    others = [a for a in arms if a.artwork_id != stored.artwork_id]
    withdrawn = sticky.assign(policy, {}, others, previous=stored, now_ms=2_000)
    assert withdrawn.is_new


def test_sticky_explore_override_only_replaces_on_exploratory_draws() -> None:
    context = {"genre:Comedy": 0.9}
    arms = [Arm("a", ("comedy",)), Arm("b", ("romance",)), Arm("c", ("scenic",))]
    policy = ContextualEpsilonGreedy(epsilon=0.3, decay_rewards=None, seed=4)
    for _ in range(30):
        policy.learn_one(context, arms[0], 1.0)
        policy.learn_one(context, arms[1], 0.0)
    props = policy.propensities(context, arms)
    assert max(props, key=props.__getitem__) == "a"
    on_screen = Assignment("a", 0, propensity=props["a"], policy=policy.name)
    plain = StickyAssignment(period_s=3600)
    assert all(not plain.assign(policy, context, arms, on_screen, now_ms=i).is_new
               for i in range(200))
    override = StickyAssignment(period_s=3600, explore_override=True)
    decisions = [override.assign(policy, context, arms, on_screen, now_ms=i) for i in range(400)]
    new = [d for d in decisions if d.is_new]
    assert 0.1 * 400 < len(new) < 0.3 * 400      # expected 0.2: eps * 2/3 non-greedy draws
    assert {d.choice.artwork_id for d in new} == {"b", "c"}
    assert all(d.choice.propensity == pytest.approx(0.1) for d in new)
    assert all(d.assignment.chosen_at_ms == i for i, d in enumerate(decisions) if d.is_new)
    # a greedy draw never replaces a non-greedy image on screen
    explored = Assignment("c", 0, propensity=0.1, policy=policy.name)
    moved = [override.assign(policy, context, arms, explored, now_ms=1).choice.artwork_id
             for _ in range(200)]
    assert set(moved) <= {"b", "c"}


# -- featurizer and the hybrid model ------------------------------------------------------
def test_featurizer_is_stable_and_generalizes_through_tags() -> None:
    # pinned: a different hash would silently scramble every saved checkpoint
    assert stable_hash("genre:Comedy*tag:comedy") == 7517050282267254647
    f = Featurizer(n_dims=2**12)
    context = {"genre:Comedy": 0.8, "country": "US", "device": "tv", "hour": 21,
               "recent:Comedy": 2}
    old, new = f(context, Arm("t1-a", ("comedy",))), f(context, Arm("t9-z", ("comedy",)))
    shared = set(old) & set(new)
    assert len(shared) == len(old) - 1           # all but the art:<id> indicator
    assert f.names(context, Arm("x", ()))["country=US*tag:untagged"] == 1.0
    assert "device=tv*tag:cast" in Featurizer(arm_id_feature=False).names(context,
                                                                           Arm("x", ("cast",)))


@pytest.mark.parametrize("name", NAMES)
def test_learning_many_rewards_at_once_is_learning_them_one_by_one(name: str) -> None:
    """The learner hands a record's rewards over at once (:meth:`ArtworkPolicy.learn_many`):
    the policy ends as if it learned them in turn, version included."""
    one, many = make_policy(name, seed=3), make_policy(name, seed=3)
    rng = random.Random(4)
    data = []
    for t in range(6):
        arms = _title_arms(t, rng)
        for _ in range(12):  # an image learns several times in one batch
            context, fan = _member(rng)
            arm = rng.choice(arms)
            data.append((context, arm, 1.0 if fan in arm.tags and rng.random() < 0.5 else 0.0))
    for context, arm, reward in data:
        one.learn_one(context, arm, reward)
    for i in range(0, len(data), 25):
        many.learn_many(*zip(*data[i:i + 25], strict=True))
    assert many.version == one.version == len(data)
    check = random.Random(5)
    for t in range(10):
        context, _ = _member(check)
        arms = _title_arms(50 + t, check) + _title_arms(t % 6, random.Random(t))
        np.testing.assert_allclose(list(many.propensities(context, arms).values()),
                                   list(one.propensities(context, arms).values()), atol=1e-9)
    with pytest.raises(ValueError, match="reward must be in"):
        many.learn_many([{}], [arms[0]], [1.5])
    assert many.version == len(data)  # nothing learned from a rejected batch


def test_hybrid_ridge_learns_in_batches_after_a_checkpoint_as_one_by_one() -> None:
    """Batches that bring new buckets, repeat an image, and follow a restore (the learner
    resuming from its snapshot, which holds ``A0^-1``) give the model of one-by-one
    learning."""
    rng = random.Random(1)
    data = [({k: rng.gauss(0, 1) for k in rng.sample(range(12 + i // 20), 3)},
             rng.choice("abcdef"), rng.random()) for i in range(200)]
    one = HybridRidge(l2=0.5, intercept_l2=2.0)
    for z, a, r in data:
        one.learn_one(z, a, r)
    many = HybridRidge(l2=0.5, intercept_l2=2.0)
    many.learn_many(*zip(*data[:90], strict=True))
    many = HybridRidge.from_state(many.to_state())
    for i in range(90, 200, 37):
        many.learn_many(*zip(*data[i:i + 37], strict=True))
    asked = HybridRidge(l2=0.5, intercept_l2=2.0)  # asked between rewards: Sherman-Morrison
    for z, a, r in data:
        asked.learn_one(z, a, r)
        asked.posterior_marginals([z, {1: 1.0}], [a, "a"])
    mixed = HybridRidge(l2=0.5, intercept_l2=2.0)  # batches and asked rewards in turn
    for i in range(0, len(data), 30):
        chunk = data[i:i + 30]
        if i % 60:
            mixed.learn_many(*zip(*chunk, strict=True))
            continue
        for z, a, r in chunk:
            mixed.learn_one(z, a, r)
            mixed.posterior_marginals([z], [a])
    a = one.to_state()
    for b in (many.to_state(), asked.to_state(), mixed.to_state()):
        assert a["buckets"].tolist() == b["buckets"].tolist() and a["arm_ids"] == b["arm_ids"]
        for key in ("cov", "b0", "arm_precision", "arm_reward_sum", "arm_values"):
            np.testing.assert_allclose(b[key], a[key], atol=1e-9, err_msg=key)
    zs, ids = [z for z, _, _ in data[:20]] + [{99: 1.0}], list("abcdefabcdefabcdefabx")
    for got, want in zip(many.posterior(zs, ids), one.posterior(zs, ids), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_hybrid_ridge_equals_a_joint_ridge_regression() -> None:
    rng = random.Random(0)
    l2, intercept_l2, dims, ids = 0.7, 4.0, 6, ["a", "b", "c"]
    model = HybridRidge(l2=l2, intercept_l2=intercept_l2)
    rows, ys = [], []
    for _ in range(150):
        z = {k: rng.gauss(0, 1) for k in rng.sample(range(dims), 3)}
        arm = rng.choice(ids)
        y = rng.random()
        model.learn_one(z, arm, y)
        row = np.zeros(dims + len(ids) + 1)
        for k, v in z.items():
            row[k] = v
        row[dims + ids.index(arm)] = 1.0
        rows.append(row)
        ys.append(y)
    x, y = np.array(rows), np.array(ys)
    prior = np.diag([l2] * dims + [intercept_l2] * (len(ids) + 1))
    cov = np.linalg.inv(prior + x.T @ x)
    theta = cov @ x.T @ y
    zs = [{0: 1.0, 2: 0.5}, {1: 1.0, 5: -1.0}, {0: 1.0}]
    cands = ["b", "new", "a"]                    # "new" takes the spare one-hot column
    w = np.zeros((3, dims + len(ids) + 1))
    for i, (z, arm) in enumerate(zip(zs, cands, strict=True)):
        for k, v in z.items():
            w[i, k] = v
        w[i, dims + (ids.index(arm) if arm in ids else len(ids))] = 1.0
    mean, pcov = model.posterior(zs, cands)
    np.testing.assert_allclose(mean, w @ theta, atol=1e-9)
    np.testing.assert_allclose(pcov, w @ cov @ w.T, atol=1e-9)
    unseen_mean, unseen_cov = model.posterior([{99: 2.0}], ["new"])
    assert unseen_mean[0] == 0.0
    assert unseen_cov[0, 0] == pytest.approx(4.0 / l2 + 1.0 / intercept_l2)
    # the marginals (what LinUCB and epsilon-greedy ask for) are the joint's diagonal,
    # also with buckets never learned and candidates mixing both
    zs += [{99: 2.0, 0: 1.0}, {98: -1.0, 97: 0.5}]
    cands += ["c", "newer"]
    mean, pcov = model.posterior(zs, cands)
    m_mean, m_var = model.posterior_marginals(zs, cands)
    np.testing.assert_allclose(m_mean, mean, atol=1e-12)
    np.testing.assert_allclose(m_var, np.diag(pcov), atol=1e-12)


@given(st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_marginals_with_shared_feature_dicts_and_arms_learning_between_calls(seed: int) -> None:
    """The marginals' shortcuts (one featurization per shared dict, each image's terms kept
    until it learns again) give the joint posterior's diagonal, before and after learning."""
    rng = random.Random(seed)
    model = HybridRidge(l2=rng.uniform(0.3, 3.0), intercept_l2=rng.uniform(0.5, 5.0))
    arms = [f"a{i}" for i in range(6)]
    shared = [{k: rng.gauss(0, 1) for k in rng.sample(range(12), rng.randint(1, 4))}
              for _ in range(3)]
    for _round in range(3):
        for _ in range(rng.randint(0, 25)):
            model.learn_one(rng.choice([*shared, {rng.randrange(15): 1.0}]), rng.choice(arms),
                            rng.random())
        zs = [rng.choice(shared) for _ in range(10)]   # the same dict objects repeated
        cands = [rng.choice([*arms, "cold"]) for _ in range(10)]
        mean, cov = model.posterior(zs, cands)
        m_mean, m_var = model.posterior_marginals(zs, cands)
        np.testing.assert_allclose(m_mean, mean, atol=1e-9)
        np.testing.assert_allclose(m_var, np.diag(cov), atol=1e-9)


# -- the simulation -----------------------------------------------------------------------
def _simulate(name: str, n_titles: int = 60, per_title: int = 30, seed: int = 7) -> float:
    """Average reward over ``n_titles`` new titles shown ``per_title`` times each.

    Comedy fans (60 %) play with p = 0.3 after comedic art, romance fans after romantic art,
    0.1 otherwise. Every title has new artwork ids (tags shared). Rewards use common random
    numbers: the same uniform draw per impression for every policy.
    """
    policy = make_policy(name, seed=11)
    rng = random.Random(seed)
    total, n = 0.0, 0
    for t in range(n_titles):
        arms = _title_arms(t, rng)
        by_id = {a.artwork_id: a for a in arms}
        for _ in range(per_title):
            context, fan = _member(rng)
            u = rng.random()
            arm = by_id[policy.select(context, arms).artwork_id]
            reward = 1.0 if u < (0.3 if fan in arm.tags else 0.1) else 0.0
            policy.learn_one(context, arm, reward)
            total += reward
            n += 1
    return total / n


def test_simulation_contextual_beats_non_contextual_beats_or_ties_uniform() -> None:
    rewards = {name: _simulate(name) for name in NAMES}
    print("average reward per policy:", {k: round(v, 3) for k, v in rewards.items()})
    for name in CONTEXTUAL:
        assert rewards[name] > rewards["non_contextual"] + 0.03, rewards
    assert rewards["non_contextual"] >= rewards["uniform"] - 0.01, rewards
    assert 0.13 < rewards["uniform"] < 0.2, rewards       # 0.6*... ~ 1/3*0.3 + 2/3*0.1


# -- one vectorized step for a whole page -------------------------------------------------------
def _learned_policy(name: str, seed: int) -> ArtworkPolicy:
    rng = random.Random(seed)
    tags = ["comedy", "romance", "cast", "scenic", "action"]
    policy = make_policy(name, seed=seed)
    for _ in range(300):
        ctx = {"genre:Comedy": rng.random(), "genre:Drama": rng.random(),
               "country": rng.choice(["US", "FR"]), "hour": rng.randrange(24)}
        t = rng.randrange(30)
        arms = [Arm(f"t{t}-{j}", (tags[(t + j) % 5],)) for j in range(3)]
        policy.learn_one(ctx, rng.choice(arms), float(rng.random() < 0.3))
    return policy


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_propensities_of_a_whole_page_equal_the_per_title_ones(name: str) -> None:
    policy = _learned_policy(name, seed=5)
    rng = random.Random(11)
    tags = ["comedy", "romance", "cast", "scenic", "action", "dark"]
    for _ in range(8):
        ctx = {"genre:Comedy": rng.random(), "genre:Horror": rng.random() * 3,
               "country": rng.choice(["US", "FR", "BR"]), "device": "tv",
               "hour": rng.randrange(24)}
        # old and new titles, one to four images, shared and unique tags
        groups = [[Arm(f"t{t}-{j}", (rng.choice(tags),)) for j in range(rng.randint(1, 4))]
                  for t in rng.sample(range(60), 25)]
        per_title = [policy.propensities(ctx, arms) for arms in groups]
        page = policy.propensities_many(ctx, groups)
        assert len(page) == len(per_title)
        for one, many in zip(per_title, page, strict=True):
            assert list(one) == list(many)
            assert many == pytest.approx(one, rel=1e-9, abs=1e-12)
    assert policy.propensities_many({}, []) == []


def test_a_page_step_rejects_a_title_with_duplicate_images() -> None:
    with pytest.raises(ValueError, match="duplicate artwork ids"):
        make_policy("lin_ucb", seed=1).propensities_many({}, [[Arm("a"), Arm("a")]])


def test_the_matrix_step_gives_the_per_group_numbers_bit_for_bit() -> None:
    from online_models.bandits.base import greedy_matrix, greedy_with_exploration

    rng = np.random.default_rng(3)
    policy = make_policy("lin_ucb", seed=1)
    for _ in range(50):
        sizes = rng.integers(1, 11, size=rng.integers(1, 40)).tolist()  # up to 10 arms
        scores = rng.normal(size=sum(sizes)).round(rng.integers(1, 4))  # rounding makes ties
        eps = float(rng.uniform(0.01, 1.0))
        matrix = greedy_matrix(scores, sizes, eps)
        assert matrix is not None
        groups = [[Arm(f"a{i}-{j}") for j in range(k)] for i, k in enumerate(sizes)]
        starts = np.cumsum([0, *sizes])
        expected = [policy._normalized(arms, greedy_with_exploration(
            scores[starts[i]:starts[i + 1]].tolist(), eps)) for i, arms in enumerate(groups)]
        got = policy._normalized_matrix(groups, matrix)
        assert [list(d.items()) for d in got] == [list(d.items()) for d in expected]


def test_the_matrix_step_leaves_nan_scores_and_bad_propensities_to_the_checks() -> None:
    from online_models.bandits.base import greedy_matrix

    assert greedy_matrix(np.array([0.1, np.nan]), [2], 0.1) is None
    policy = make_policy("lin_ucb", seed=1)
    with pytest.raises(RuntimeError, match=r"invalid propensities \[0.5, 0.0\]"):
        policy._normalized_matrix([[Arm("a")], [Arm("b"), Arm("c")]],
                                  np.array([[1.0, 0.0], [0.5, 0.0]]))


def test_an_image_asked_about_before_it_learns_is_scored_by_what_it_learned_after() -> None:
    z = {1: 1.0, 2: 0.5}
    kept, fresh = HybridRidge(l2=1.0, intercept_l2=4.0), HybridRidge(l2=1.0, intercept_l2=4.0)
    before = kept.posterior_marginals([z, z], ["a", "b"])  # "a" kept as never learned
    for m in (kept, fresh):
        m.learn_one(z, "a", 1.0)
    after, expected = kept.posterior_marginals([z, z], ["a", "b"]), fresh.posterior_marginals(
        [z, z], ["a", "b"])
    # (equal up to rounding: the model asked before keeps A0^-1 by Sherman-Morrison, the
    # fresh one inverts A0 when asked)
    np.testing.assert_allclose(after[0], expected[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(after[1], expected[1], rtol=0, atol=1e-12)
    assert after[0][0] != before[0][0]


def test_images_gathered_from_the_index_score_as_image_by_image() -> None:
    rng = random.Random(4)
    model = HybridRidge(l2=1.0, intercept_l2=5.0)
    for _ in range(200):
        model.learn_one({rng.randrange(12): rng.random(), 20 + rng.randrange(3): 1.0},
                        f"a{rng.randrange(15)}", float(rng.random() < 0.4))
    zs = [{1: 0.5, 20: 1.0}, {3: 1.0, 21: 1.0, 99: 0.3}]
    page = [zs[i % 2] for i in range(20)], [f"a{i}" for i in range(20)]  # a15-a19: unseen
    for _ in range(2):
        answers = [model.posterior_marginals(*page) for _ in range(6)]  # the index from the 4th
        assert model._index is not None
        once = HybridRidge.from_state(model.to_state()).posterior_marginals(*page)
        for mean, var in answers:
            assert mean.tolist() == once[0].tolist() and var.tolist() == once[1].tolist()
        model.learn_one({1: 1.0}, "a17", 1.0)  # learning drops the index
        assert model._index is None
