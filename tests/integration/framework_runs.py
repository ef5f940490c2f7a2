"""Tiny real trainings with Lightning and Hugging Face, run by test_integrations.py in a child process.

Run as ``python framework_runs.py SCENARIO TARGET WORKDIR`` (a name in ``scenarios`` below: ``lightning``,
``huggingface``, ``lightning_lr_monitor``, ...); prints one JSON object
with what the parent test checks besides the server's record. A child process keeps these
libraries (hundreds of MB) out of the test process, whose memory other tests measure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

logging.basicConfig(level=logging.ERROR)


def _digits_loader(batch_size: int = 64, shuffle: bool = True):
    from runwatch.service.demo_training import _digits

    x, y, _, _ = _digits()
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=shuffle, drop_last=True)


def lightning(target: str, work: Path) -> dict:
    import pytorch_lightning as pl

    from runwatch.client.integrations.lightning import RunwatchCallback, RunwatchLogger
    from runwatch.service.demo_training import CONFIGS, build_model

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)

    def trainer(logger, callback, max_steps: int, **kw):
        return pl.Trainer(
            max_steps=max_steps, logger=logger, callbacks=[callback], log_every_n_steps=1, accelerator="cpu",
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw,
        )

    class Classifier(pl.LightningModule):
        def __init__(self, lr: float = 1e-3):
            super().__init__()
            self.save_hyperparameters()
            self.net = build_model("healthy")

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    healthy_logger = RunwatchLogger(project="lightning", target=target, spool_dir=work / "spool", tags=["tiny"])
    healthy_cb = RunwatchCallback(watch_every=5)
    t = trainer(healthy_logger, healthy_cb, 30, limit_val_batches=2, val_check_interval=10)
    t.fit(Classifier(), _digits_loader(), _digits_loader(shuffle=False))

    cfg = CONFIGS["diverging"]  # SGD + momentum, LR warmed up past the stability limit

    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = build_model("diverging")
            self.losses: list[float] = []

        def training_step(self, batch, _):
            x, y = batch
            loss = F.mse_loss(self.net(x), F.one_hot(y, 10).float())
            self.losses.append(loss.item())
            self.log("train_loss", loss)
            if self.global_step >= 120:
                time.sleep(0.01)  # real steps are slower than this toy's; leaves the answer time to arrive
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=cfg.lr, momentum=cfg.momentum)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cfg.lr_at(s) / cfg.lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    div_logger = RunwatchLogger(project="lightning", target=target, spool_dir=work / "spool")
    div_cb = RunwatchCallback()
    model = Regressor()
    trainer(div_logger, div_cb, 400).fit(model, _digits_loader())
    time.sleep(0.2)  # the runs' connections close in the background after finish()
    return {
        "healthy": {"run_id": healthy_logger.version, "stopped_at": healthy_cb.stopped_at, "finished": healthy_logger.run.finished},
        "diverging": {
            "run_id": div_logger.version,
            "stopped_at": div_cb.stopped_at,
            "steps": len(model.losses),
            "all_finite": all(math.isfinite(v) for v in model.losses),
        },
    }


def huggingface(target: str, work: Path) -> dict:
    import transformers

    from runwatch.client.integrations import huggingface as rw_hf

    transformers.logging.set_verbosity_error()

    def tiny_gpt2():
        torch.manual_seed(0)
        config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config)  # randomly initialised from a config: no download
        gen = torch.Generator().manual_seed(0)
        data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 16), generator=gen)]
        return model, data

    def args(out: str, **kw):
        return transformers.TrainingArguments(
            output_dir=str(work / out), per_device_train_batch_size=8, save_strategy="no", use_cpu=True, disable_tqdm=True, **kw
        )

    # 1. report_to="runwatch": the Trainer builds the callback itself, configured by the environment.
    os.environ.update(
        RUNWATCH_TARGET=target, RUNWATCH_PROJECT="hf", RUNWATCH_RUN_ID="hf-report-to", RUNWATCH_WATCH_EVERY="5",
        RUNWATCH_SPOOL_DIR=str(work / "spool"),
    )
    rw_hf.register()
    model, data = tiny_gpt2()
    a = args("out1", max_steps=20, logging_steps=5, learning_rate=1e-3, report_to=["runwatch"])
    transformers.Trainer(model=model, args=a, train_dataset=data).train()

    # 2. The callback stops the Trainer once a stop is requested.
    class AnomalyAt(transformers.TrainerCallback):
        """Stands in for a divergence anomaly arriving at step 6 (the real one is tested with Lightning)."""

        def __init__(self, rw):
            self.rw = rw

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                self.rw.run.request_stop("stopped by runwatch: divergence predicted at step 6")

    rw_callback = rw_hf.RunwatchCallback(project="hf", run_id="hf-stopped", target=target, spool_dir=work / "spool")
    model, data = tiny_gpt2()
    trainer = transformers.Trainer(
        model=model, args=args("out2", max_steps=50, logging_steps=1, report_to="none"), train_dataset=data,
        callbacks=[AnomalyAt(rw_callback), rw_callback],
    )
    trainer.train()
    time.sleep(0.2)
    return {"stopped": {"global_step": trainer.state.global_step, "stopped_at": rw_callback.stopped_at}}


def _lightning_trainer(logger, callbacks, max_steps: int, **kw):
    import pytorch_lightning as pl

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    return pl.Trainer(
        max_steps=max_steps, logger=logger, callbacks=callbacks, accelerator="cpu", enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )


def _finish(lg) -> dict:
    """Finish the logger's run; what finish() answered and the delivery counters."""
    ok = lg.run.finish(timeout=30)
    stats = lg.run.stats()
    violations = [reason for _, _, reason in lg.run.client.violations][:3]
    return {
        "run_id": lg.version, "finish": ok, "rejected": stats.rejected, "duplicates": stats.duplicates,
        "violations": violations,
    }


