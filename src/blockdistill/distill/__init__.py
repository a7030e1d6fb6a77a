"""DCD (Direct Conditional Distillation, DESIGN.md §4): teacher trajectories, joint targets,
step weights, and the storage that carries them from collection to training.

Plain ``torch``; the Lightning systems live in :mod:`blockdistill.lightning.dcd` and
:mod:`blockdistill.lightning.collect`.
"""

from blockdistill.config.distill import (
    CollectConfig,
    DCDTrainConfig,
    DistillConfig,
    TeacherDecodeConfig,
)
from blockdistill.distill.batch import DistillBatch, collate_records
from blockdistill.distill.collectors import (
    OnlineCollector,
    TrajectoryCollector,
    as_denoiser,
    record_from_trace,
)
from blockdistill.distill.dataset import TrajectoryDataset, verify_collection
from blockdistill.distill.filters import (
    RepetitionFilter,
    TrajectoryFilter,
    UnfinishedFilter,
    combine_filters,
)
from blockdistill.distill.prompts import PromptBatch, collate_prompts, read_prompts
from blockdistill.distill.records import TrajectoryRecord, load_records, save_records
from blockdistill.distill.relabel import StudentRolloutCollector, relabel_blocks, rollout_streams
from blockdistill.distill.schedules import (
    Schedule,
    power,
    proportional,
    schedule_from_name,
    step_weights,
    uniform,
)
from blockdistill.distill.targets import (
    CommitStepTarget,
    FirstStepTarget,
    HardTokenTarget,
    TargetBuilder,
    target_builder,
)
from blockdistill.distill.writer import CorruptShardError, ShardWriter, done_ids, finalize_manifest
from blockdistill.losses.rows import TokenDists

__all__ = [
    "CollectConfig", "CommitStepTarget", "CorruptShardError", "DCDTrainConfig", "DistillBatch", "DistillConfig", "FirstStepTarget", "HardTokenTarget",
    "OnlineCollector", "PromptBatch", "RepetitionFilter", "Schedule", "ShardWriter", "StudentRolloutCollector",
    "TargetBuilder",
    "TokenDists", "TrajectoryCollector", "TrajectoryDataset", "TrajectoryFilter", "TrajectoryRecord",
    "UnfinishedFilter", "as_denoiser", "collate_prompts", "collate_records", "combine_filters", "done_ids",
    "finalize_manifest", "load_records", "power", "proportional", "record_from_trace", "save_records",
    "read_prompts", "relabel_blocks", "rollout_streams", "schedule_from_name", "step_weights", "TeacherDecodeConfig", "target_builder", "uniform", "verify_collection",
]
