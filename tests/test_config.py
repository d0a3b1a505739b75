"""rlgrad/config.py: fields that check themselves, and AgentConfig.from_dict."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from agents import A2CConfig, AgentConfig, PPOConfig, ReinforceBaselineConfig
from agents.base import EpisodeConfig
from rlgrad.config import field_kinds, opt, resumable_fields, suggest, validate


def _letters():
    return ["alpha", "beta"]


@dataclass
class Example:
    """One field of every kind."""

    rate: float = field(default=0.5, metadata=opt("a rate", ge=0, le=1, resume=True))
    scale: float = field(default=1.0, metadata=opt("a positive scale", gt=0))
    below: float = field(default=0.0, metadata=opt("below one", lt=1))
    free: float = field(default=0.0, metadata=opt("any finite number"))
    count: int = field(default=3, metadata=opt("a count", gt=0, resume=True))
    flag: bool = field(default=False, metadata=opt("a switch"))
    mode: str = field(default="fast", metadata=opt("a mode", choices=("fast", "slow")))
    letter: str = field(default="alpha", metadata=opt("from a callable", choices=_letters))
    label: str = field(default="anything", metadata=opt("any string"))
    sizes: tuple[int, ...] = field(default=(4, 4), metadata=opt("layer sizes", gt=0))
    maybe: float | None = field(default=None, metadata=opt("optional", gt=0))
    maybe_n: int | None = field(default=None, metadata=opt("optional count", ge=2))


def check(**values):
    validate(Example(**values))


def test_defaults_and_good_values_pass():
    check()
    check(rate=1, scale=np.float32(2.5), below=-1e9, free=-3, count=np.int64(7), flag=True,
          mode="slow", letter="beta", label="", sizes=(1, np.int32(2)), maybe=0.1, maybe_n=2)
    check(flag=np.bool_(False), rate=0)


def test_field_kinds():
    assert field_kinds(Example) == {
        "rate": ("float", False), "scale": ("float", False), "below": ("float", False),
        "free": ("float", False), "count": ("int", False), "flag": ("bool", False),
        "mode": ("str", False), "letter": ("str", False), "label": ("str", False),
        "sizes": ("ints", False), "maybe": ("float", True), "maybe_n": ("int", True)}


@pytest.mark.parametrize("values,error,message", [
    # float: a real number, finite, not a bool
    ({"rate": True}, TypeError, "rate must be a number, got True"),
    ({"rate": "0.5"}, TypeError, "rate must be a number, got '0.5'"),
    ({"rate": None}, TypeError, "rate must be a number, got None"),
    ({"free": float("nan")}, ValueError, "free must be a finite number, got nan"),
    ({"free": float("inf")}, ValueError, "free must be a finite number, got inf"),
    ({"free": -np.inf}, ValueError, "free must be a finite number, got -inf"),
    ({"maybe": float("nan")}, ValueError, "maybe must be a finite number, got nan"),
    # bounds, named with the value
    ({"rate": 1.5}, ValueError, "rate must be >= 0 and <= 1, got 1.5"),
    ({"rate": -0.1}, ValueError, "rate must be >= 0 and <= 1, got -0.1"),
    ({"scale": 0.0}, ValueError, "scale must be > 0, got 0.0"),
    ({"below": 1.0}, ValueError, "below must be < 1, got 1.0"),
    ({"maybe": 0}, ValueError, "maybe must be > 0, got 0"),
    # int: an integer, not a bool, not a float that happens to be whole
    ({"count": True}, TypeError, "count must be an integer, got True"),
    ({"count": 2.0}, TypeError, "count must be an integer, got 2.0"),
    ({"count": "3"}, TypeError, "count must be an integer, got '3'"),
    ({"count": 0}, ValueError, "count must be > 0, got 0"),
    ({"maybe_n": 1}, ValueError, "maybe_n must be >= 2, got 1"),
    ({"maybe_n": False}, TypeError, "maybe_n must be an integer, got False"),
    # bool: True or False only
    ({"flag": 1}, TypeError, "flag must be True or False, got 1"),
    ({"flag": "yes"}, TypeError, "flag must be True or False, got 'yes'"),
    ({"flag": None}, TypeError, "flag must be True or False, got None"),
    # str with choices, static or from a callable
    ({"mode": 1}, TypeError, "mode must be a string, got 1"),
    ({"mode": "slwo"}, ValueError, "mode must be one of fast, slow, got 'slwo'; did you mean "
                                   "'slow'?"),
    ({"mode": "zzz"}, ValueError, "mode must be one of fast, slow, got 'zzz'"),
    ({"letter": "gamma"}, ValueError, "letter must be one of alpha, beta, got 'gamma'"),
    ({"label": b"x"}, TypeError, "label must be a string, got b'x'"),
    # a non-empty tuple of ints, the bounds applied to each
    ({"sizes": "64"}, TypeError, "sizes must be a sequence of integers, got '64'"),
    ({"sizes": [64]}, TypeError, "sizes must be a sequence of integers, got [64]"),
    ({"sizes": 64}, TypeError, "sizes must be a sequence of integers, got 64"),
    ({"sizes": ()}, ValueError, "sizes must hold at least one integer, got ()"),
    ({"sizes": (2.7,)}, TypeError, "sizes[0] must be an integer, got 2.7"),
    ({"sizes": (4, True)}, TypeError, "sizes[1] must be an integer, got True"),
    ({"sizes": (4, 0)}, ValueError, "sizes[1] must be > 0, got 0"),
])
def test_bad_values_are_one_line_errors_naming_the_field(values, error, message):
    with pytest.raises(error) as e:
        check(**values)
    assert str(e.value).startswith(message)
    assert str(e.value) == message or str(e.value)[len(message)] == ";"
    assert "\n" not in str(e.value)


def test_an_int_too_large_for_a_float_is_not_a_finite_number():
    with pytest.raises(ValueError, match="^free must be a finite number, got 1000"):
        check(free=10**400)
    with pytest.raises(ValueError, match="^lr must be a finite number, got 1000"):
        validate(PPOConfig.from_dict({"lr": 10**400}))
    check(count=10**400)  # an int field holds any integer


def test_the_first_bad_field_is_named():
    with pytest.raises(ValueError, match="^rate"):
        check(rate=2.0, scale=-1.0)


def test_unsupported_field_types_are_refused():
    @dataclass
    class Bad:
        names: list[str] = field(default_factory=list, metadata=opt("names"))

    @dataclass
    class Union:
        x: int | float = field(default=1, metadata=opt("x"))

    for cls in (Bad, Union):
        with pytest.raises(TypeError, match="unsupported field type"):
            field_kinds(cls)


def test_resumable_fields():
    assert resumable_fields(Example) == {"rate", "count"}
    ppo = resumable_fields(PPOConfig)
    assert {"lr", "ent_coef", "vf_coef", "clip_coef", "target_kl", "max_grad_norm",
            "lr_schedule", "warmup_steps"} <= ppo
    # what shapes the networks, the environments or the rollouts is fixed for a run
    assert not ppo & {"gamma", "num_envs", "num_steps", "hidden_sizes", "activation",
                      "optimizer", "normalize_obs", "normalize_reward", "shared_network"}
    assert {"value_lr", "value_steps"} <= resumable_fields(ReinforceBaselineConfig)


def test_suggest():
    assert suggest("clip_cof", ["clip_coef", "vf_coef"]) == "; did you mean 'clip_coef'?"
    assert suggest("zzzz", ["clip_coef"]) == ""


# ---- AgentConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,key,nearest", [
    (PPOConfig, "clip_cof", "clip_coef"),
    (A2CConfig, "gae_lamda", "gae_lambda"),
    (ReinforceBaselineConfig, "value_lr_", "value_lr"),
    (EpisodeConfig, "hidden_size", "hidden_sizes"),
])
def test_from_dict_names_an_unknown_key_and_the_nearest_one(cls, key, nearest):
    with pytest.raises(ValueError) as e:
        cls.from_dict({"lr": 1e-3, key: 1})
    assert str(e.value) == (f"unknown option {key!r} for {cls.__name__}; did you mean "
                            f"{nearest!r}?")


def test_from_dict_without_a_near_name():
    with pytest.raises(ValueError, match=r"^unknown option 'zzzz' for PPOConfig$"):
        PPOConfig.from_dict({"zzzz": 1})


def test_from_dict_converts_json_values():
    c = PPOConfig.from_dict({"hidden_sizes": [32, 16], "lr": 1, "clip_coef": 0, "num_steps": 64,
                             "target_kl": 1})
    assert c.hidden_sizes == (32, 16)
    assert c.lr == 1.0 and type(c.lr) is float  # an int where a float is due
    assert type(c.clip_coef) is float and type(c.target_kl) is float
    assert type(c.num_steps) is int
    # no conversion turns a wrong type into a right one
    for bad in ({"lr": True}, {"num_steps": 64.0}, {"hidden_sizes": "64"},
                {"hidden_sizes": [2.7]}):
        with pytest.raises(TypeError):
            validate(PPOConfig.from_dict(bad))
    with pytest.raises(ValueError, match="clip_coef must be > 0, got 0.0"):
        validate(c)


def test_round_trip_through_to_dict():
    c = A2CConfig(hidden_sizes=(8, 4), lr=3e-3, gae_lambda=0.9)
    d = c.to_dict()
    assert d["hidden_sizes"] == [8, 4]
    assert A2CConfig.from_dict(d) == c


def test_validate_runs_the_constraints_between_fields():
    EpisodeConfig(num_envs=8, steps_per_update=8).validate()
    with pytest.raises(ValueError, match=r"num_envs \(9\) is larger than steps_per_update \(8\)"):
        EpisodeConfig(num_envs=9, steps_per_update=8).validate()
    with pytest.raises(ValueError, match=r"minibatch_size \(65\) is larger than the rollout "
                                         r"\(num_steps \* num_envs = 64\)"):
        A2CConfig(num_envs=8, num_steps=8, minibatch_size=65).validate()
    # PPO's fields left None for the action space are checked once resolved
    PPOConfig().validate()
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(minibatch_size=600).resolve(discrete=True).validate()


def test_ppo_resolves_its_defaults_by_action_space():
    d, b = PPOConfig().resolve(True), PPOConfig().resolve(False)
    assert (d.lr, d.num_envs, d.num_steps, d.minibatch_size, d.update_epochs) == \
        (2.5e-4, 4, 128, 128, 4)
    assert (b.lr, b.num_envs, b.num_steps, b.minibatch_size, b.update_epochs) == \
        (3e-4, 1, 2048, 64, 10)
    assert b.normalize_obs and b.normalize_reward and not d.normalize_obs
    assert PPOConfig(lr=1e-3).resolve(False).lr == 1e-3  # what was given stays
    assert isinstance(AgentConfig().resolve(True), AgentConfig)