def _digits_classifier(configure):
    """A LightningModule class: the demo's healthy MLP on digits, logging ``train_loss``; ``configure(module)``
    answers ``configure_optimizers``."""
    import pytorch_lightning as pl

    from runwatch.service.demo_training import build_model

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = build_model("healthy")

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return configure(self)

    return Classifier


def lightning_lr_monitor(target: str, work: Path) -> dict:
    """A metric logged at the batch's start (LearningRateMonitor's lr) before the callback's own at each step."""
    from pytorch_lightning.callbacks import LearningRateMonitor

    from runwatch.client.integrations.lightning import RunwatchCallback, RunwatchLogger

    def configure(module):
        opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    Classifier = _digits_classifier(configure)

    lg = RunwatchLogger(project="lightning", target=target, spool_dir=work / "spool", finish_on_finalize=False)
    cb = RunwatchCallback(watch_every=5)
    trainer = _lightning_trainer([lg], [LearningRateMonitor("step"), cb], 40, log_every_n_steps=1)
    trainer.fit(Classifier(), _digits_loader())
    return {**_finish(lg), "global_step": trainer.global_step}


def lightning_log_every_50(target: str, work: Path) -> dict:
    """A run whose learning rate grows 8 % a step until it diverges, under Lightning's default log_every_n_steps=50."""
    import pytorch_lightning as pl

    from runwatch.client.integrations.lightning import RunwatchCallback, RunwatchLogger

    pl.seed_everything(0, verbose=False)
    x = torch.randn(4096, 32)
    y = (x @ torch.randn(32, 8)).argmax(1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)

    class Classifier(pl.LightningModule):
        def __init__(self):
            super().__init__()
            nn = torch.nn
            self.net = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 8))
            self.losses: list[float] = []

        def training_step(self, batch, _):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.losses.append(loss.item())
            self.log("train_loss", loss)
            time.sleep(0.005)  # real steps are slower than this toy's; leaves the answer time to arrive
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.08**s, 2000))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    lg = RunwatchLogger(project="lightning", target=target, spool_dir=work / "spool")
    cb = RunwatchCallback()
    model = Classifier()
    _lightning_trainer(lg, [cb], 400, log_every_n_steps=50).fit(model, loader)
    time.sleep(0.2)  # the run's connection closes in the background after finish()
    return {"run_id": lg.version, "stopped_at": cb.stopped_at, "batches": len(model.losses)}


