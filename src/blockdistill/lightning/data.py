"""DataModule serving (prompt ids, response ids, optional vision) examples through :class:`BlockCollator`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from blockdistill.data import BlockCollator
from blockdistill.data.checks import BadExampleError, check_examples, jsonl_objects
from blockdistill.lightning.resume import ResumableLoader


class JsonlExamples(Dataset):
    """Examples from a JSONL file of ``{"prompt": str, "response": str}`` (tokenized with
    ``tokenizer``) or ``{"prompt_ids": [...], "response_ids": [...]}``. Bad lines raise with their number."""

    def __init__(self, path: str | Path, tokenizer: Any = None) -> None:
        self.rows: list[dict[str, Any]] = []
        self.names: list[str] = []
        """``path:line`` of each row, for errors that name the record."""
        for i, row in jsonl_objects(path):
            if "prompt_ids" in row and "response_ids" in row:
                self.rows.append({"prompt_ids": row["prompt_ids"], "response_ids": row["response_ids"]})
            elif "prompt" in row and "response" in row:
                if tokenizer is None:
                    raise ValueError(f"{path}:{i}: text examples need a tokenizer (data.tokenizer)")
                for part in ("prompt", "response"):
                    if not isinstance(row[part], str) or not row[part].strip():
                        raise BadExampleError(f"{path}:{i}: empty {part}" if isinstance(row[part], str)
                                              else f"{path}:{i}: {part} is {type(row[part]).__name__}, not text")
                self.rows.append({"prompt_ids": tokenizer(row["prompt"], add_special_tokens=False)["input_ids"],
                                  "response_ids": tokenizer(row["response"], add_special_tokens=False)["input_ids"]})
            else:
                raise BadExampleError(f"{path}:{i}: expected keys prompt/response or prompt_ids/response_ids, "
                                      f"got {sorted(row)}")
            self.names.append(f"{path}:{i}")
        if not self.rows:
            raise ValueError(f"{path}: no examples")

    def check(self, *, block_size: int, vocab_size: int | None = None, max_length: int | None = None,
              context: int | None = None) -> None:
        """Every row against the model before training (:func:`~blockdistill.data.checks.check_examples`)."""
        check_examples(self.rows, self.names, block_size=block_size, vocab_size=vocab_size,
                       max_length=max_length, context=context)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def order_seed(seed: int | None) -> int:
    """The data-order seed: ``seed``, else the one ``lightning.seed_everything`` set, else 0."""
    return int(seed) if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))


class BlockDataModule(L.LightningDataModule):
    """Serves ready-made datasets; ``setup`` runs per process, nothing is downloaded.

    The training loader is a :class:`~blockdistill.lightning.resume.ResumableLoader`: its order
    is drawn from ``(seed, epoch)`` (``seed`` None: the run's ``seed_everything`` seed) and a
    resumed run continues mid-epoch where the checkpoint stopped.
    """

    def __init__(self, train: Sequence | Dataset, collator: BlockCollator, batch_size: int = 8,
                 val: Sequence | Dataset | None = None, num_workers: int = 0, shuffle: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed
        self.train, self.val, self.collator = train, val, collator
        self.batch_size, self.num_workers, self.shuffle = batch_size, num_workers, shuffle

    def train_dataloader(self) -> DataLoader:
        return ResumableLoader(self.train, batch_size=self.batch_size, shuffle=self.shuffle, seed=order_seed(self.seed),
                               collate_fn=self.collator, num_workers=self.num_workers,
                               drop_last=len(self.train) >= self.batch_size)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        return DataLoader(self.val, batch_size=self.batch_size, shuffle=False, collate_fn=self.collator,
                          num_workers=self.num_workers)
