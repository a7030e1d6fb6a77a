"""Which block-diffusion training a saved model has had, recorded in its ``config.json``.

Block rules alone do not say that a model was trained: ``BlockDiffusionLM.from_causal_lm(...)``
adds them to any AR model. So every stage that trains block diffusion records itself under
``config.json``'s ``"blockdistill_trained"`` (a list, oldest first): ``"rad"`` (train-rad, every
layout), ``"dcd"`` (the student of train-dcd) and ``"released"`` (an SDAR/ECHO checkpoint loaded
through :func:`blockdistill.interop.load_released`, trained by its authors). ``collect`` and
``train-dcd`` refuse a teacher without any of them (:func:`require_block_trained`): its
trajectories would be an AR model's guesses at masked tokens, not a teacher's.

    mark_trained(bd, "rad"); bd.save_pretrained(out)       # what train_rad does
    require_block_trained(BlockDiffusionLM.from_pretrained(out), "model.pretrained=" + out)
"""

from __future__ import annotations

from typing import Any

from blockdistill.config import ConfigError

__all__ = ["TRAINED_KEY", "UntrainedModelError", "mark_trained", "require_block_trained", "trained_stages"]

TRAINED_KEY = "blockdistill_trained"
STAGES = ("rad", "dcd", "released")


class UntrainedModelError(ConfigError):
    """A model that was never trained as a block-diffusion model was given as a teacher."""


def trained_stages(model: Any) -> list[str]:
    """The recorded block-diffusion training of ``model`` (a BlockDiffusionLM or HF model)."""
    config = getattr(getattr(model, "model", model), "config", None)
    return list(getattr(config, TRAINED_KEY, None) or [])


def mark_trained(model: Any, stage: str) -> None:
    """Record that ``stage`` trained ``model`` (saved with its config by ``save_pretrained``)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; expected one of {STAGES}")
    config = getattr(model, "model", model).config
    config.__dict__[TRAINED_KEY] = [*trained_stages(model), stage]


def require_block_trained(model: Any, what: str) -> None:
    """Raise :class:`UntrainedModelError` naming ``what`` unless ``model`` had block training."""
    if trained_stages(model):
        return
    from blockdistill.models.adapter import CONFIG_KEY

    config = getattr(model, "model", model).config
    if getattr(config, CONFIG_KEY, None):
        how = ("carries block rules but no record of block-diffusion training (an AR model converted "
               "with from_causal_lm and saved untrained?)")
    else:
        how = "is a plain AR model (no block rules in its config.json)"
    raise UntrainedModelError(
        f"{what} {how}: a teacher must be RAD-trained first (blockdistill train-rad), or be a released "
        f"block-diffusion checkpoint imported with import-sdar. A model RAD-trained before this rule "
        f"existed lacks the record: train it again, or add \"{TRAINED_KEY}\": [\"rad\"] to its "
        "config.json and delete its checksums.sha256"
    )
