"""``collect`` and ``train-dcd``: DCD from a config, through the recipes.

    blockdistill collect   --config configs/tiny/collect.yaml model.pretrained=runs/rad/model trainer.devices=2
    blockdistill train-dcd --config configs/tiny/dcd.yaml trajectories=runs/dcd/trajectories   # offline
    blockdistill train-dcd --config configs/tiny/dcd.yaml data.train_file=prompts.jsonl          # online

Block size, shift, mask and EOS ids come from the saved teacher; a ``block.*`` value that
contradicts them is a config error naming the field. ``collect`` decodes every prompt with the
multi-step teacher (Lightning's predict loop, any number of devices) into resumable
checksummed shards; re-running it finishes an interrupted collection. ``train-dcd`` trains the
one-step student on those shards, or on-policy with the teacher decoding inside each step.
"""

from __future__ import annotations

from blockdistill.cli.common import prompts, save_config, teacher, tokenizer_for
from blockdistill.config import CollectConfig, DCDTrainConfig


def collect(cfg: CollectConfig) -> None:
    """DCD phase 1: the teacher's trajectories into ``output_dir``."""
    import lightning as L

    from blockdistill.lightning.collect import PromptDataModule
    from blockdistill.recipes import collect as recipe

    L.seed_everything(cfg.trainer.seed)
    tok = tokenizer_for(cfg.model, cfg.data)
    bd = teacher(cfg.model, cfg.block, tok, cfg.trainer.seed)
    dm = PromptDataModule(prompts(cfg.data, tok), pad_token_id=bd.spec.pad_token_id, batch_size=cfg.data.batch_size,
                          num_workers=cfg.data.num_workers, skip_done_in=cfg.output_dir, shuffle=False)
    summary = recipe(bd, dm, decode=cfg.decode, trainer=cfg.trainer, out_dir=cfg.output_dir,
                     shard_size=cfg.shard_size, meta={"teacher": cfg.model.pretrained})
    if summary is not None:
        save_config(cfg, cfg.output_dir, "blockdistill_collect.yaml")


def train_dcd(cfg: DCDTrainConfig) -> None:
    """Stage 3: the one-step student, offline (``trajectories``) or online (``data.train_file``)."""
    import lightning as L

    from blockdistill.lightning.collect import PromptDataModule
    from blockdistill.recipes import train_dcd as recipe
    from blockdistill.recipes import trajectory_data

    L.seed_everything(cfg.trainer.seed)
    tok = tokenizer_for(cfg.model, cfg.data)
    bd = teacher(cfg.model, cfg.block, tok, cfg.trainer.seed)
    pad = bd.spec.pad_token_id
    online = cfg.trajectories is None
    if online:
        data = PromptDataModule(prompts(cfg.data, tok), pad_token_id=pad, batch_size=cfg.data.batch_size,
                                num_workers=cfg.data.num_workers, shuffle=True)
    else:
        data = trajectory_data(cfg.trajectories, pad_token_id=pad, batch_size=cfg.data.batch_size,
                               num_workers=cfg.data.num_workers, verify=cfg.verify_checksums)
    res = recipe(bd, data, optim=cfg.optim, distill=cfg.distill, trainer=cfg.trainer, online=online,
                 decode=cfg.decode, lora=cfg.lora, out_dir=cfg.output_dir, tokenizer=tok)
    if res.trainer.is_global_zero:
        save_config(cfg, cfg.output_dir)
        print(f"saved one-step student to {cfg.output_dir}")