def huggingface_clipped(target: str, work: Path) -> dict:
    """A tiny GPT-2 trained with a learning rate large enough that the Trainer clips its gradients (max_grad_norm=1)."""
    import transformers

    from runwatch.client.integrations import huggingface as rw_hf
    from runwatch.client.torch_watch import _leaf_layers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config)  # randomly initialised from a config: no download
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 16), generator=gen)]
    layers = [(name, [p for p in m.parameters() if p.requires_grad]) for name, m in _leaf_layers(model)]
    pre_clip: dict[int, dict[str, float]] = {}  # step -> layer -> its gradient norm just before clipping

    class Recording(transformers.Trainer):
        """Records the gradient norms the Trainer clips (what runwatch should report): per layer, and its total."""

        def _clip_grad_norm(self, model):
            step = self.state.global_step + 1  # the step runwatch files this optimizer step under
            pre_clip[step] = {
                name: math.sqrt(sum(float(p.grad.norm()) ** 2 for p in ps if p.grad is not None))
                for name, ps in layers if any(p.grad is not None for p in ps)
            }
            total = super()._clip_grad_norm(model)
            pre_clip[step]["total"] = float(total)
            return total

    # AdamW at lr 1 is far too hot: runwatch predicts its divergence and would stop it early (this test is about
    # the gradient norms it records, over all 16 steps).
    cb = rw_hf.RunwatchCallback(project="hf", target=target, spool_dir=work / "spool", watch_every=2,
                                stop_on_divergence=False)
    args = transformers.TrainingArguments(
        output_dir=str(work / "out-clip"), per_device_train_batch_size=8, save_strategy="no", use_cpu=True,
        disable_tqdm=True, report_to="none", max_steps=16, logging_steps=3, learning_rate=1.0, max_grad_norm=1.0,
    )
    trainer = Recording(model=model, args=args, train_dataset=data, callbacks=[cb])
    trainer.train()
    time.sleep(0.2)
    logged = {h["step"]: h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h}
    stats = cb.run.stats()
    return {
        "run_id": cb.run.run_id, "trainer_grad_norm": logged, "pre_clip": pre_clip, "finish": cb.run.finish(),
        "rejected": stats.rejected,
    }


def lightning_resumed(target: str, work: Path) -> dict:
    """A fit stopped at step 12, then resumed (``resume=True``) from its step-6 checkpoint up to step 20."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from runwatch.client.integrations.lightning import RunwatchCallback, RunwatchLogger

    Classifier = _digits_classifier(lambda module: torch.optim.Adam(module.parameters(), lr=1e-3))

    def fit(max_steps: int, ckpt_path: str | None) -> dict:
        lg = RunwatchLogger(project="lightning", run_id="pl-resumed", target=target, spool_dir=False,
                            finish_on_finalize=False, resume=ckpt_path is not None)
        saver = ModelCheckpoint(dirpath=work / "ckpt", every_n_train_steps=6, save_top_k=-1, filename="{step}")
        trainer = pl.Trainer(
            max_steps=max_steps, logger=lg, callbacks=[saver, RunwatchCallback()], accelerator="cpu",
            log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.fit(Classifier(), _digits_loader(shuffle=False), ckpt_path=ckpt_path)
        return _finish(lg)

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    first = fit(12, None)
    second = fit(20, str(work / "ckpt" / "step=6.ckpt"))
    return {"first": first, "second": second}


def huggingface_resumed(target: str, work: Path) -> dict:
    """A Trainer stopped at step 12, then resumed from its step-6 checkpoint up to step 20, with one run id."""
    import transformers

    from runwatch.client.integrations import huggingface as rw_hf

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    gen = torch.Generator().manual_seed(0)
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (64, 16), generator=gen)]

    def train(max_steps: int, checkpoint: str | None) -> int:
        cb = rw_hf.RunwatchCallback(project="hf", run_id="hf-resumed", target=target, spool_dir=False)
        args = transformers.TrainingArguments(
            output_dir=str(work / "out-resumed"), per_device_train_batch_size=8, save_strategy="steps", save_steps=6,
            use_cpu=True, disable_tqdm=True, report_to="none", max_steps=max_steps, logging_steps=1, learning_rate=1e-3,
        )
        model = transformers.GPT2LMHeadModel(config)
        transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train(
            resume_from_checkpoint=checkpoint
        )
        return cb.run.stats().duplicates

    train(12, None)
    duplicates = train(20, str(work / "out-resumed" / "checkpoint-6"))
    return {"duplicates": duplicates}


if __name__ == "__main__":
    which, target, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    scenarios = {
        "lightning": lightning, "huggingface": huggingface, "lightning_lr_monitor": lightning_lr_monitor,
        "lightning_log_every_50": lightning_log_every_50, "huggingface_clipped": huggingface_clipped,
        "huggingface_resumed": huggingface_resumed, "lightning_resumed": lightning_resumed,
    }
    result = scenarios[which](target, work)
    print("RESULT " + json.dumps(result))
