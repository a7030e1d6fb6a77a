"""Choice fields are checked against the registries that define them: every registered name is
accepted (one registered by the test too), anything else is refused naming the valid choices."""

import pytest
import torch

from blockdistill import BlockDiffusionLM
from blockdistill.config import (
    ConfigError,
    DistillConfig,
    RADTrainConfig,
    TeacherDecodeConfig,
    choices,
    load_config,
)
from blockdistill.config.choices import REGISTRIES, check_choice
from blockdistill.distill.targets import TARGETS, HardTokenTarget, target_builder
from blockdistill.layout import TRAINING_LAYOUTS, rad_layout
from blockdistill.lightning.rad import RADSystem
from blockdistill.losses.distill import DIVERGENCES, divergence_from_name, reverse_kl
from blockdistill.sampling.cache import CACHE_MODES, FusedCache, register_cache_mode
from blockdistill.sampling.policies import POLICIES, FixedCount, policy_from_name
from blockdistill.testing import tiny_qwen2, tiny_tokenizer
from examples.echo_cxr.config import load_echo_config
from tests.foundation.helpers import all_response_targets, collate, random_examples, random_mask

TINY_RAD = "configs/tiny/rad.yaml"
ECHO_TINY = "examples/echo_cxr/configs/tiny"

# field of a config that names each kind, built from one value
FIELDS = {
    "layout": ("layout", lambda v: load_config(RADTrainConfig, TINY_RAD, [f"layout={v}"])),
    "target": ("distill.target", lambda v: DistillConfig(target=v)),
    "divergence": ("distill.divergence", lambda v: DistillConfig(divergence=v)),
    "cache": ("decode.cache", lambda v: TeacherDecodeConfig(cache=v)),
}
BUILT_IN = {
    "layout": ("rad", "full_dup"),
    "target": ("commit_step", "hard", "first_step"),
    "divergence": ("forward_kl", "reverse_kl", "jsd"),
    "cache": ("none", "block", "fused"),
    "policy": ("threshold", "fixed", "one_step"),
}


def test_choices_are_the_registries_keys():
    registries = {"layout": TRAINING_LAYOUTS, "target": TARGETS, "divergence": DIVERGENCES, "cache": CACHE_MODES,
                  "policy": POLICIES}
    assert set(REGISTRIES) == set(registries)
    for kind, registry in registries.items():
        assert choices(kind) == tuple(registry) == BUILT_IN[kind], kind


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_every_built_in_name_is_accepted_and_an_unknown_one_is_refused_naming_the_choices(kind):
    field_name, build = FIELDS[kind]
    for name in BUILT_IN[kind]:
        build(name)
    with pytest.raises(ConfigError) as err:
        build("no_such_entry")
    assert str(err.value) == f"{field_name}: must be one of {BUILT_IN[kind]}, got 'no_such_entry'"


@pytest.fixture
def registered(monkeypatch):
    """One new entry in every registry, removed after the test."""
    monkeypatch.setitem(TRAINING_LAYOUTS, "rad_again", rad_layout)
    monkeypatch.setitem(TARGETS, "hard_again", HardTokenTarget)
    monkeypatch.setitem(DIVERGENCES, "reverse_again", reverse_kl)
    monkeypatch.setitem(POLICIES, "fixed_again", FixedCount)

    @register_cache_mode
    class FusedAgain(FusedCache):
        name = "fused_again"

    yield {"layout": "rad_again", "target": "hard_again", "divergence": "reverse_again", "cache": "fused_again",
           "policy": "fixed_again"}
    del CACHE_MODES["fused_again"]


@pytest.mark.parametrize("kind", sorted(FIELDS))
def test_a_registered_entry_is_accepted_and_listed_in_the_refusal(registered, kind):
    field_name, build = FIELDS[kind]
    build(registered[kind])
    with pytest.raises(ConfigError, match=f"^{field_name}: must be one of .*'{registered[kind]}'"):
        build("no_such_entry")
    assert choices(kind) == BUILT_IN[kind] + (registered[kind],)


def test_registered_entries_are_what_the_library_builds(registered):
    """The registries are not only lists of names: the entry a config names is the one used."""
    assert isinstance(target_builder("hard_again"), HardTokenTarget)
    assert divergence_from_name("reverse_again") is reverse_kl
    assert policy_from_name("fixed_again", count=2) == FixedCount(2)
    assert policy_from_name("fixed", count=2) == FixedCount(2)
    with pytest.raises(ValueError, match="expected one of .*'fixed_again'"):
        policy_from_name("nope")
    check_choice("fixed_again", "policy", "eval.policy")


def test_a_registered_training_layout_drives_the_adapter_and_the_rad_system(registered, monkeypatch):
    bd = BlockDiffusionLM.from_causal_lm(tiny_qwen2(), tiny_tokenizer(), block_size=4)
    calls = []

    def spy(prompt_lens, seq_lens, block_size, width=None):
        calls.append((prompt_lens.tolist(), seq_lens.tolist(), block_size, width))
        return rad_layout(prompt_lens, seq_lens, block_size, width)

    monkeypatch.setitem(TRAINING_LAYOUTS, "rad_spy", spy)
    batch = collate(bd, random_examples([5, 2], [3, 6], seed=3))
    masked, targets = random_mask(batch, seed=1), all_response_targets(batch)
    with torch.no_grad():
        spied = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, layout="rad_spy")
        rad = bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, layout="rad")
    assert calls == [(batch.prompt_lens.tolist(), batch.seq_lens.tolist(), 4, batch.input_ids.shape[1])]
    torch.testing.assert_close(spied, rad, atol=0, rtol=0)
    cfg = load_config(RADTrainConfig, TINY_RAD, ["layout=rad_spy"])
    assert RADSystem(bd, cfg.optim, cfg.noise, layout=cfg.layout).layout == "rad_spy"
    with pytest.raises(ValueError, match=r"layout must be one of \('rad', 'full_dup', 'rad_again', 'rad_spy'\)"):
        RADSystem(bd, cfg.optim, cfg.noise, layout="diagonal")
    with pytest.raises(ValueError, match="layout must be one of"):
        bd.diffusion_logits(batch.input_ids, batch.prompt_lens, batch.seq_lens, masked, targets, layout="diagonal")


def test_the_example_configs_use_the_same_registries(registered):
    cfg = load_echo_config(ECHO_TINY, "eval", ["eval.cache=fused_again", "rad.layout=rad_again"])
    assert (cfg.eval.cache, cfg.rad.layout) == ("fused_again", "rad_again")
    with pytest.raises(ConfigError, match=r"^eval\.cache: must be one of \('none', 'block', 'fused', 'fused_again'\)"):
        load_echo_config(ECHO_TINY, "eval", ["eval.cache=paged"])
    with pytest.raises(ConfigError, match=r"^rad\.layout: must be one of"):
        load_echo_config(ECHO_TINY, "rad", ["rad.layout=diagonal"])
