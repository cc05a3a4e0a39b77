"""``train``: fit a segmentation network to a dataset and save it as a model folder.

The output folder of a run::

    OUTPUT/
      model/                 the trained model (weights + model card): best validation epoch, else last
      checkpoints/last/      resumable state (weights, optimiser, scheduler, scaler, RNG, sampler, epoch)
      checkpoints/best/      model folder of the best validation epoch so far
      training_config.json   the run's configuration, dataset and preprocessing plan
      splits.json            the cross-validation folds (reused by later runs in this folder)
      training_log.csv       one row per epoch; training_curves.png plots it

Before the first step the run is planned for the data, the device and the time budget (:mod:`.planner`); the
plan is printed, stored in ``training_config.json`` and the model card (:mod:`.card`). With a time budget the
number of steps is re-planned while the run goes (a machine that gets busier or freer; :mod:`.budget`), so that
the learning-rate schedule ends at the budget; the model is the final, fully decayed one. A resumable
checkpoint is written at the end of every epoch and at least every ``checkpoint_minutes``.

The same function runs under ``torchrun --nproc_per_node=N`` (DistributedDataParallel): every rank samples
its own patches, gradients are averaged, and rank 0 validates, writes files and reports progress.
SIGINT/SIGTERM end the current step, write ``checkpoints/last`` and return with status ``cancelled``;
``resume=True`` continues from there with the same optimiser, scheduler and random-number state. A run killed
outright (SIGKILL, power loss) resumes from its last complete checkpoint to the same weights; the training log
is rewritten from the checkpoint (which holds it), so it never has rows of epochs that were not saved.
One run at a time holds the folder (:mod:`.run_folder`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..atomic import write_text_atomic
from ..checkpoint import (
    ModelCard,
    capture_rng_state,
    import_state_dict,
    load_matching_weights,
    load_model,
    load_training_state,
    read_model_card,
    restore_rng_state,
    save_model,
    save_training_state,
)
from ..data.augmentation import AugmentationConfig, Augmenter
from ..data.dataset import Dataset, load_case, load_dataset, validate_dataset
from ..data.planning import data_spatial_dims, dataset_fingerprint, plan_preprocessing
from ..data.preprocessing import PreprocessedCase, PreprocessingPlan, preprocess_case
from ..data.sampling import PatchSampler
from ..distributed import (
    DistributedContext,
    all_reduce_mean,
    broadcast_ints,
    broadcast_text,
    init_distributed,
    launch_rank,
    shutdown_distributed,
)
from ..errors import InputError
from ..losses import DeepSupervisionLoss, build_loss
from ..networks import build_network
from ..progress import Event, EventSink
from ..registry import resolve_model_folder
from ..runtime import describe_device
from .budget import RunBudget
from .card import training_card, validation_summary, with_epochs_done
from .config import TrainingConfig
from .history import TrainingHistory
from .optim import build_optimizer, build_scaler, build_scheduler
from .planner import TrainingPlan, plan_training
from .run_folder import claim_run_folder
from .schedule import LearningRateSchedule
from .speed import StepTimer
from .splits import load_or_create_splits
from .step import train_step
from .validation import validate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """How a run ended: ``status`` (completed; cancelled; early_stopped; time_budget: the budget ran out before
    the planned schedule ended), where the model folder is, and the trained ``network`` itself (its final
    weights, in evaluation mode)."""

    status: str
    model: Path | None
    epochs_done: int
    best_epoch: int | None
    best_mean_dice: float | None
    network: torch.nn.Module = field(repr=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_done: int = 0


def train(
    data: str | os.PathLike[str] | Dataset,
    output: str | os.PathLike[str],
    config: TrainingConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_event: EventSink | None = None,
    step_timer: StepTimer | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainingResult:
    """Train a network on ``data`` (an MSD/nnU-Net folder or a :class:`Dataset`) into the folder ``output``.

    ``resume`` continues the run saved in ``output`` with its plan (its saved configuration wins over
    ``config``; a run stopped before its first checkpoint starts again from its first step); ``overwrite``
    replaces a previous run's files in ``output`` (other files there are left alone). The folder is locked
    for the run, and a run that fails before its first checkpoint leaves it as it was (see :mod:`.run_folder`).
    Progress goes to ``on_event`` (see :mod:`MedSegCNNLib.progress`). ``step_timer`` measures step times for the
    plan (default: a :class:`~.speed.StepTimer` with the per-user cache); ``clock`` gives the
    time in seconds that the budget is counted on.

    Example:
        >>> config = TrainingConfig(time_budget_minutes=30)
        >>> result = train("Task04_Hippocampus", "models/hippo", config)  # doctest: +SKIP
        >>> result.model  # doctest: +SKIP
        PosixPath('models/hippo/model')
    """
    started = clock()
    output = Path(output)
    inputs = [
        Path(path) for path in (data, (config or TrainingConfig()).init_from) if isinstance(path, str | os.PathLike)
    ]
    with claim_run_folder(output, resume=resume, overwrite=overwrite, main=launch_rank() == 0, inputs=inputs) as folder:
        config = folder.configuration(config or TrainingConfig())
        context = init_distributed(config.device)
        try:
            run = _Run.create(
                data,
                output,
                config,
                context,
                resume=bool(broadcast_ints([int(folder.resume)], context)[0]),  # rank 0 decides
                on_event=on_event,
                timer=step_timer,
                clock=clock,
                started=started,
            )
            run.after_checkpoint = folder.commit
            return run.fit()
        finally:
            shutdown_distributed(context)


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while the block runs (handlers restored afterwards)."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}

    def handle(number: int, _frame: object) -> None:
        logger.warning("%s received: finishing the current step and saving a checkpoint.", signal.Signals(number).name)
        requested.set()

    for number in signals:
        signal.signal(number, handle)
    try:
        yield requested
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass
class _Run:
    """Everything one training run holds; built by :meth:`create`, driven by :meth:`fit`."""

    output: Path
    config: TrainingConfig
    context: DistributedContext
    dataset: Dataset
    plan: PreprocessingPlan
    train_cases: list[PreprocessedCase]
    val_cases: list[PreprocessedCase]
    patch_size: tuple[int, ...]
    network: torch.nn.Module
    model: torch.nn.Module  # the network itself, or its DistributedDataParallel wrapper
    loss_function: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LearningRateSchedule
    scaler: torch.amp.GradScaler
    precision: str
    sampler: PatchSampler
    augmenter: Augmenter
    emit: EventSink
    training_plan: TrainingPlan
    clock: Callable[[], float]
    budget: RunBudget
    history: TrainingHistory = field(default_factory=TrainingHistory)
    epoch: int = 0  # completed epochs
    step_in_epoch: int = 0  # steps done in the current epoch (non-zero only after a cancelled run)
    epoch_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_mean_dice: float = -math.inf
    best_dice: dict[int, float] = field(default_factory=dict)
    last_dice: dict[int, float] = field(default_factory=dict)  # of the latest validation
    last_checkpoint: float = 0.0
    after_checkpoint: Callable[[], None] = lambda: None  # called after every complete checkpoint

    # ----- construction --------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        data: str | os.PathLike[str] | Dataset,
        output: Path,
        config: TrainingConfig,
        context: DistributedContext,
        *,
        resume: bool,
        on_event: EventSink | None,
        timer: StepTimer | None,
        clock: Callable[[], float],
        started: float,
    ) -> _Run:
        torch.manual_seed(config.seed + context.rank)
        np.random.seed((config.seed + context.rank) % 2**32)  # noqa: NPY002 - third-party code may use it
        emit = on_event if (on_event is not None and context.is_main) else (lambda _event: None)
        if config.init_from and not resume:
            _check_initial_weights(config.init_from)  # a wrong path or a pickle fails now, not after planning
        dataset = _labelled_dataset(data, config)
        train_names, val_names = _split(dataset, config, output, context)
        if resume:
            plan, training_plan = _saved_plans(output)
        else:
            fingerprint = dataset_fingerprint(dataset.subset(train_names))
            config = config.replace(spatial_dims=data_spatial_dims(fingerprint, config.spatial_dims))
            plan = plan_preprocessing(
                dataset.subset(train_names), spatial_dims=config.spatial_dims, fingerprint=fingerprint
            )
        train_cases = [_preprocess(dataset, name, plan, config.seed) for name in train_names]
        val_cases = [_preprocess(dataset, name, plan, config.seed) for name in val_names]
        if not resume:
            training_plan = _plan_training(
                config,
                fingerprint,
                plan,
                in_channels=int(train_cases[0].image.shape[0]),
                out_channels=len(dataset.label_names),
                context=context,
                timer=timer,
                seconds_spent=lambda: clock() - started,
            )
            config = training_plan.apply(config)
            logger.info("%s", training_plan.describe())
            emit(Event("plan", training_plan.to_dict()))
        network, model = _build_model(config, context)
        patch_size = tuple(config.patch_size)
        optimizer = build_optimizer(network.parameters(), config)
        run = cls(
            output=output,
            config=config,
            context=context,
            dataset=dataset,
            plan=plan,
            train_cases=train_cases,
            val_cases=val_cases,
            patch_size=patch_size,
            network=network,
            model=model,
            loss_function=_loss_function(config, network),
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, config, training_plan.total_steps),
            scaler=build_scaler(config.precision, context.device),
            precision=config.precision,
            sampler=PatchSampler(
                train_cases,
                patch_size,
                config.batch_size,
                foreground_fraction=config.foreground_fraction,
                seed=config.seed,
                rank=context.rank,
                world_size=context.world_size,
            ),
            augmenter=Augmenter(
                AugmentationConfig.from_dict(config.augmentation) if config.augmentation else AugmentationConfig(),
                config.spatial_dims,
                seed=config.seed + 7919 * context.rank,
            ),
            emit=emit,
            training_plan=training_plan,
            clock=clock,
            budget=RunBudget(
                budget_seconds=None if config.time_budget_minutes is None else config.time_budget_minutes * 60,
                planned_step_seconds=training_plan.step_seconds,
                clock=clock,
                started=started,
                emit=emit,
            ),
        )
        if resume:
            run._restore()
        elif context.is_main:
            (output / "checkpoints").mkdir(exist_ok=True)
            run._write_run_description()
        return run

    # ----- the loop ----------------------------------------------------------------------------------------

    def fit(self) -> TrainingResult:
        """Train until the schedule ends or the run stops, write the model and say how the run ended."""
        self._emit_start()
        status = self._train()
        if status == "running":
            status = "time_budget" if self.budget.budget_cut else "completed"
        model_path = self._finish(status)
        best_mean_dice = None if self.best_epoch is None else self.best_mean_dice
        self.emit(
            Event(
                "end",
                {
                    "status": status,
                    "epochs_done": self.epoch,
                    "steps_done": self.scheduler.steps_done,
                    "best_epoch": self.best_epoch,
                    "best_mean_dice": best_mean_dice,
                    "model": str(model_path) if model_path else None,
                    "elapsed_s": self.budget.elapsed(),
                },
            )
        )
        return TrainingResult(
            status=status,
            model=model_path,
            epochs_done=self.epoch,
            best_epoch=self.best_epoch,
            best_mean_dice=best_mean_dice,
            network=self.network.eval(),
            history=list(self.history.rows),
            steps_done=self.scheduler.steps_done,
        )

    def _emit_start(self) -> None:
        self.emit(
            Event(
                "start",
                {
                    "total_steps": self.scheduler.total_steps,
                    "epochs": self._planned_epochs(),
                    "steps_per_epoch": self.config.steps_per_epoch,
                    "train_cases": len(self.train_cases),
                    "val_cases": len(self.val_cases),
                    "device": str(self.context.device),
                    "precision": self.precision,
                    "output": str(self.output),
                    "patch_size": list(self.patch_size),
                    "budget_s": self.budget.budget_seconds,
                    "expected_s": self.training_plan.expected_seconds,
                    "plan": self.training_plan.describe(),
                },
            )
        )

    def _train(self) -> str:
        """Take steps until the schedule ends or the run stops; returns "running" or a final status."""
        schedule = self.scheduler
        self.last_checkpoint = self.clock()
        status = "running"
        self.model.train()
        if self.step_in_epoch and self._epoch_is_over():  # cancelled after an epoch's last step
            status = self._close_epoch()
        with _stop_requests() as stop_requested:
            while status == "running" and schedule.steps_done < schedule.total_steps:
                status = self._advance(stop_requested)
        return status

    def _advance(self, stop_requested: threading.Event) -> str:
        """One step, then re-planning, a stop, the epoch's end or a timed checkpoint; returns the status."""
        step_started = self.clock()
        self.epoch_losses.append(self._step())
        self.step_in_epoch += 1
        self._emit_step()
        now = self.clock()
        self.budget.record_step(step_started, now)
        stop, total = broadcast_ints([int(stop_requested.is_set()), self._replanned_total()], self.context)
        if total != self.scheduler.total_steps:
            self.scheduler.replan(total)
        if stop:
            return "cancelled"
        if self._epoch_is_over():
            return self._close_epoch()
        if self.context.is_main and now - self.last_checkpoint >= self.config.checkpoint_minutes * 60:
            self._save_checkpoint()
        return "running"

    def _emit_step(self) -> None:
        self.emit(
            Event(
                "step",
                {
                    "epoch": self.epoch + 1,
                    "step": self.scheduler.steps_done,
                    "total_steps": self.scheduler.total_steps,
                    "loss": self.epoch_losses[-1],
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "eta_s": self._eta(),
                },
            )
        )

    def _epoch_is_over(self) -> bool:
        schedule = self.scheduler
        return self.step_in_epoch >= self.config.steps_per_epoch or schedule.steps_done >= schedule.total_steps

    def _close_epoch(self) -> str:
        """End the current epoch (validation, log, checkpoint); returns "running" or a final status."""
        losses, self.epoch, self.step_in_epoch, self.epoch_losses = self.epoch_losses, self.epoch + 1, 0, []
        return self._end_epoch(float(np.mean(losses)))

    # ----- progress and budget -------------------------------------------------------------------------

    def _planned_epochs(self) -> int:
        return self.epoch + math.ceil(
            (self.scheduler.total_steps - self.scheduler.steps_done + self.step_in_epoch) / self.config.steps_per_epoch
        )

    def _validations_left(self) -> int:
        """Validations still to come in this process (rank 0 validates)."""
        if not self.val_cases or not self.context.is_main:
            return 0
        return math.ceil((self._planned_epochs() - self.epoch) / self.config.validate_every)

    def _eta(self) -> float:
        schedule = self.scheduler
        return self.budget.seconds_left(schedule.total_steps - schedule.steps_done, self._validations_left())

    def _replanned_total(self) -> int:
        """The schedule's total steps, re-planned by rank 0 to end at the budget (see :mod:`.budget`)."""
        schedule = self.scheduler
        if not self.context.is_main:
            return schedule.total_steps
        return self.budget.replanned_total(schedule.steps_done, schedule.total_steps, self._validations_left())

    def _step(self) -> float:
        images, labels = self.sampler.next_batch()
        images, labels = self.augmenter(images.to(self.context.device), labels.to(self.context.device))
        if self.config.channels_last and images.device.type != "mps":
            images = images.contiguous(
                memory_format=torch.channels_last_3d if images.ndim == 5 else torch.channels_last
            )
        loss = train_step(
            self.model,
            images,
            labels,
            self.loss_function,
            self.optimizer,
            self.scaler,
            precision=self.precision,
            gradient_clip=self.config.gradient_clip,
        )
        self.scheduler.step()
        return loss

    def _end_epoch(self, local_loss: float) -> str:
        """Validation, log, checkpoints and stop criteria after an epoch; returns "running" or a final status."""
        config = self.config
        train_loss = all_reduce_mean(local_loss, self.context)
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": self.budget.elapsed(),
        }
        last = self.scheduler.steps_done >= self.scheduler.total_steps
        self.emit(Event("epoch", {**row, "steps": self.scheduler.steps_done, "eta_s": self._eta()}))
        status = "running"
        if self.context.is_main:
            if self.val_cases and (self.epoch % config.validate_every == 0 or last):
                validation_started = self.clock()
                row.update(self._validate())
                self.budget.validation_seconds = self.clock() - validation_started
            self.history.add(row)
            self.history.write(self.output)
            self._save_checkpoint()
            patience = config.early_stopping_patience
            if patience is not None and self.best_epoch is not None and self.epoch - self.best_epoch >= patience:
                status = "early_stopped"
        stop = broadcast_ints([int(status != "running")], self.context)[0]
        if stop and status == "running":
            status = "stopped"
        return status

    def _validate(self) -> dict[str, float]:
        labels = [label for label in sorted(self.dataset.label_names) if label != 0]
        dice = validate(self.network, self.val_cases, labels, self.patch_size, self.context.device, self.precision)
        mean_dice = float(np.mean(list(dice.values())))
        self.last_dice = dice
        if mean_dice > self.best_mean_dice:
            self.best_mean_dice, self.best_epoch, self.best_dice = mean_dice, self.epoch, dice
            save_model(self.output / "checkpoints" / "best", self.network, self._model_card("best"), overwrite=True)
        self.emit(
            Event(
                "validation",
                {
                    "epoch": self.epoch,
                    "mean_dice": mean_dice,
                    "dice": {str(label): value for label, value in dice.items()},
                    "best_epoch": self.best_epoch,
                    "best_mean_dice": self.best_mean_dice,
                },
            )
        )
        return {"val_mean_dice": mean_dice, **{f"val_dice_{label}": value for label, value in dice.items()}}

    def _finish(self, status: str) -> Path | None:
        """Write the model: the final weights (a fully decayed schedule), or the best validation epoch's when
        the run stopped early; a cancelled run writes none."""
        if not self.context.is_main:
            return None
        if status == "cancelled":
            self._save_checkpoint()  # mid-epoch: resume continues with the next step
            self.emit(Event("message", {"level": "warning", "text": f"Stopped; resume with --resume {self.output}"}))
            return None
        target = self.output / "model"
        best = self.output / "checkpoints" / "best"
        if status == "early_stopped" and self.best_epoch is not None and best.is_dir():
            network, card = load_model(best, device="cpu")  # saved again: save_model swaps folders atomically
            save_model(target, network, with_epochs_done(card, self.epoch), overwrite=True)
        else:
            save_model(target, self.network, self._model_card("final"), overwrite=True)
        return target

    # ----- files -------------------------------------------------------------------------------------------

    def _model_card(self, which: str) -> ModelCard:
        """The validated card of the weights saved as ``which`` ("best" or "final")."""
        validation = validation_summary(
            which,
            epoch=self.epoch,
            best_epoch=self.best_epoch,
            best_mean_dice=self.best_mean_dice,
            best_dice=self.best_dice,
            last_dice=self.last_dice,
        )
        plan = {
            **self.training_plan.to_dict(),
            "steps_done": self.scheduler.steps_done,
            "final_total_steps": self.scheduler.total_steps,
            "replans": self.budget.replans,
            "elapsed_seconds": self.budget.elapsed(),
        }
        return training_card(
            which,
            where=f"of the {which} weights of {self.output}",
            dataset=self.dataset,
            network=self.network.config,
            config=self.config,
            patch_size=self.patch_size,
            preprocessing=self.plan,
            train_cases=[case.name for case in self.train_cases],
            val_cases=[case.name for case in self.val_cases],
            epochs_done=self.epoch,
            world_size=self.context.world_size,
            validation=validation,
            plan=plan,
        )

    def _write_run_description(self) -> None:
        description = {
            "library_version": __version__,
            "config": self.config.to_dict(),
            "preprocessing": self.plan.to_dict(),
            "patch_size": list(self.patch_size),
            "plan": self.training_plan.to_dict(),
            "dataset": self.dataset.to_dict(),
        }
        write_text_atomic(self.output / "training_config.json", json.dumps(description, indent=1), overwrite=True)

    def _save_checkpoint(self) -> None:
        extra = {
            "sampler": self.sampler.state_dict(),
            "augmenter": self.augmenter.state_dict(),
            "best_epoch": self.best_epoch,
            "best_mean_dice": self.best_mean_dice if self.best_epoch is not None else None,
            "best_dice": {str(label): value for label, value in self.best_dice.items()},
            "step_in_epoch": self.step_in_epoch,
            "epoch_losses": self.epoch_losses,
            **self.budget.state_dict(),  # elapsed_seconds, replans, validation_seconds
            "last_dice": {str(label): value for label, value in self.last_dice.items()},
            "history": self.history.rows,  # the log as of this checkpoint: a resume rewrites the files from it
        }
        save_training_state(
            self.output / "checkpoints" / "last",
            model=self.network,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            epoch=self.epoch,
            step=self.scheduler.steps_done,
            rng=capture_rng_state(),
            extra=extra,
            overwrite=True,
        )
        self.last_checkpoint = self.clock()
        self.after_checkpoint()
        self.emit(Event("checkpoint", {"epoch": self.epoch, "path": str(self.output / "checkpoints" / "last")}))

    def _restore(self) -> None:
        state = load_training_state(
            self.output / "checkpoints" / "last",
            model=self.network,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            map_location=self.context.device,
        )
        self.epoch = state.epoch
        self.step_in_epoch = state.extra.get("step_in_epoch", 0)
        self.epoch_losses = list(state.extra.get("epoch_losses", []))
        self.last_dice = {int(label): value for label, value in state.extra.get("last_dice", {}).items()}
        restore_rng_state(state.rng)
        if self.context.rank == 0:
            self.sampler.load_state_dict(state.extra["sampler"])
            self.augmenter.load_state_dict(state.extra["augmenter"])
        if state.extra.get("best_epoch") is not None:
            self.best_epoch = state.extra["best_epoch"]
            self.best_mean_dice = state.extra["best_mean_dice"]
            self.best_dice = {int(label): value for label, value in state.extra["best_dice"].items()}
        log = self.output / "training_log.csv"
        if "history" in state.extra:
            self.history = TrainingHistory([dict(row) for row in state.extra["history"]])
        elif log.is_file():  # a checkpoint of an earlier version
            self.history = TrainingHistory.from_csv(log.read_text(encoding="utf-8"))
            self.history.rows = [row for row in self.history.rows if row["epoch"] <= self.epoch]
        if self.context.is_main:  # the files may hold epochs done after the checkpoint by a killed process
            self.history.write(self.output)
        self.budget.load_state_dict(state.extra, self.scheduler.steps_done)
        logger.info(
            "Resuming %s at step %d of %d (epoch %d), %.0f s of the run done.",
            self.output,
            self.scheduler.steps_done,
            self.scheduler.total_steps,
            self.epoch + 1,
            self.budget.elapsed_before,
        )


