"""Tiny real trainings with Lightning and Hugging Face, run by test_integrations.py in a child process.

Run as ``python framework_runs.py {lightning|huggingface} TARGET WORKDIR``; prints one JSON object
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


if __name__ == "__main__":
    which, target, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    result = {"lightning": lightning, "huggingface": huggingface}[which](target, work)
    print("RESULT " + json.dumps(result))