# ----- helpers ---------------------------------------------------------------------------------------------


def _split(dataset: Dataset, config: TrainingConfig, output: Path, context: DistributedContext) -> tuple[list, list]:
    names = [case.name for case in dataset.cases]
    if config.fold is None:
        return names, []
    if context.is_main:
        splits = load_or_create_splits(output / "splits.json", names, config.folds, seed=config.seed)
    if context.distributed:
        torch.distributed.barrier()
    if not context.is_main:
        splits = load_or_create_splits(output / "splits.json", names, config.folds, seed=config.seed)
    return splits[config.fold]["train"], splits[config.fold]["val"]


def _labelled_dataset(data: str | os.PathLike[str] | Dataset, config: TrainingConfig) -> Dataset:
    """The dataset ``data``, checked for training: readable cases, labels consecutive from 0."""
    dataset = load_dataset(data, mask_values=config.mask_values, allow_partial_channels=config.allow_partial_channels)
    validate_dataset(dataset)
    labels = sorted(dataset.label_names)
    if labels != list(range(len(labels))):
        raise InputError(
            f"Label values must be consecutive from 0 (got {labels}); remap the labels to 0..{len(labels) - 1}."
        )
    return dataset


def _saved_plans(output: Path) -> tuple[PreprocessingPlan, TrainingPlan]:
    """The preprocessing and training plans of the run saved in ``output`` (resume)."""
    saved = json.loads((output / "training_config.json").read_text(encoding="utf-8"))
    if "plan" not in saved:
        raise InputError(
            f"The run in {output} was saved by an older MedSegCNN without a training plan; it cannot be "
            "resumed. Start a new run (another folder, or --overwrite)."
        )
    return PreprocessingPlan.from_dict(saved["preprocessing"]), TrainingPlan.from_dict(saved["plan"])


def _plan_training(
    config: TrainingConfig,
    fingerprint: dict[str, Any],
    preprocessing: PreprocessingPlan,
    *,
    in_channels: int,
    out_channels: int,
    context: DistributedContext,
    timer: StepTimer | None,
    seconds_spent: Callable[[], float],
) -> TrainingPlan:
    """Rank 0's plan (step times are measured once), shared with every rank; ``seconds_spent`` gives the
    seconds the run has taken so far (the budget's time left is planned)."""
    budget = config.time_budget_minutes
    cuda = [context.device] if context.device.type == "cuda" else []
    measured = None
    if context.is_main:
        with torch.random.fork_rng(devices=cuda):  # measuring must not move the run's random streams
            measured = plan_training(
                config,
                fingerprint=fingerprint,
                preprocessing=preprocessing,
                in_channels=in_channels,
                out_channels=out_channels,
                device=context.device,
                timer=timer or StepTimer(context.device),
                available_seconds=None if budget is None else budget * 60 - seconds_spent(),
                device_name=describe_device(context.device),
            )
    shared = broadcast_text(None if measured is None else json.dumps(measured.to_dict()), context)
    return TrainingPlan.from_dict(json.loads(shared))


def _build_model(config: TrainingConfig, context: DistributedContext) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The network on the run's device (fine-tuned from, frozen and laid out as ``config`` says), and the model
    that trains it: the network itself, its DistributedDataParallel wrapper, compiled if asked."""
    network = build_network(dict(config.network))
    _check_patch(tuple(config.patch_size), network.divisor)
    if config.init_from:
        _initialise_from(network, config.init_from, context)
    if config.freeze_encoder:
        network.encoder.requires_grad_(False)
    network.to(context.device)
    if config.channels_last and context.device.type != "mps":
        network.to(memory_format=torch.channels_last_3d if config.spatial_dims == 3 else torch.channels_last)
    model: torch.nn.Module = network
    if context.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[context.device.index] if context.device.type == "cuda" else None
        )
    if config.compile:
        model = torch.compile(model)
    return network, model


def _preprocess(dataset: Dataset, name: str, plan: PreprocessingPlan, seed: int) -> PreprocessedCase:
    case = next(case for case in dataset.cases if case.name == name)
    image, label = load_case(case)
    if label is None:
        raise InputError(f"Case {name} has no label map; training needs one for every case.")
    return preprocess_case(image, label, plan, seed=seed, name=name)


def _check_patch(patch_size: tuple[int, ...], divisor: tuple[int, ...]) -> None:
    if any(p % d for p, d in zip(patch_size, divisor, strict=True)):
        needed = tuple(math.ceil(p / d) * d for p, d in zip(patch_size, divisor, strict=True))
        raise InputError(f"patch_size {patch_size} must be a multiple of {divisor} for this network; try {needed}.")


def _loss_function(config: TrainingConfig, network: torch.nn.Module) -> torch.nn.Module:
    """The configured loss; with deep supervision, weighted over the U-Net's decoder outputs (one per level)."""
    loss = build_loss(config.loss, batch_dice=config.batch_dice)
    if not network.config.get("deep_supervision"):
        return loss
    return DeepSupervisionLoss(loss, num_outputs=len(network.config["features"]) - 1)


def _check_initial_weights(source: str) -> None:
    """Refuse a fine-tuning source that :func:`_initialise_from` could not read (checked before the data are
    prepared: a state dict is read, a model's card and weights file looked up)."""
    path = Path(source)
    if path.suffix in (".pt", ".pth"):
        import_state_dict(path)
    else:
        read_model_card(resolve_model_folder(path), require_weights=True)


def _initialise_from(network: torch.nn.Module, source: str, context: DistributedContext) -> None:
    """Transfer learning: copy the weights whose names and shapes match from a model folder or state dict."""
    path = Path(source)
    if path.suffix in (".pt", ".pth"):
        state = import_state_dict(path)
    else:
        pretrained, card = load_model(resolve_model_folder(path), device="cpu")
        expected, found = card.network["in_channels"], network.config["in_channels"]
        if expected != found:
            raise InputError(
                f"{source} was trained on {expected} input channel(s) ({', '.join(card.channels)}) but "
                f"this dataset has {found}; fine-tune from a model with the same channels."
            )
        state = pretrained.state_dict()
    loaded, skipped = load_matching_weights(network, state)
    if not loaded:
        raise InputError(f"No weights of {source} match this network (names or shapes differ); nothing to fine-tune.")
    if context.is_main:
        logger.info("Initialised %d tensors from %s; %d not loaded: %s", len(loaded), source, len(skipped), skipped[:5])
