"""Metric events from iteration and epoch lines of plain-text training logs.

:class:`MetricExtractor` reads one run's lines in order and returns
``(step, {metric: value})`` events with runwatch's metric names (``loss``,
``val/loss``, ``grad_norm``, ``lr``, ``loss_scale``, ``step_time`` in seconds,
...), so a run that only prints text gets every metric detector.

Precision comes first: a number becomes a metric only in a line of a known
shape, next to a key that names it, and only when it ends at a delimiter
(``2.5s``, ``11.5K``, ``15%`` and ``2:28:37`` are skipped, not guessed).

Supported shapes (one parser each, tried in order):

- Megatron-LM / DeepSpeed / GPT-NeoX / nanotron ``iteration N/ M | key: value | ...``
  and ``validation loss at iteration N | lm loss: ... | lm loss PPL: ...`` (``throughput per GPU (TFLOP/s/GPU)`` is
  ``tflops_per_gpu``); NeMo 2's ``Training epoch 1, iteration 49/99 | ... | global_step: 149 | reduced_train_loss: ...``
  at its ``global_step`` (the iteration counts within the epoch; ``train_step_timing in s`` is ``step_time``)
- fairseq ``epoch 001: 450 / 1891 loss=..., num_updates=445, ...`` and its
  ``valid on 'valid' subset | ... | num_updates N`` summary (train epoch summaries,
  averages of lines already read, are skipped)
- Hugging Face Trainer dicts ``{'loss': 0.41, 'grad_norm': 1.2, 'learning_rate': 5e-05, 'epoch': 0.5}`` (also with
  the values printed as strings, ``{'loss': '0.41', ...}``, as newer transformers print them) and JSON-lines dicts
  (timm ``{"train_loss": ..., "epoch": 147}``; fairseq's ``--log-format json``, at its ``num_updates``). A dict
  of settings is not read: one whose only metric-like key is a learning rate, one holding ``True``/``None``/``null``,
  one nested in another, or one printed after a dot leader or a word such as ``config``/``params``/``args``
  (DeepSpeed's ``fp16 ....... {'enabled': True, 'loss_scale': 0, ...}``)
- mmengine / mmcv ``Epoch(train) [5][4600/7724] lr: ... loss: ...`` (also ``Epoch [5/12][4600/7724]``) and
  ``Iter(train) [N/M]``; mmcv's evaluation lines ``Epoch(val) [5][625]\tbbox_mAP: ...`` / ``Iter(val) [500]\tmIoU: ...``
  at the current step (``..._copypaste`` fields, six numbers, are skipped)
- detectron2 ``iter: 4959  total_loss: 10.31 ...``; timm ``Train: 1 [ 350/5004 ( 7%)] Loss: ...``
- MetricLogger (DeiT/MAE/DETR) ``Epoch: [1]  [1480/1504]  lr: ...  loss: 0.92 (0.95)`` and PyTorch's imagenet
  example ``Epoch: [0][ 10/5005]\tTime  0.512 ( 0.910)\tData ...\tLoss ...\tAcc@1 ...`` (the value, not the
  average in parentheses; ``Acc@1`` is ``acc1``); their evaluation summaries ``* Acc@1 81.8 Acc@5 95.6 loss 0.8``
  as ``val/acc1``, ``val/acc5``, ``val/loss`` at the current step
- nanoGPT ``iter 2920: loss 3.9883, time 1099.34ms`` and ``step 3000: train loss ..., val loss ...``
- OpenNMT ``Epoch  1, 12900/37527; acc: ...; ppl: ...; xent: ...`` and ``Step 100/20000; ...``; its
  ``Validation perplexity: 450.1`` / ``Validation accuracy: 12.3`` lines as ``val/ppl``, ``val/acc`` at the current step
- PyTorch's examples ``Train Epoch: 1 [640/60000 (1%)]\tLoss: 1.359`` (the step counts samples) and
  ``Test set: Average loss: 0.05, Accuracy: 9834/10000 (98%)``
- torchtune ``1|25|Loss: 1.44`` (epoch|step|loss, its progress bar's description)
- fastai's results table: ``epoch  train_loss  valid_loss  accuracy  time`` then ``0  0.51  0.35  0.89  00:12``
- the Hugging Face Trainer's (and Unsloth's) notebook table pasted as text, tab-, space- or pipe-separated:
  ``Step  Training Loss  Validation Loss  Accuracy`` then ``500  0.41  0.39  0.85`` (``No log`` = absent)
- a custom script's table of values per step: a header ``step\tloss`` (``iter  loss  lr``, ``epoch,train_loss,val_loss``;
  tab-, comma- or space-separated) whose first column is the step (or the epoch) and every other column a metric-like
  name, then ``10\t8.4607`` per step; a column that is no metric leaves the table unread, a line of another shape ends it
- Ultralytics YOLO (v5 and v8+): ``Epoch GPU_mem box_loss cls_loss dfl_loss Instances Size`` then
  ``1/100  2.61G  1.18  1.53  1.24  42  640: 100%|...| 8/8 [...]`` and the validation ``all`` row
- Stable-Baselines3's tables between rules (``| train/ |`` sections, ``|  loss | 6.06 |`` rows): one event
  at ``time/total_timesteps`` when the closing rule is printed
- the Hugging Face Trainer's ``***** eval metrics *****`` block (``  eval_loss = 0.41``) at the current step
- DeepSpeed's engine report ``step=100, skipped=0, lr=[0.0001], ...``
- MindSpore's ``LossMonitor``: ``epoch: 1 step: 375, loss is 2.298612`` (the step counts within the epoch); any
  ``<key> is <number>`` is read as ``<key>: <number>``
- TensorFlow Estimator's ``loss = 0.69, step = 100`` (a step-anchored line) and its evaluation result
  ``Saving dict for global step 300: accuracy = 0.91, global_step = 300, loss = 0.25`` (``val/``, at that step)
- ESPnet2's (and FunASR's) ``2epoch:train:11-20batch: loss=50.87, acc=0.47, optim0_lr0=1e-05, ...`` and the
  ``[valid]`` part of its ``2epoch results:`` line
- MosaicML Composer's console: ``[epoch=1][batch=100/1000]:`` then rows ``Train loss/train/total: 2.34``
- Keras ``Epoch 2/10`` then ``9595/9595 [====] - 1s - loss: 0.62 - val_loss: 0.52``
- CLU's ``LoggingWriter`` (JAX: Flax, T5X, big_vision) ``[100] learning_rate=0.001, loss=2.31``; a ``collection=``
  after the step names the phase (``train``; ``..eval..``/``..val..`` as ``val/``; one of unknown phase is not read)
- bracketed fractions before ``key: value`` fields: ``[0/5][50/1583]\tLoss_D: 0.31\tLoss_G: 8.40`` (PyTorch's
  DCGAN example: epoch, then batch) and ``[100/1000] loss: 2.34 lr: 0.001`` (an iteration)
- tqdm progress bars with a postfix (Lightning ``Epoch 0: 11%|█ | 2/18 [00:11<01:33, 5.82s/it, loss=10.5]``; NeMo's
  bars without a rate or a total, ``Epoch 0: : 100%|█| 50/50 [16:26<00:00, reduced_train_loss=11.7, global_step=49.0]``,
  at their ``global_step``)
- an inference server's per-request lines with a duration (:mod:`runwatch.models.text.requests`): ``latency_ms``
  at a running request count
- step-anchored ``key: value`` / ``key=value`` lines (``Epoch 3 step 200 loss=0.41 acc=0.88``, ``steps: 200 loss: 2.3``,
  ``train iter: 100 loss_net: nan loss_scale: 785.42``, torchtitan's ``step: 10  loss:  7.12  grad_norm:  1.23``),
  keeping metric-like keys only; a phase word starting the line or right before the step word (torchtitan's
  ``validate step: 20  loss: 6.9``, ``eval step 100 loss 2.4``) makes them ``val/`` (``test/``)
- lines that start with a step and give ``key value`` fields (``Step 100 | loss 2.34 | lr 3e-4``,
  ``iter 100 step 25: loss 2.34, iter time: 120ms``), keeping metric-like keys only
- lines of ``Key: value`` pairs after an ``Epoch: 3/30`` line (the step is the epoch), also pairs separated by
  spaces alone (PyTorch's transfer-learning tutorial: ``Epoch 0/24`` then ``train Loss: 0.61 Acc: 0.67`` and
  ``val Loss: 0.25 Acc: 0.90``), and after the CycleGAN repository's ``End of epoch 4 / 100``
- a phase word and the epoch: DGCNN's (and the point-cloud repositories') ``Train 3, loss: 1.98, train acc: 0.74``
  and ``Test 3, loss: ..., test acc: ...``
- PaddlePaddle's examples ``epoch: 0, batch_id: 100, loss is: 0.90, acc is: 0.70`` (``is`` before the colon)
- LeRobot's ``step:1K smpl:32K ep:101 epch:2.53 loss:1.226 grdn:34.825 lr:1.0e-05 updt_s:0.502 data_s:0.010``, whose
  counters are rounded from 1,000 on: the step the log's rhythm predicts (the last step plus the last rise) where it
  rounds to the printed one, else the printed value (``grdn`` is ``grad_norm``, ``updt_s`` ``step_time``)
- an epoch header with its settings, ``Epoch 1/2 (lr=0.01000)``, then ``Batch 50/295, Loss: 0.41`` lines; a script's
  sentences ``Epoch 0 trained with loss: 0.0197. The running time is ...`` and ``Epoch 0 evaluated with loss: ...``
  (``val/``), a value ending at the sentence's full stop
- tutorial and model-zoo loops: PyTorch's CIFAR-10 tutorial ``[1,  2000] loss: 2.234`` (epoch, batch within it),
  PyTorch-GAN's ``[Epoch 0/200] [Batch 10/938] [D loss: 0.69] [G loss: 0.70]``, the CycleGAN/pix2pix repository's
  ``(epoch: 1, iters: 100, time: 0.1, data: 0.0) G_GAN: 1.2 G_L1: 30.1 D_real: 0.5 D_fake: 0.6``, darknet's
  ``1000: 0.51, 0.60 avg loss, 0.001 rate, 2.3 seconds, 64000 images`` and TensorFlow tutorials'
  ``Average loss at step 2000: 4.37`` / ``Minibatch loss at step 500: 1.23``; ``[3] loss: 0.309`` (one counter)
- Torch7's char-rnn (and lstm-char-cnn) ``100/21150 (epoch 0.236), train_loss = 1.98, grad/param norm = ...``
- loguru's records (``| INFO | module:function:86 - epoch=1``) and ``key=value`` pairs under an ``epoch=N`` record;
  ``1 epoch, loss: 0.0148,  loss_test: 0.0153`` (the count before the word); a line of counters
  (``iteration: 5``, ``Epoch: 1<TAB>Batch: 50``) then values on lines of their own
- lines of ``key: value`` pairs with no step anywhere in the log (``train loss:1.10886`` behind a logging prefix,
  ``[TRAIN(0,0,33)]: i: 0, train_loss: 1.386`` behind a tag), numbered in order; a line of a loss's parts
  (``classify loss: 0.92, angle loss: 0.65``) is not the loss

A phase may also come after the epoch it reports on (``Epoch 1 Validation - Loss: 18.49``) or after the metric
(``loss_test``, ``acc_val``). A score printed as a percentage (``target_val_acc: 55.16%``) is read as a fraction beside
the line's other pairs.

A PyTorch scalar tensor printed as a value (``loss: tensor(0.6931, device='cuda:0', grad_fn=<...>)``, what
``print(f"loss: {loss}")`` writes, also ``tensor([0.69])``) is read as its number in any of these shapes; a
tensor of several values (``tensor([1, 0, 1])``) is not a value.

Steps come from the line. Where a shape has an epoch and a batch index, the
step is ``(epoch - epoch_base) * batches_per_epoch + batch``. Hugging Face dicts
take the step of the progress bar printed just before them. A line with no
step of its own is placed one step after the previous event (a running counter).
Steps never go back: an event below the last step is dropped and counted, and a
metric already emitted at a step is not emitted again there. Progress bars
repeat their line as they refresh, so a bar's values are held until the bar
moves on (or :meth:`MetricExtractor.flush`).

Examples
--------
>>> x = MetricExtractor()
>>> x.extract(" iteration      100/    1000 | lm loss: 2.340000E+00 | grad norm: 1.200 | loss scale: 4096.0 |")
[(100, {'loss': 2.34, 'grad_norm': 1.2, 'loss_scale': 4096.0})]
>>> x.extract("{'loss': 0.41, 'grad_norm': nan, 'learning_rate': 5e-05, 'epoch': 0.5}")
[(101, {'loss': 0.41, 'grad_norm': nan, 'lr': 5e-05, 'epoch': 0.5})]
>>> x.extract("Epoch 3 step 200 loss=0.41 acc=0.88")
[(200, {'loss': 0.41, 'acc': 0.88})]
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Callable, Iterable

from runwatch.models.text.launchers import LAUNCHER_PREFIX
from runwatch.models.text.requests import request_latency, request_route

Event = tuple[int, dict[str, float]]
#: Megatron-LM's ``number of skipped iterations`` (fp16 overflows in the logging interval) as read from its lines.
SKIPPED_ITERATIONS = "number_of_skipped_iterations"
STEP_LIMIT = 2**63  # a step printed beyond int64 (a garbled line) is dropped like a step that went back
MAX_ROUTES = 8  # request routes a run's latency is split by (path parameters that are no ids must not explode it)

# A digit must follow a decimal point: "0." at the end of a cut-off line is not a value.
_NUM = r"[-+]?(?:(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?|[nN][aA][nN]|[iI][nN][fF](?:inity)?)"
# A value must end at a delimiter: "2.5s", "11.5K", "15%", "2:28:37" are not plain numbers.
# (a sentence's full stop before the next sentence ends one too: "loss: 0.0197. The running time is ...")
_END = r"(?=[\s,;|)\]}'\"]|:\s|:$|\.\s+[A-Z]|$)"
# "loss is: 2.5": PaddlePaddle's examples name the value with "is"
# A key and its value may be quoted outside a dict too: PaddleDetection's "iter: 20, lr: 0.000085, 'loss': 'nan', eta: ..."
# A key starts a token (the lookbehind): tried at every letter of a long word, the scan to the word's end made one
# 64 KiB line cost seconds (quadratic), and a key inside a word was never taken anyway.
_KV_HEAD = r"(?<![\w./\-])([A-Za-z][\w./\-]*)['\"]?(?:\s+is)?\s*[:=]\s*['\"]?(" + _NUM + r")['\"]?"
_KV = re.compile(_KV_HEAD + _END)
# The same, a percentage allowed: "Acc: 55.16%", "acc=71.2 %" (read as a fraction, for scores alone: _pairs)
_KV_PERCENT = re.compile(_KV_HEAD + r"(\s?%)?" + _END)
_PERCENT_SCORE = re.compile(r"acc|top-?[15]\b|iou|dice|f1|precision|recall|\bmap", re.IGNORECASE)
# A scalar tensor as PyTorch prints it; its options (device, dtype, grad_fn) hold no parentheses.
# "<key> is <number>" as "<key>: <number>" (MindSpore's LossMonitor, scripts that print "loss is 0.53"); a key
# followed by anything but a number ("Epoch is [1/600]") is left alone, and so is "loss is nan, stopping
# training": a sentence, which the signatures read as the message it is
_IS_VALUE = re.compile(r"\b([A-Za-z][\w/.\-]*)(?: so far)? is (?=[-+]?\.?\d)")  # "avg loss so far is 0.11" (Paddle)
_TENSOR = re.compile(r"tensor\((?:(" + _NUM + r")|\[(" + _NUM + r")\])(?:,[^()]*)?\)")


def _tensor_value(m: re.Match) -> str:
    return m.group(1) or m.group(2)

_ALIASES = {
    "loss": "loss", "lm loss": "loss", "lm_loss": "loss", "train loss": "loss", "train_loss": "loss",
    "training loss": "loss", "training_loss": "loss", "total_loss": "loss", "total loss": "loss",
    "grad norm": "grad_norm", "grad_norm": "grad_norm", "gnorm": "grad_norm", "gradient norm": "grad_norm",
    "gradient_norm": "grad_norm", "global_grad_norm": "grad_norm", "total_grad_norm": "grad_norm",
    "loss scale": "loss_scale", "loss_scale": "loss_scale", "loss-scale": "loss_scale",
    "learning rate": "lr", "learning_rate": "lr", "lr": "lr", "train_lr": "lr",
    "ppl": "ppl", "perplexity": "ppl", "train perplexity": "ppl", "train_ppl": "ppl",
    "acc": "acc", "accuracy": "acc", "train_acc": "acc", "train acc": "acc", "train accuracy": "acc",
    "training accuracy": "acc", "training acc": "acc", "training_accuracy": "acc", "train_accuracy": "acc",
    "lm loss value": "loss", "epoch": "epoch", "loss/total_loss": "loss",  # TF Object Detection API's dicts
    # a loop that prints only the epoch's (or the interval's) mean training loss
    "avg_loss": "loss", "avg loss": "loss", "average loss": "loss", "average_loss": "loss", "mean loss": "loss",
    "mean_loss": "loss", "running loss": "loss", "running_loss": "loss",
    "avr_loss": "loss",  # kohya's sd-scripts (LoRA / DreamBooth): the bar's running mean, its only loss
    "grdn": "grad_norm", "updt_s": "step_time", "data_s": "data_time",  # LeRobot's training line
    "tr_loss": "loss", "trn_loss": "loss",  # abbreviated splits ("tr_loss 0.32 va_loss 0.43")
    # MXNet's CrossEntropy metric and GluonCV's loss names, which are the loss those trainers print; a line that
    # prints a loss too keeps that one (_CROSS_ENTROPY below)
    "cross-entropy": "loss", "crossentropy": "loss", "cross_entropy": "loss", "cross entropy": "loss",
    "softmaxcrossentropyloss": "loss", "softmax_cross_entropy": "loss", "xent": "loss",
    # a negative log-likelihood printed as the loss (Tinker's fine-tuning scripts: "step 3/45 lr=9e-05 nll=0.43");
    # like a cross-entropy, a loss of the line's own replaces it
    "nll": "loss",
    # an epoch's mean under the split's name (PaddleVideo: "END epoch:1   train loss_avg: 3.94", "val loss_avg: 3.62")
    "loss_avg": "loss", "loss_mean": "loss", "train loss_avg": "loss", "train_loss_avg": "loss",
}
_CROSS_ENTROPY = frozenset(
    k for k, v in _ALIASES.items() if v == "loss" and "entropy" in k or k in ("xent", "nll")
)
# (name, scale): units written in the key.
_SCALED = {
    "elapsed time per iteration (ms)": ("step_time", 1e-3),
    "elapsed_time_per_iteration_ms": ("step_time", 1e-3),
    "throughput per gpu (tflop/s/gpu)": ("tflops_per_gpu", 1.0),  # Megatron's --log-throughput
    "train_step_timing in s": ("step_time", 1.0),  # NeMo's
}
_PHASES = (
    ("validation_", "val/"), ("validation ", "val/"), ("valid_", "val/"), ("valid ", "val/"),
    ("evaluation_", "val/"), ("evaluation ", "val/"),
    ("val_", "val/"), ("val ", "val/"), ("eval_", "val/"), ("eval ", "val/"), ("test_", "test/"), ("test ", "test/"),
    ("va_", "val/"),
    # MXNet's Module.fit epoch lines: "Epoch[3] Train-accuracy=0.91", "Epoch[3] Validation-cross-entropy=0.35"
    ("train-", ""), ("validation-", "val/"),
)
_PHASE_PREFIXES = tuple(prefix for prefix, _ in _PHASES)
_PHASE_SUFFIXES = (("_validation", "val/"), ("_valid", "val/"), ("_val", "val/"), ("_eval", "val/"), ("_test", "test/"),
                   ("_training", ""), ("_train", ""))
_TRAIN_KEYS = ("train ", "train_", "train/", "training ", "training_", "training/")
# An average named in front of a split or a known name: read as that name (the loop's epoch mean is its value).
_AVERAGES = ("avg_", "avg ", "average_", "average ", "mean_", "mean ")
# Words that make a key a metric in free-form (step-anchored) lines; anything else there is left alone.
_METRIC_WORD = re.compile(
    r"loss|acc|ppl|perplexity|^lr$|learning.rate|grad.?norm|gnorm|^mse$|^mae$|^f1$|^auc$|^bleu$|^wer$|^dice$|^m?iou$|"
    r"^grdn$|^updt_s$|^data_s$|"  # LeRobot's abbreviations
    r"cross.?entropy|^xent$|^nll$"  # a cross-entropy or NLL printed as the loss (never "entropy" alone: a policy's)
)
_NEVER = {"eta", "v_num", "n_parameters", "step", "global_step", "iter", "iteration", "num_updates", "total_flos",
          "best", "best_loss", "it", "samples", "s"}


def _sanitize(key: str) -> str:
    out = re.sub(r"[^a-z0-9_./\-]+", "_", key.strip().lower()).strip("_")
    return out[:200]


@functools.lru_cache(maxsize=4096)  # a log prints the same few keys on every line
def metric_name(key: str, phase: str = "") -> tuple[str, float] | None:
    """runwatch's name for a key printed in a log line, with the scale to apply; None to skip it.

    ``phase`` (``"val/"``, ``"test/"``) is the phase the whole line reports.

    >>> metric_name("lm loss"), metric_name("eval_loss"), metric_name("Loss", "val/"), metric_name("eta")
    (('loss', 1.0), ('val/loss', 1.0), ('val/loss', 1.0), None)
    >>> metric_name("avg_train_loss"), metric_name("avg_val_loss"), metric_name("mean_valid_acc")
    (('loss', 1.0), ('val/loss', 1.0), ('val/acc', 1.0))
    """
    low = " ".join(key.strip().lower().split())
    if not low or low in _NEVER:
        return None
    if low in _SCALED:
        name, scale = _SCALED[low]
        return phase + name, scale
    for prefix, to in _PHASES:
        if low.startswith(prefix) and len(low) > len(prefix):
            base = low[len(prefix) :]
            return to + _ALIASES.get(base, _sanitize(base)), 1.0
    for suffix, to in _PHASE_SUFFIXES:  # "loss_test: 0.0153", "acc_val": the phase written after the metric
        base = low[: -len(suffix)]
        if low.endswith(suffix) and base and _METRIC_WORD.search(base) is not None:
            return to + _ALIASES.get(base, _sanitize(base)), 1.0
    for average in _AVERAGES:  # "avg_train_loss: 0.69  avg_val_loss: 0.64" (a Kaggle notebook's epoch line)
        rest = low[len(average) :]
        if low.startswith(average) and (rest in _ALIASES or rest.startswith(_PHASE_PREFIXES)):
            return metric_name(rest, phase)
    name = _ALIASES.get(low) or _sanitize(low)
    if not name:
        return None
    if phase and low.startswith(_TRAIN_KEYS):
        phase = ""  # the key names its own phase: "[eval] iter 500: train 3.44 val 3.43" (the train estimate)
    if phase:
        if name == "epoch":
            return None
        return phase + name, 1.0
    return name, 1.0


def _value(text: str) -> float:
    return float(text)


_WORD_BEFORE = re.compile(r"([A-Za-z]+) $")
# "test_mean loss: 0.50", "train_avg loss: 0.28": a split's average named in one word before the key
_PHASE_AVERAGE_BEFORE = re.compile(
    r"(?<![\w.])(train|training|val|valid|validation|eval|test)_(?:mean|avg|average) $", re.IGNORECASE
)


def _pairs(text: str, phase: str = "", keep: Callable[[str], bool] | None = None) -> dict[str, float]:
    """Every ``key: value`` / ``key=value`` pair in ``text`` (first value of a name wins).

    A key whose word before it is a phase or completes a known name is read with it: ``Val Loss: 0.5`` is
    ``val/loss``, not the training loss, and ``Grad Norm: 1.2`` is ``grad_norm``.

    >>> _pairs("Epoch 3 | Val Loss: 0.50 | Train Loss: 0.45 | Grad Norm: 1.2")
    {'val/loss': 0.5, 'loss': 0.45, 'grad_norm': 1.2}
    >>> _pairs("[Epoch 5] Train: loss=0.40, acc=0.85 | Val: loss=0.50, acc=0.80")
    {'loss': 0.4, 'acc': 0.85, 'val/loss': 0.5, 'val/acc': 0.8}
    >>> _pairs("test_mean loss: 0.504793"), _pairs("train_mean loss: 0.225224")
    ({'test/loss': 0.504793}, {'loss': 0.225224})
    """
    out: dict[str, float] = {}
    crossed: set[str] = set()  # names whose value came from a cross-entropy: a loss of the line replaces it
    percents: set[str] = set()  # names read from a percentage: a supplement to a line's pairs, never all it gives
    headers = [(h.end(), _HEADER_PHASE[h.group(1).lower()]) for h in _PHASE_HEADER.finditer(text)] if not phase else []
    for m in (_KV_PERCENT if "%" in text else _KV).finditer(text):
        key, raw = m.group(1), m.group(2)
        percent = m.re is _KV_PERCENT and m.group(3) is not None
        if percent and _PERCENT_SCORE.search(key) is None:
            continue  # "mem: 45%", "progress: 30%": a share of something else
        section = _section_phase(text, headers, m.start())
        if section is not None:  # "Train: loss=0.40, acc=0.85 | Val: loss=0.50": the segment's header names the phase
            named = metric_name(key, section) if keep is None or keep(key) else None
            if named is not None and named[0] not in out:
                out[named[0]] = _value(raw) * named[1] * (0.01 if percent else 1.0)
                if percent:
                    percents.add(named[0])
            continue
        if " " in text[max(0, m.start() - 1) : m.start()]:
            w = _WORD_BEFORE.search(text, max(0, m.start() - 24), m.start())
            averaged = (_PHASE_AVERAGE_BEFORE.search(text, max(0, m.start() - 24), m.start())
                        if w is not None and text[w.start() - 1 : w.start()] == "_" else None)
            if averaged is not None:
                key = f"{averaged.group(1)} {key}"
            elif w is not None:
                pair = _two_word_key(w.group(1), key)
                if pair is not None and w.group(1).lower() not in _PHASE_WORDS:  # "val avg loss": the phase before
                    p = _WORD_BEFORE.search(text, max(0, w.start() - 24), w.start())
                    if p is not None and p.group(1).lower() in _PHASE_WORDS:
                        pair = f"{p.group(1)} {pair}"
                key = pair or key
        if keep is not None and not keep(key):
            continue
        named = metric_name(key, phase)
        if named is None:
            continue
        name, scale = named
        if percent:
            scale *= 0.01
            percents.add(name)
        if name not in out:
            out[name] = _value(raw) * scale
            if name.endswith("loss") and _is_cross_entropy(key):
                crossed.add(name)
        elif crossed and name in crossed and not _is_cross_entropy(key):  # the line's own loss, after a cross-entropy
            out[name] = _value(raw) * scale
            crossed.discard(name)
    if percents and percents >= out.keys():
        return {}  # "loss 0.69, train accuracy: 54.67%": the line's own shape (spaced pairs) is read elsewhere
    return out


def _is_cross_entropy(key: str) -> bool:
    low = " ".join(key.strip().lower().split())
    for prefix, _ in _PHASES:
        if low.startswith(prefix):
            low = low[len(prefix) :]
            break
    return low in _CROSS_ENTROPY


# A phase word and a colon opening a segment of keys ("Train: loss=0.40, acc=0.85 | Val: loss=0.50, acc=0.80"): the
# keys up to the next "|" are that phase's. Only where a key follows (not "Validation: 100%|..." progress bars).
# Spelled out per case (Train, train, TRAIN) rather than IGNORECASE: this scan runs on every line with pairs, and
# the cased alternation costs ~40 % less.
_PHASE_HEADER = re.compile(
    r"(?<![\w/])([Tt]rain(?:ing)?|TRAIN(?:ING)?|[Vv]al(?:id(?:ation)?)?|VAL(?:ID(?:ATION)?)?|[Ee]val|EVAL|[Tt]est|TEST)"
    r"\s*:\s*(?=[A-Za-z])"
)
_HEADER_PHASE = {"train": "", "training": "", "val": "val/", "valid": "val/", "validation": "val/", "eval": "val/",
                 "evaluation": "val/", "dev": "val/", "test": "test/"}  # fmt: skip


def _section_phase(text: str, headers: list[tuple[int, str]], at: int) -> str | None:
    """The phase of the header whose segment holds position ``at`` (None: no header, or a "|" since it)."""
    for end, phase in reversed(headers):
        if end <= at:
            return phase if "|" not in text[end:at] else None
    return None


# A key that ends in one of these is a sentence about a value ("loss exploded to inf", "lr decayed to 1e-5",
# "loss of"), not a metric's name.
_PHRASE_END = re.compile(r"\s(?:to|at|of|from|by|in|into|for|than|is|was|became|reached)$")


def _metric_like(key: str) -> bool:
    """Whether a free-form key names a metric: a metric word, not a skipped name, not a phrase ending in "to" / "at"...

    >>> _metric_like("train loss"), _metric_like("training loss exploded to"), _metric_like("eta")
    (True, False, False)
    """
    low = key.lower()
    return _METRIC_WORD.search(low) is not None and low not in _NEVER and _PHRASE_END.search(low) is None


def _segments(text: str, phase: str = "") -> dict[str, float]:
    """``| key value |`` or ``| key: value |`` segments (Megatron, fairseq summaries)."""
    out: dict[str, float] = {}
    for seg in text.split("|"):
        m = _SEGMENT.fullmatch(seg.strip())
        if m is None:
            continue
        named = metric_name(m.group(1), phase)
        if named is None:
            continue
        name, scale = named
        if name not in out:
            out[name] = _value(m.group(2)) * scale
    return out


_SEGMENT = re.compile(r"([A-Za-z][\w ()./\-]*?)\s*(?:[:=]\s*|\s+)(" + _NUM + r")")
# "loss 0.45", "train loss 0.45", "grad norm 1.2", "LR 1.00e-03": a key, then whitespace, then its value.
_SPACED = re.compile(r"(?<![A-Za-z_./\-])([A-Za-z][A-Za-z_./\-]*)(?: ([A-Za-z][A-Za-z_./\-]*))?\s+(" + _NUM + r")" + _END)
_PHASE_WORDS = {"train", "training", "val", "valid", "validation", "eval", "evaluation", "test"}


def _two_word_key(first: str, second: str) -> str | None:
    """``first second`` as one key when ``first`` is a phase ("Val Loss") or both are a known name ("grad norm")."""
    pair = f"{first} {second}"
    return pair if first.lower() in _PHASE_WORDS or pair.lower() in _ALIASES else None


def _spaced_pairs(text: str, phase: str = "", bare_phase_loss: bool = False) -> dict[str, float]:
    """``key value`` pairs without ``:`` or ``=`` in free-form text, metric-like keys only.

    Precision first: the key must start the text or follow a delimiter or a number (the previous pair's
    value), so in "best loss 0.45" or "took 3 s" nothing is taken; a two-word key is a phase and a metric
    ("train loss") or a known name ("grad norm", "learning rate"). With ``bare_phase_loss`` (a line that
    names its epoch or step), a phase word alone before a decimal number is that phase's loss: ``train 7.164
    | val 5.535`` (an accuracy is printed with its name or a ``%``).

    >>> _spaced_pairs("epoch 3 iter 1200/5000 loss 0.4521 (avg 0.4611) | grad norm 1.2, LR 1.0e-03, best loss 0.3")
    {'loss': 0.4521, 'grad_norm': 1.2, 'lr': 0.001}
    >>> _spaced_pairs(" | train 7.164 | val 5.535 (saved)", bare_phase_loss=True)
    {'loss': 7.164, 'val/loss': 5.535}
    """
    out: dict[str, float] = {}
    for m in _SPACED.finditer(text):
        before = text[: m.start()].rstrip()
        if before and before[-1].isalpha():
            continue
        first, second, raw = m.groups()
        if second is None and bare_phase_loss and first.lower() in _PHASE_WORDS and "." in raw:
            second = "loss"
        key = first if second is None else _two_word_key(first, second)
        if key is None:
            continue
        if not _metric_like(key):
            continue
        named = metric_name(key, phase)
        if named is not None:
            out.setdefault(named[0], _value(raw) * named[1])
    return out


class _Parsed:
    """What one line says: its events (with or without a step) and context updates."""

    __slots__ = ("bar", "counter", "metrics", "step")

    def __init__(self, step: int | None, metrics: dict[str, float], bar: bool = False, counter: bool = False) -> None:
        self.step = step
        self.metrics = metrics
        self.bar = bar  # a progress-bar refresh: held until the bar moves on
        self.counter = counter  # no step of its own: placed after the previous event


# -- parsers: each returns _Parsed, or None when the line is not its shape ----------------------------

_MEGATRON = re.compile(r"\biteration:?\s+(\d+)\s*/\s*(\d+)\s*\|")
_MEGATRON_VAL = re.compile(r"validation loss at (?:iteration|the end of training for val data)\s*(\d+)?\s*\|")
_FAIRSEQ_INNER = re.compile(r"\bnum_updates=(\d+)")
_FAIRSEQ_VALID = re.compile(r"valid on '[^']*' subset\s*\|")
_FAIRSEQ_UPDATES = re.compile(r"\|\s*num_updates\s+(\d+)")
_DICT = re.compile(r"\{\s*['\"][^{}]*\}")
# A value may be quoted: the Trainer's console (transformers >= 4.5x) and fairseq's json log format print numbers as
# strings ('loss': '0.4123'); the quotes must close right after the number ('10/1000', '1.5s' are no values).
_DICT_KV = re.compile(r"['\"]([\w./\- ]+)['\"]\s*:\s*(['\"]?)(" + _NUM + r")\2(?=\s*[,}])")
# A setting's literal (True, None, null): metrics dicts never hold one, settings dicts and configs do.
_DICT_LITERAL = re.compile(r":\s*(?:True|False|None|true|false|null)\s*[,}]")
# ms-swift's dicts give the step only as a string: 'global_step/max_steps': '10/1000'
# What a settings dict is printed after: "config: {", "best_params = {", "Hyperparameters {", DeepSpeed's
# "fp16 ........ {" (a dot leader), or a key of an enclosing dict ('"params": {': a nested dict is a config's).
_SETTINGS_BEFORE = re.compile(
    r"(?:(?:parameters|params|config|configuration|hparams|args|arguments|kwargs|settings|options|json)['\"]?\s*[:=]?"
    r"|\.{3,}|['\"]\s*:)\s*$",
    re.IGNORECASE,
)
_DICT_LEAD_STEP = re.compile(r"\b(?:step|iter|iteration|global_step)\s*[:=]?\s*(\d+)\W*$", re.IGNORECASE)
_DICT_STEP_OF = re.compile(r"['\"]global_step/max_steps['\"]\s*:\s*['\"](\d+)/\d+['\"]")
# LitGPT's "loss train: 2.345, val: n/a" (the validation loss is n/a until the first evaluation)
_LOSS_TRAIN_VAL = re.compile(r"\bloss train:\s*(" + _NUM + r")(?:,\s*val:\s*(" + _NUM + r"))?" + _END)
_MM_EPOCH = re.compile(r"\bEpoch(\((?:train|val|test)\))?\s*\[(\d+)(?:/\d+)?\]\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]")
# mmcv's TextLoggerHook evaluation lines: "Epoch(val) [4][625]\tbbox_mAP: ...", "Iter(val) [500]\tmIoU: ..."
_MM_EVAL = re.compile(r"\b(?:Epoch|Iter)\((val|test)\)\s*(?:\[\d+\]\s*)?\[\s*\d+\s*\]")
_MM_ITER = re.compile(r"\bIter(\((?:train|val|test)\))?\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]")
_METRICLOGGER = re.compile(r"\bEpoch:\s*\[(\d+)\]\s*\[\s*(\d+)\s*/\s*(\d+)\s*\]")
_D2 = re.compile(r"\beta:\s*\S+\s+iter:\s*(\d+)\s")
_TIMM = re.compile(r"\b(Train|Test): (\d+) \[\s*(\d+)/(\d+)\s*\(\s*\d+%\)\]")
_NANOGPT_ITER = re.compile(r"\biter (\d+): loss (" + _NUM + r"), time (" + _NUM + r")ms\b")
_NANOGPT_EVAL = re.compile(r"\bstep (\d+): train loss (" + _NUM + r"), val loss (" + _NUM + r")" + _END)
# build-nanogpt's log.txt (Karpathy's "Let's reproduce GPT-2"): "<step> train|val|hella <value>", a line each
_BUILD_NANOGPT = re.compile(r"(\d+) (train|val|hella) (" + _NUM + r")\s*")
_BUILD_NANOGPT_NAMES = {"train": "loss", "val": "val/loss", "hella": "val/hellaswag_acc"}
# nnU-Net's training_log_*.txt: a timestamp, then one value a line under an epoch line (v2: "Epoch 5",
# "train_loss -0.64", "val_loss -0.68", "Pseudo dice [0.81, 0.77]", "Current learning rate: 0.00955"; v1: a bare
# "epoch:  5 " line, "train loss : -0.64", "validation loss: -0.68", "Average global foreground Dice: [0.81]", "lr: 0.0095")
_NNUNET_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}: ")
_NNUNET_EPOCH = re.compile(r"(?:Epoch|epoch:) +(\d+)\s*")
_NNUNET_VALUE = re.compile(
    r"(train_loss|train loss :|val_loss|validation loss:|Current learning rate:|lr:) (" + _NUM + r")\s*|"
    r"(Pseudo dice|Average global foreground Dice:) \[([^\]]*)\]\s*"
)
_NNUNET_NAMES = {"train_loss": "loss", "train loss :": "loss", "val_loss": "val/loss", "validation loss:": "val/loss",
                 "Current learning rate:": "lr", "lr:": "lr"}
# Swin Transformer's main.py (and the repositories built on it): "INFO Train: [3/300][100/1251]\teta 0:10:00 lr
# 0.000100\ttime 0.5 (0.6)\tloss 6.9 (6.9)\tgrad_norm 1.0 (1.1)\tmem 10000MB"
_SWIN_TRAIN = re.compile(r"\bTrain: \[(\d+)/\d+\]\[(\d+)/(\d+)\]\s")
_RUNNING_MEAN = re.compile(r"\s\(" + _NUM + r"\)")
_GLOBAL_STEP_KV = re.compile(r"\bglobal_step\s*[:=]\s*(\d+)(?![\d.])")
# eriklindernoren's PyTorch-YOLOv3 (2018): "[Epoch 0/30, Batch 5/7329] [Losses: x 0.27, ..., total 15.14, recall: 0.0, ...]"
_YOLOV3_LOSSES = re.compile(r"\[Epoch (\d+)/\d+, Batch (\d+)/(\d+)\] \[Losses: ([^\]]*)\]")
_YOLOV3_PAIR = re.compile(r"\b(total|recall|precision):? (" + _NUM + r")" + _END)
_ONMT_OLD = re.compile(r"\bEpoch\s+(\d+),\s+(\d+)/\s*(\d+);")
_ONMT_STEP = re.compile(r"\bStep\s+(\d+)/\s*(\d+);")
_KERAS_EPOCH = re.compile(r"\s*Epoch (\d+)/(\d+)\s*")
# Keras 2's "[====>...]" bar, Keras 3's "━━━━" bar, and verbose=2's "1875/1875 - 5s - loss: ..." (no bar)
_KERAS_BAR = re.compile(r"^\s*(\d+)/(\d+) (?:\[[=>.]*\]|[\u2500-\u257f]+|- \d+(?:\.\d+)?m?s(?= - ))")
# tqdm: "Epoch 1:  11%|█ | 2/18 [00:11<01:33,  5.82s/it, loss=10.5]"; NeMo's "Epoch 0: : 100%|█| 50/50 [16:26<00:00,
# v_num=gjbq, reduced_train_loss=11.70, global_step=49.00]" (no rate) and "Epoch 1: : 1it [00:04,  4.36s/it, ...]" (no total)
_BAR = re.compile(
    r"(?:\bEpoch (\d+):[\s:]*)?(?:\d+%\|[^|]*\|\s*(\d+)/(\d+)|(\d+)it) \[[\d:]+(?:<[\d:?]*)?"
    r"(?:,\s*[\d.?]+\s*(?:s/it|it/s))?(?:,\s*([^\]]*))?\]"
)
_GLOBAL_STEP = re.compile(r"(?:^|,\s*)global_step=(" + _NUM + r")(?=,|$)")
_POSTFIX_EPOCH = re.compile(r"(?<![\w.])epoch=(\d+)(?![\d.])")
_TORCH_EXAMPLE = re.compile(r"\bTrain Epoch: (\d+) \[\s*(\d+)/(\d+) \(\s*[\d.]+%\)\]\s*Loss: (" + _NUM + r")" + _END)
_TORCH_EXAMPLE_TEST = re.compile(
    r"\bTest set: Average loss: (" + _NUM + r"), Accuracy: (\d+)/(\d+) \(\s*[\d.]+%\)"
)
_FASTAI_HEADER = re.compile(r"^\s*epoch((?:\s+[A-Za-z_][\w/]*)+?)\s+time\s*$")
_FASTAI_ROW = re.compile(r"^\s*(\d+)((?:\s+(?:" + _NUM + r"|#na#))+)\s+\d+:\d\d(?::\d\d)?\s*$")
# skorch's PrintLog: the same table with a "dur" column (seconds) last
_SKORCH_HEADER = re.compile(r"^\s*epoch((?:\s+[A-Za-z_][\w/]*)+?)\s+dur\s*$")
_SKORCH_ROW = re.compile(r"^\s*(\d+)((?:\s+" + _NUM + r")+)\s*$")
_TORCHTUNE = re.compile(r"^\s*(\d+)\|(\d+)\|Loss: (" + _NUM + r")" + _END)
_LEADING_STEP = re.compile(r"^\W*(?:step|iter|iteration)\s+(\d+)(?:\s+step\s+\d+)?\s*[:|,]\s*(.*)$", re.IGNORECASE)
# "ep: 3" / "Ep 3" abbreviate the epoch (read as it); "ep" alone, before no number, is not one
_ANCHOR = re.compile(
    r"\b(global_step|step|steps(?=:)|iteration|iterations(?=\s*[:=])|iter|epoch|ep(?=\s*[:=]|\s+\d))\b\s*[:=]?\s*\[?\s*(\d+)(?![\d.]|\w)",
    re.IGNORECASE,
)
_ANCHOR_RANK = {"global_step": 0, "step": 1, "steps": 1, "iteration": 2, "iterations": 2, "iter": 2, "epoch": 3, "ep": 3}
_FRACTION = re.compile(r"\d\s*/\s*\d")
# A date written with slashes ("05/21/2026 16:19:08 - INFO - ...", the HF example scripts' log format): no fraction
_SLASH_DATE = re.compile(r"(?<![\d/])\d{1,4}/\d{1,2}/\d{2,4}(?![\d/])")


def _fractions(line: str) -> int:
    """How many "a/b" a line holds, a date's slashes not counted.

    >>> _fractions("05/21/26 16:20:49 - 0:01:42 - Epoch 1, Average Loss: 0.4466"), _fractions("Epoch: 55/167 (996/1926)")
    (0, 2)
    """
    n = len(_FRACTION.findall(line))
    return n - 2 * len(_SLASH_DATE.findall(line)) if n > 1 and "/" in line else n
# "Step [100/600]", "iter 1200/5000": a step counted within its epoch, out of the epoch's total
_STEP_OF = re.compile(r"(?<![\w.])(?:step|iteration|iter|batch)\b\s*[:=]?\s*\[?\s*(\d+)\s*/\s*(\d+)", re.IGNORECASE)
# "Epoch 1, Batch 100", "[Epoch 1][Batch 100]": the batch counts within the epoch (the epoch alone is not the step)
_EPOCH_BATCH = re.compile(
    r"(?<![\w.])(?:epoch|ep)\s*[:=]?\s*\[?\s*\d+\s*(?:/\s*\d+\s*)?\]?\s*[,|]?\s*\[?batch(?:_?id|_?idx)?\s*[:=]?\s*\[?\s*(\d+)"
    r"(?![\d.])",
    re.IGNORECASE,
)
# "epoch 001  1000 / 331737", "epoch 3: 100/600": an epoch, then the batch of the epoch's total
_EPOCH_THEN_FRACTION = re.compile(
    r"(?<![\w.])epoch\s*[:=]?\s*(\d+)\s*(?:[:|,]?\s+|\[)(\d+)\s*/\s*(\d+)(?![\d.])", re.IGNORECASE
)
# PyTorch's word_language_model example: "| epoch   1 |   200/ 2928 batches | lr 20.00 | ... | loss  7.63 | ppl  2055.20"
_WLM = re.compile(r"^\s*\|\s*epoch\s+(\d+)\s*\|\s*(\d+)\s*/\s*(\d+)\s+batches\s*\|")
_WLM_END = re.compile(r"^\s*\|\s*end of epoch\s+\d+\s*\|")
_EPOCH_OF = re.compile(r"(?<![\w.])epoch\b\s*[:=]?\s*\[?\s*(\d+)(\s*/\s*\d+)?", re.IGNORECASE)
_STEP_WORD = re.compile(
    r"(?<![\w.])(global[ _]step|step|iteration|iter)\b\s*[:=]?\s*\[?\s*(\d+)(?:\s*/\s*\d+)?\s*\]?(?![\w.])",
    re.IGNORECASE,
)
_BATCH_LEAD = re.compile(r"^\W*batch\s*[:=]?\s*(\d+)\s*(?:/\s*\d+)?(?![\d.])", re.IGNORECASE)
# an epoch line alone, maybe naming the phase that starts ("[Epoch 1] Training ====", the Annotated Transformer's)
# (no two quantifiers in a row may take the same characters: a line of 10,000 spaces after "Epoch 1" took seconds)
_EPOCH_LINE = re.compile(
    r"\W*Epoch[:=\s]\s*(\d+)(?:\s*/\s*(\d+))?(?:\W+(?:train(?:ing)?|valid(?:ation)?|val|eval(?:uation)?|test))?\W*",
    re.IGNORECASE,
)
# (a value may end in "s", seconds, or "%": "Acc: 10.79%", a score's percentage, is read as 0.1079 by _pairs)
def _pair_line(sep: str) -> re.Pattern:
    pair = r"[A-Za-z][\w ./\-]*" + sep + r"\s*" + _NUM + r"[s%]?"
    return re.compile(r"\s*" + pair + r"(?:(?:\s*(?:-|,|\|)\s*|\s+)" + pair + r")*\s*")


_PAIR_LINE = _pair_line(":")
_EQ_PAIR_LINE = _pair_line("=")  # the same written with "=": "train_loss=0.0481, val_loss=0.0378" (under "epoch=1")
# Between two "Key: value" pairs written with spaces alone: "train Loss: 0.53 Acc: 0.72"
_PAIR_GAP = re.compile(r"\s+-\s+|,\s+|\s+\|\s+|(?<=\d)\s+(?=[A-Za-z])|(?<=\ds)\s+(?=[A-Za-z])")
_PHASE_WORD = re.compile(r"^\W*(valid(?:ation)?|val|eval(?:uation)?|test)\b", re.IGNORECASE)
# A bracketed tag that opens a message, and a phase word standing apart inside it ("diff-val(test-normal)"; not
# "eval_callback" or "evaluator", which name a logger)
_PHASE_TAG = re.compile(r"[ \t]*\[([^\[\]]{1,40})\]")
_TAG_PHASE_WORD = re.compile(r"(?<![a-z_])(valid(?:ation)?|val|eval(?:uation)?|test)(?![a-z_])")
_PHASE_AT = re.compile(r"\W*(valid(?:ation)?|val|eval(?:uation)?|test)\b", re.IGNORECASE)  # at a given position
# A line with no digit can still carry a value: "eval_loss = nan", "loss: inf".
_PREFILTER = re.compile(r"\d|\b(?:nan|inf(?:inity)?)\b", re.IGNORECASE)
_SB3_RULE = re.compile(r"-{20,}")
_SB3_ROW = re.compile(r"\|\s+(\S[^|]*?)\s*\|\s*(\S*)\s*\|")
_HF_BLOCK = re.compile(r"\*{5} (\w+) metrics \*{5}")
_HF_ROW = re.compile(r"\s+(\w+)\s*=\s*(\S+)\s*")
# (tqdm's bar "100%|####| 8/8 [00:02<...]", or the bar Ultralytics draws itself since 8.3: "100% ━━━━━━━━━━━━ 9/9 5.5s/it")
_YOLO_BAR = r"\d+%(?:\|[^|]*\||\s+[\u2500-\u257f]+)"
_YOLO_ROW = re.compile(r"\s*(\d+)/(\d+)\s+(.*?):\s+" + _YOLO_BAR + r"\s*(\d+)/(\d+)(?: \[|\s|$)")
_YOLO_VAL_HEADER = re.compile(r"mAP.*?:\s+" + _YOLO_BAR)
# (early YOLOv5 printed large image and target counts in %10.3g: "all  5.57e+04  1.74e+05  0.000332 ...")
_YOLO_ALL = re.compile(r"\s*all\s+(?:\d+|\d(?:\.\d+)?e\+\d+)\s+(?:\d+|\d(?:\.\d+)?e\+\d+)\s+(" + _NUM + r")\s+(" + _NUM + r")\s+(" + _NUM + r")\s+(" + _NUM + r")" + _END)
_COMPOSER_HEAD = re.compile(r"(?:\[epoch=(\d+)\])?\[(batch|token|sample|iteration|Eval batch)=(\d+)(?:/(\d+))?\]")
_COMPOSER_ROW = re.compile(r"\t ?(Train|Eval) ([\w./\-]+): (" + _NUM + r")\s*")
# OLMo's trainer (olmo/train.py, log_metrics_to_console): a record ending in "[step=12/15000,epoch=0]" (or
# "[step=12/15000]", "[step=12/15000, eta=...]", "[eval_step=3/20]"), then one indented "name=value" line per metric,
# values above 1,000 with thousands separators
_OLMO_HEAD = re.compile(r"\[(step|eval_step)=(\d+)/\d+(?:,\s*(?:epoch=\d+|eta=[^\],]*))*\]\s*$")  # no ',' in eta
_OLMO_ROW = re.compile(r" {4}([A-Za-z][\w./\- ()]*)=(" + _NUM + r"|\d{1,3}(?:,\d{3})+(?:\.\d+)?)\s*")
_DEEPSPEED = re.compile(r"\bstep=(\d+), skipped=\d+, lr=\[(" + _NUM + r")[,\]]")


# "validate step: 20  loss: 6.9" (torchtitan's validation line), "INFO Validation step 400: loss 2.1": the phase
# word right before the step word names the line's phase, wherever the line's prefix ends
# (matched on the lowered line, after a substring test: an IGNORECASE search over every step line costs more)
# "Epoch 3 evaluated with loss: 0.21" (a script's own words) is the held-out phase too
_PHASE_STEP = re.compile(
    r"\b(?:(valid(?:ate|ation)?|val|eval(?:uate|uation)?|test)\s+(?:step|iter|iteration|epoch)|"
    r"(evaluated|validated|tested)\s+(?:with|on)|"
    # "Epoch 1 Validation - Loss: 18.49": the phase after the epoch or step it reports on
    r"(?:step|iter|iteration|epoch)\s+\d+(?:\s*/\s*\d+)?\s*[,:]?\s+(validation|val|evaluation|eval|test)\s*[-:|])"
)


# A logging prefix before the message ("09-02 20:39:12 - INFO - __main__ - Val. Total Loss: 1.79"): the phase word
# starts the message, not the line
# A logging module's time stamp alone before the message: "2020-05-12 17:07:12,782 ", "2024-01-01T10:00:00Z "
_STAMP_PREFIX = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?Z?\s+")
_LEVEL_PREFIX = re.compile(r"\b(?:INFO|DEBUG|WARNING|WARN|NOTICE)\b\s*(?:[-:|\]]\s*)+(?:[\w.<>]+\s*[-:|]\s+)?")


def _phase(line: str) -> str:
    m = _PHASE_WORD.search(line)
    if m is None and ("INFO" in line or "DEBUG" in line or "WARN" in line or "NOTICE" in line):
        level = _LEVEL_PREFIX.search(line)
        if level is not None:
            m = _PHASE_AT.match(line, level.end())
    if m is None and line[:1].isdigit() and (stamp := _STAMP_PREFIX.match(line)) is not None:
        m = _PHASE_AT.match(line, stamp.end())  # "2020-05-12 17:07:12,782 Validation result ..." (Joey NMT)
    if m is None:
        low = line.lower()
        if "val" in low or "test" in low:
            m = _PHASE_STEP.search(low)
            if m is None and "[" in line:
                m = _tagged_phase(line, low)
    if m is None:
        return ""
    return "test/" if next(g for g in m.groups() if g).lower().startswith("test") else "val/"


def _tagged_phase(line: str, low: str) -> re.Match | None:
    """The phase word inside the bracketed tag that opens the message: "[Diff-Val(Test-Normal)] Epoch 001: loss = ..."
    ("[Val]" alone is read by :data:`_PHASE_WORD`)."""
    starts = [0]
    if (level := _LEVEL_PREFIX.search(line)) is not None:
        starts.append(level.end())
    if (stamp := _STAMP_PREFIX.match(line)) is not None:
        starts.append(stamp.end())
    for start in starts:
        tag = _PHASE_TAG.match(low, start)
        if tag is not None and (word := _TAG_PHASE_WORD.search(tag.group(1))) is not None:
            return word
    return None


# Chinese and Japanese scripts name their metrics in their own words ("训练损失: 32.1293", "验证损失：0.41",
# "学習率 0.001"): those words, and full-width punctuation, are read as the English names they stand for
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
_CJK_NAMES = {
    "训练损失": "train_loss", "训练集损失": "train_loss", "訓練損失": "train_loss", "学習損失": "train_loss",
    "验证损失": "val_loss", "验证集损失": "val_loss", "驗證損失": "val_loss", "検証損失": "val_loss",
    "测试损失": "test_loss", "测试集损失": "test_loss", "測試損失": "test_loss", "テスト損失": "test_loss",
    "平均损失": "loss", "损失值": "loss", "损失": "loss", "損失": "loss",
    "学习率": "lr", "學習率": "lr", "学習率": "lr",
    "训练准确率": "train_acc", "验证准确率": "val_acc", "准确率": "acc", "正确率": "acc", "準確率": "acc",
    "轮次": "epoch", "迭代次数": "iter", "步数": "step",
}
_CJK_NAME = re.compile("|".join(sorted(map(re.escape, _CJK_NAMES), key=len, reverse=True)))
_FULL_WIDTH = str.maketrans({"\uff1a": ": ", "\uff0c": ", ", "\uff08": " (", "\uff09": ") ", "\uff1b": "; ", "\u3001": ", "})


def _cjk_words(line: str) -> str:
    """A line with its Chinese or Japanese metric names in English and its full-width punctuation in ASCII.

    >>> _cjk_words("训练损失: 32.1293"), _cjk_words("Epoch 3 验证损失\uff1a0.41\uff0c学习率\uff1a0.001")
    (' train_loss : 32.1293', 'Epoch 3  val_loss : 0.41,  lr : 0.001')
    """
    return _CJK_NAME.sub(lambda m: f" {_CJK_NAMES[m.group(0)]} ", line.translate(_FULL_WIDTH))


class MetricExtractor:
    """Turns one run's log lines into metric events (see the module docstring).

    Per-run state (context from earlier lines) is JSON-safe: :meth:`state_dict`,
    :meth:`load_state_dict`.
    """

    def __init__(self) -> None:
        self.last_step = -1
        self.epoch: int | None = None  # from an "Epoch 3/30" line
        self.dict_epoch: float | None = None  # the "epoch" of the last printed metrics dict (the Trainer's)
        self.epoch_lines = 0  # lines since that epoch line
        self.bar_step: int | None = None  # position of the last progress bar
        self.bar_lines = 0
        self.pending: list | None = None  # [step, metrics] of a progress bar not yet moved on
        # per bar total: (last position, steps of its earlier epochs, last postfix)
        self.bars: dict[str, tuple[int, int, str]] = {}
        self.routes: list[str] = []  # request routes with their own latency series, first seen first
        self.emitted: dict[str, int] = {}  # metric -> last step it was emitted at
        self.dropped = 0  # events below the last step
        self.dropped_step: int | None = None  # the step of the last event dropped (not part of the state)
        self.lines = 0
        self.table: list[str] | None = None  # column names of a fastai results table being printed
        self.yolo: list | None = None  # [epoch base, column names...] of an Ultralytics YOLO training table
        self.rl_table: dict | None = None  # a Stable-Baselines3 table being printed: {"section", "values"}
        self.metrics_block: str | None = None  # the split of a Hugging Face "***** eval metrics *****" block
        self.composer_step: int | None = None  # the step of the Composer progress line whose rows follow
        self.olmo_step: int | None = None  # the step of OLMo's "[step=N/M]" record whose rows follow (-1: eval)
        self.olmo_eval: str | None = None  # the first evaluation set OLMo reported: its loss is val/loss
        # The step of the last line of counters alone ("epoch: 0, iteration: 100, step: 100"), and lines since it
        self.header_step: int | None = None
        self.header_lines = 0
        # Lines naming an epoch and a step: the last such epoch, its largest step, and what is added to steps
        # that count within their epoch (see _step_in_epoch)
        self.step_epoch: int | None = None
        self.epoch_max = 0
        self.step_offset = 0
        self.epoch_base: int | None = None  # 0 or 1: the first epoch such a line named
        self.steps_run_on = False  # the step ran on across an epoch change: it is the run's own
        self.step_gap = 0  # the last rise between two events' steps (a rounded "step:2K" is placed by it)
        self.counting = False  # the events so far came from step-less lines of metric pairs, numbered in order
        self.fraction_filled = False  # a step written as a fraction of the epoch's total reached that total
        self.read_values = False  # whether the last line gave metric values (emitted, or held as a bar's)
        # Lightning's validation bar is running: the main bar's count moves on with validation batches while its
        # training postfix stands still (not part of the state: at worst one repeated event after a restore)
        self.validating = False
        self.last_postfix: dict[str, float] | None = None  # the metrics of the last main-bar line read

    # -- public -----------------------------------------------------------------------------------

    def extract(self, line: str) -> list[Event]:
        """Events from one line (usually none or one), in step order."""
        self.lines += 1
        self.epoch_lines += 1
        self.bar_lines += 1
        self.header_lines += 1
        if "tensor(" in line:
            line = _TENSOR.sub(_tensor_value, line)
        if " is " in line:
            line = _IS_VALUE.sub(r"\1: ", line)  # MindSpore's LossMonitor: "epoch: 1 step: 375, loss is 2.298612"
        if not line.isascii() and _CJK.search(line) is not None:
            line = _cjk_words(line)
        # Lines without a digit carry no value, but some open or close a table or block (see _marker).
        parsed = self._parse(line) if _PREFILTER.search(line) is not None else _marker(self, line)
        out: list[Event] = []
        self.read_values = parsed is not None and bool(parsed.metrics)
        if not self.read_values:
            return out
        if parsed.bar:
            if self.pending is not None and self.pending[0] != parsed.step:
                self._emit(self.pending[0], self.pending[1], out)
            self.pending = [parsed.step, parsed.metrics]
            return out
        if self.pending is not None:
            self._emit(self.pending[0], self.pending[1], out)
            self.pending = None
        step = parsed.step
        if step is None:
            step = self.last_step + 1
        else:
            self.counting = False
        self._emit(step, parsed.metrics, out)
        return out

    def extract_many(self, lines: Iterable[str]) -> list[Event]:
        out: list[Event] = []
        for line in lines:
            out.extend(self.extract(line))
        return out

    @property
    def holds_back(self) -> bool:
        """Whether a progress bar's values wait for the next line (see :meth:`flush`)."""
        return self.pending is not None

    def flush(self) -> list[Event]:
        """Events held back (a progress bar's last values)."""
        out: list[Event] = []
        if self.pending is not None:
            self._emit(self.pending[0], self.pending[1], out)
            self.pending = None
        return out

    def state_dict(self) -> dict:
        return {
            "last_step": self.last_step, "epoch": self.epoch, "epoch_lines": self.epoch_lines,
            "dict_epoch": self.dict_epoch,
            "bar_step": self.bar_step, "bar_lines": self.bar_lines,
            "pending": None if self.pending is None else [self.pending[0], _floats_out(self.pending[1])],
            "emitted": dict(self.emitted), "dropped": self.dropped, "lines": self.lines, "table": self.table,
            "yolo": self.yolo, "metrics_block": self.metrics_block, "composer_step": self.composer_step,
            "olmo_step": self.olmo_step, "olmo_eval": self.olmo_eval,
            "header_step": self.header_step, "header_lines": self.header_lines,
            "step_epoch": self.step_epoch, "epoch_max": self.epoch_max, "step_offset": self.step_offset,
            "epoch_base": self.epoch_base, "steps_run_on": self.steps_run_on, "step_gap": self.step_gap,
            "counting": self.counting, "fraction_filled": self.fraction_filled,
            "bars": {k: list(v) for k, v in self.bars.items()},
            "routes": list(self.routes),
            "rl_table": None if self.rl_table is None else {
                "section": self.rl_table["section"], "values": _floats_out(self.rl_table["values"])},
        }

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.epoch = None if state["epoch"] is None else int(state["epoch"])
        self.epoch_lines = int(state["epoch_lines"])
        dict_epoch = state.get("dict_epoch")
        self.dict_epoch = None if dict_epoch is None else float(dict_epoch)
        self.bar_step = None if state["bar_step"] is None else int(state["bar_step"])
        self.bar_lines = int(state["bar_lines"])
        p = state["pending"]
        self.pending = None if p is None else [int(p[0]), _floats_in(p[1])]
        self.emitted = {str(k): int(v) for k, v in state["emitted"].items()}
        self.dropped = int(state["dropped"])
        self.lines = int(state["lines"])
        table = state.get("table")  # absent in states saved before tables were read
        self.table = None if table is None else [str(c) for c in table]
        # Absent in states saved before these shapes were read.
        yolo = state.get("yolo")
        self.yolo = None if yolo is None else [int(yolo[0]), *(str(c) for c in yolo[1:])]
        composer = state.get("composer_step")
        self.composer_step = None if composer is None else int(composer)
        olmo = state.get("olmo_step")
        self.olmo_step = None if olmo is None else int(olmo)
        olmo_eval = state.get("olmo_eval")
        self.olmo_eval = None if olmo_eval is None else str(olmo_eval)
        header = state.get("header_step")  # absent in states saved before step headers were read
        self.header_step = None if header is None else int(header)
        self.header_lines = int(state.get("header_lines", 0))
        step_epoch = state.get("step_epoch")
        self.step_epoch = None if step_epoch is None else int(step_epoch)
        self.epoch_max = int(state.get("epoch_max", 0))
        self.step_offset = int(state.get("step_offset", 0))
        base = state.get("epoch_base")
        self.epoch_base = None if base is None else int(base)
        self.steps_run_on = bool(state.get("steps_run_on", False))
        self.step_gap = int(state.get("step_gap", 0))  # absent in states saved before 2026-12-06
        self.counting = bool(state.get("counting", False))  # absent in states saved before 2026-12-07
        self.fraction_filled = bool(state.get("fraction_filled", False))
        self.bars = {str(k): (int(v[0]), int(v[1]), str(v[2]) if len(v) > 2 else "") for k, v in state.get("bars", {}).items()}
        self.routes = [str(r) for r in state.get("routes", [])]  # absent in states saved before routes
        block = state.get("metrics_block")
        self.metrics_block = None if block is None else str(block)
        rl = state.get("rl_table")
        self.rl_table = None if rl is None else {"section": str(rl["section"]), "values": _floats_in(rl["values"])}

    # -- internals --------------------------------------------------------------------------------

    def _emit(self, step: int, metrics: dict[str, float], out: list[Event]) -> None:
        if step < self.last_step or step >= STEP_LIMIT:  # steps are int64 in the contract
            self.dropped += 1
            self.dropped_step = step
            return
        fresh = {k: v for k, v in metrics.items() if self.emitted.get(k, -1) < step}
        if not fresh:
            return
        if 0 <= self.last_step < step:
            self.step_gap = step - self.last_step
        for k in fresh:
            self.emitted[k] = step
        if len(self.emitted) > 4096:  # names that keep changing: forget the oldest
            self.emitted = dict(list(self.emitted.items())[-2048:])
        self.last_step = step
        out.append((step, fresh))

    def _parse(self, line: str) -> _Parsed | None:
        for needle, parser in _DISPATCH:
            if needle in line:
                parsed = parser(self, line)
                if parsed is not None:
                    return parsed
        return None

    def _base_of(self, epoch: int) -> int:
        """The log's epoch base: 0 when the first epoch a step line named was 0, else 1."""
        if self.epoch_base is None:
            self.epoch_base = min(epoch, 1)
        return self.epoch_base

    def _epoch_step(self, epoch: int, batch: int, total: int, base: int) -> int:
        return max(epoch - base, 0) * total + batch

    def _current_step(self) -> int:
        """The step a line without one reports at: the bar being held, else the last event's."""
        return self.pending[0] if self.pending is not None else max(self.last_step, 0)


def _floats_out(d: dict[str, float]) -> dict:
    return {k: (v if math.isfinite(v) else repr(v)) for k, v in d.items()}


def _floats_in(d: dict) -> dict[str, float]:
    return {str(k): float(v) for k, v in d.items()}


# -- the parsers, in the order they are tried ---------------------------------------------------------


def _megatron(x: MetricExtractor, line: str) -> _Parsed | None:
    if "|" not in line:
        return None
    m = _MEGATRON_VAL.search(line)
    if m is not None and m.group(1):
        metrics = _segments(line[m.end() :], "val/")
        # Megatron prints "lm loss PPL"; the loss key already carries "loss".
        metrics = {("val/ppl" if k.endswith("ppl") else k): v for k, v in metrics.items()}
        return _Parsed(int(m.group(1)), metrics)
    m = _MEGATRON.search(line)
    if m is None:
        return None
    step = int(m.group(1))
    if "global_step" in line:
        # NeMo 2's ProgressPrinter: "Training epoch 1, iteration 49/99 | lr: ... | global_step: 149 | ...": the
        # iteration counts within the epoch, the global step is the run's
        g = _GLOBAL_STEP_SEGMENT.search(line, m.end())
        if g is not None:
            step = int(g.group(1))
    return _Parsed(step, _segments(line[m.end() :]))


_GLOBAL_STEP_SEGMENT = re.compile(r"\|\s*global_step:\s*(\d+)(?:\.0+)?\s*(?:\||$)")


def _fairseq(x: MetricExtractor, line: str) -> _Parsed | None:
    m = _FAIRSEQ_INNER.search(line)
    if m is not None and ("loss=" in line or "nll_loss=" in line):
        metrics = _pairs(line)
        metrics.pop("num_updates", None)
        return _Parsed(int(m.group(1)), metrics)
    if "subset" in line and _FAIRSEQ_VALID.search(line):
        u = _FAIRSEQ_UPDATES.search(line)
        if u is None:
            return None
        tail = line[_FAIRSEQ_VALID.search(line).end() :]
        metrics = _segments(tail, "val/")
        return _Parsed(int(u.group(1)), metrics)
    if _FAIRSEQ_UPDATES.search(line) is not None:
        return _Parsed(None, {})  # "| epoch 008 | loss 6.326 | ... | num_updates 21896": the epoch's averages, not read
    return None


def _hf_dict(x: MetricExtractor, line: str) -> _Parsed | None:
    if "{" not in line:
        return None
    m = _DICT.search(line)
    if m is None:
        return None
    raw = [(k, v) for k, _, v in _DICT_KV.findall(m.group(0))]
    if not raw:
        return None
    keys = [k for k, _ in raw]
    if not any(_measured(k) for k in keys):
        # a dict of settings ({'temperature': 1.0, 'top_k': 20}, {'lr': 0.001, 'batch_size': 32}), not of metrics
        return None
    before = line[: m.start()]
    if _SETTINGS_BEFORE.search(before) or _DICT_LITERAL.search(m.group(0)):
        return None  # "... parameters: {'lr': 0.001}" (an HPO trial's settings), {'enabled': True, ...}: not metrics
    if any(k in ("train_runtime", "total_flos") for k in keys):
        return None  # the end-of-training summary: averages of what was already logged
    if "num_updates" in m.group(0):
        fairseq = _fairseq_json(raw)
        if fairseq is not None:
            return fairseq
    metrics: dict[str, float] = {}
    step = None
    epoch = None
    for key, value in raw:
        low = key.lower()
        if low in ("step", "global_step", "training_iteration"):  # training_iteration: Ray Tune's results
            if math.isfinite(float(value)):
                step = int(float(value))
            continue
        if low == "epoch":
            epoch = float(value)
        named = metric_name(key)
        if named is None:
            continue
        name, scale = named
        metrics.setdefault(name, _value(value) * scale)
    if not metrics:
        return None
    if step is None and "global_step/" in line:
        of = _DICT_STEP_OF.search(line)
        step = None if of is None else int(of.group(1))
    if step is None and before:
        lead = _DICT_LEAD_STEP.search(before)  # "step 100: {'loss': 0.5}", "iter 100 {'loss': ...}"
        step = None if lead is None else int(lead.group(1))
    if step is None and epoch is not None and x.last_step >= 0 and all(
        k.lower().startswith(("eval_", "test_")) or k.lower() == "epoch" for k in keys
    ) and epoch == x.dict_epoch:
        step = x.last_step  # the Trainer's evaluation at the step its last training dict was logged at
    if step is None and epoch is not None and epoch.is_integer() and any(k.startswith("train_") for k in keys):
        step = int(epoch)  # one dict per epoch (timm, DeiT log.txt)
    if step is None and x.bar_step is not None and x.bar_lines <= 3:
        step = x.bar_step
    if epoch is not None:
        x.dict_epoch = epoch
    return _Parsed(step, metrics, counter=step is None)


def _measured(key: str) -> bool:
    """A key that names something measured in training (a loss, an accuracy, a gradient norm, an evaluation's
    value), not a setting: a dict whose only metric-like key is a learning rate is a configuration."""
    low = key.lower()
    if low.startswith(("eval_", "test_")):
        return True
    if not _metric_like(key):
        return False
    named = metric_name(key)
    return named is not None and named[0] != "lr"


def _fairseq_json(raw: list[tuple[str, str]]) -> _Parsed | None:
    """fairseq's ``--log-format json``: ``{"epoch": 3, "update": 2.101, "loss": "4.12", ..., "num_updates": "4150"}``
    (``train_inner``), ``{"epoch": 3, "valid_loss": "4.01", ..., "valid_num_updates": "4150"}`` (the validation
    summary, read as ``val/``) and ``{"epoch": 3, "train_loss": "4.2", ..., "train_num_updates": "4150"}`` (the
    epoch's averages, not read, as in the simple format). The step is ``num_updates``; ``epoch`` and ``update``
    (the epoch's fraction) are progress, not metrics. None when the dict is not of these shapes."""
    values = dict(raw)
    if "num_updates" in values:
        step, prefix, phase = values["num_updates"], "", ""
    elif "valid_num_updates" in values:
        step, prefix, phase = values["valid_num_updates"], "valid_", "val/"
    elif "train_num_updates" in values:
        return _Parsed(None, {})
    else:
        return None
    if not math.isfinite(float(step)):
        return None
    metrics: dict[str, float] = {}
    for key, value in raw:
        if not key.startswith(prefix) or key in ("epoch", "update"):
            continue
        base = key[len(prefix) :]
        named = None if base == "num_updates" else metric_name(base, phase)
        if named is not None:
            metrics.setdefault(named[0], _value(value) * named[1])
    return _Parsed(int(float(step)), metrics)


def _mm(x: MetricExtractor, line: str) -> _Parsed | None:
    if "Epoch" not in line and "Iter" not in line:
        return None
    m = _MM_EPOCH.search(line)
    if m is not None:
        mode, epoch, batch, total = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        rest = line[m.end() :]
        if mode in ("(val)", "(test)"):
            return _Parsed(max(x.last_step, 0), _mm_pairs(rest, "val/" if mode == "(val)" else "test/"))
        return _Parsed(x._epoch_step(epoch, batch, total, 1), _mm_pairs(rest))
    m = _MM_ITER.search(line)
    if m is not None:
        mode, it = m.group(1), int(m.group(2))
        rest = line[m.end() :]
        if mode in ("(val)", "(test)"):
            return _Parsed(max(x.last_step, 0), _mm_pairs(rest, "val/" if mode == "(val)" else "test/"))
        return _Parsed(it, _mm_pairs(rest))
    m = _MM_EVAL.search(line) if "(val)" in line or "(test)" in line else None
    if m is not None:
        return _Parsed(max(x.last_step, 0), _mm_pairs(line[m.end() :], "val/" if m.group(1) == "val" else "test/"))
    return None


def _mm_pairs(text: str, phase: str = "") -> dict[str, float]:
    out = {}
    for key, raw in _KV.findall(text):
        low = key.lower()
        if "copypaste" in low:
            continue  # mmdet's "bbox_mAP_copypaste: 0.214 0.387 ...": six values, not one
        if low in ("eta", "memory", "max_mem"):
            named: tuple[str, float] | None = (low, 1.0) if low != "eta" else None
        elif low == "time":
            named = ("step_time", 1.0)
        elif low == "data_time":
            named = ("data_time", 1.0)
        else:
            named = metric_name(key)
        if named is None:
            continue
        name, scale = named
        if phase:
            if name in ("step_time", "data_time", "memory", "max_mem"):
                continue
            name = name if "/" in name else phase + name
        out.setdefault(name, _value(raw) * scale)
    return out


def _metriclogger(x: MetricExtractor, line: str) -> _Parsed | None:
    if "Epoch:" not in line:
        return None
    m = _METRICLOGGER.search(line)
    if m is None:
        return None
    epoch, batch, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
    out = {}
    for key, raw in _KV.findall(line[m.end() :]):
        low = key.lower()
        named = ("step_time", 1.0) if low == "time" else ("data_time", 1.0) if low == "data" else None
        if named is None and _metric_like(key):
            named = metric_name(key)
        if named is not None:
            out.setdefault(named[0], _value(raw) * named[1])
    for name, value in _spaced_pairs(_KV.sub(" | ", line[m.end() :])).items():
        out.setdefault(name, value)
    if "(" in line:  # PyTorch's imagenet example: AverageMeters printed "Time  0.512 ( 0.910)", "Acc@1   0.00 (  0.14)"
        for key, raw in _METER.findall(line, m.end()):
            out.setdefault(_METER_NAMES[key], _value(raw))
    return _Parsed(x._epoch_step(epoch, batch, total, 0), out)


# An AverageMeter's "name value (average)" without a colon (PyTorch's imagenet example and the scripts copied from it)
_METER = re.compile(r"(?<![\w@])(Time|Data|Acc@1|Acc@5)\s+(" + _NUM + r")\s+\(")
_METER_NAMES = {"Time": "step_time", "Data": "data_time", "Acc@1": "acc1", "Acc@5": "acc5"}
# The evaluation's summary: imagenet's " *   Acc@1 71.234 Acc@5 90.123" (ProgressMeter.display_summary), DeiT's
# and MAE's "* Acc@1 81.800 Acc@5 95.600 loss 0.800"
_ACC_SUMMARY = re.compile(
    r"(?:^|\] |- )\s*\*\s+Acc@1 (" + _NUM + r")(?:\s+Acc@5 (" + _NUM + r"))?(?:\s+loss (" + _NUM + r"))?\s*$"
)


def _acc_summary(x: MetricExtractor, line: str) -> _Parsed | None:
    """The evaluation summary of PyTorch's imagenet example and of DeiT/MAE (:data:`_ACC_SUMMARY`): ``val/acc1``,
    ``val/acc5`` (percentages) and ``val/loss``, at the current step."""
    m = _ACC_SUMMARY.search(line)
    if m is None:
        return None
    out = {"val/acc1": _value(m.group(1))}
    if m.group(2) is not None:
        out["val/acc5"] = _value(m.group(2))
    if m.group(3) is not None:
        out["val/loss"] = _value(m.group(3))
    return _Parsed(x._current_step(), out)


def _detectron2(x: MetricExtractor, line: str) -> _Parsed | None:
    if "iter:" not in line or "eta:" not in line:
        return None
    m = _D2.search(line)
    if m is None:
        return None
    return _Parsed(int(m.group(1)), _mm_pairs(line[m.end() :]))


def _timm(x: MetricExtractor, line: str) -> _Parsed | None:
    if "[" not in line or "%)]" not in line:
        return None
    m = _TIMM.search(line)
    if m is None or m.group(1) != "Train":
        return None
    epoch, batch, total = int(m.group(2)), int(m.group(3)), int(m.group(4))
    rest = line[m.end() :]
    out = {}
    for key, pat, name in (("Loss", _NUM, "loss"), ("LR", _NUM, "lr"), ("Data", _NUM, "data_time")):
        v = re.search(r"\b" + key + r":\s*(" + pat + r")" + _END, rest)
        if v is not None:
            out[name] = _value(v.group(1))
    t = re.search(r"\bTime:\s*(" + _NUM + r")s,", rest)
    if t is not None:
        out["step_time"] = _value(t.group(1))
    return _Parsed(x._epoch_step(epoch, batch, total, 0), out)


def _nanogpt(x: MetricExtractor, line: str) -> _Parsed | None:
    if "iter " in line:
        m = _NANOGPT_ITER.search(line)
        if m is not None:
            return _Parsed(int(m.group(1)), {"loss": _value(m.group(2)), "step_time": _value(m.group(3)) * 1e-3})
    if "val loss" in line:
        m = _NANOGPT_EVAL.search(line)
        if m is not None:
            return _Parsed(int(m.group(1)), {"val/loss": _value(m.group(3))})
    return None


def _build_nanogpt(x: MetricExtractor, line: str) -> _Parsed | None:
    """build-nanogpt's ``log.txt``: ``250 train 5.123456``, ``250 val 5.2310``, ``250 hella 0.2501``.

    >>> _build_nanogpt(MetricExtractor(), "250 val 5.2310").metrics
    {'val/loss': 5.231}
    """
    if len(line) > 48 or not line[:1].isdigit():  # its lines are short: most lines leave here
        return None
    m = _BUILD_NANOGPT.fullmatch(line)
    return None if m is None else _Parsed(int(m.group(1)), {_BUILD_NANOGPT_NAMES[m.group(2)]: _value(m.group(3))})


def _yolov3_losses(x: MetricExtractor, line: str) -> _Parsed | None:
    """eriklindernoren's PyTorch-YOLOv3 (2018) batch lines: the ``total`` of its ``[Losses: ...]`` is the loss.

    >>> _yolov3_losses(MetricExtractor(), "[Epoch 1/30, Batch 2/100] [Losses: x 0.27, y 0.25, conf 4.3, "
    ...                "total 15.14, recall: 0.1, precision: 0.2]").step
    102
    """
    m = _YOLOV3_LOSSES.search(line)
    if m is None:
        return None
    out = {("loss" if k == "total" else k): _value(v) for k, v in _YOLOV3_PAIR.findall(m.group(4))}
    return _Parsed(x._epoch_step(int(m.group(1)), int(m.group(2)), int(m.group(3)), 0), out) if out else None


def _nnunet(x: MetricExtractor, line: str) -> _Parsed | None:
    """nnU-Net's training log, v1 and v2: a value a line at its epoch (the step), dice as the mean of its classes.

    >>> x = MetricExtractor()
    >>> _nnunet(x, "2023-03-20 10:00:00.000000: Epoch 5"), _nnunet(x, "2023-03-20 10:02:00.000000: val_loss -0.6801").step
    (None, 5)
    >>> _nnunet(x, "2023-03-20 10:02:00.000001: Pseudo dice [0.8123, 0.7877]").metrics
    {'val/dice': 0.8}
    """
    if line[:1] == "e" and (e := _NNUNET_EPOCH.fullmatch(line)) is not None:  # v1's "epoch:  5 " on its own line
        x.epoch, x.epoch_lines = int(e.group(1)), 0
        return None
    # the stamp is fixed-width ("2023-03-20 10:00:00.000000: "): two slices turn most lines away before the regex
    if line[26:28] != ": " or line[4:5] != "-" or (m := _NNUNET_STAMP.match(line)) is None:
        return None
    body = line[m.end() :]
    if (e := _NNUNET_EPOCH.fullmatch(body)) is not None:
        x.epoch, x.epoch_lines = int(e.group(1)), 0
        return None
    v = _NNUNET_VALUE.fullmatch(body)
    if v is None:
        return None
    if v.group(1) is not None:
        out = {_NNUNET_NAMES[v.group(1)]: _value(v.group(2))}
    else:
        dice = [_value(d) for d in _NUMBER.findall(v.group(4))]
        if not dice:
            return None
        out = {"val/dice": sum(dice) / len(dice)}
    return _Parsed(x.epoch, out)


def _nanogpt_or_nnunet_log(x: MetricExtractor, line: str) -> _Parsed | None:
    """build-nanogpt's and nnU-Net's lines, which no substring announces: one call for both, as every line pays it."""
    head = line[:1]
    if head.isdigit():
        return _build_nanogpt(x, line) or _nnunet(x, line)
    return _nnunet(x, line) if head == "e" else None


def _swin(x: MetricExtractor, line: str) -> _Parsed | None:
    """Swin Transformer's training line: ``Train: [epoch/epochs][idx/steps]``, then ``key value (running mean)``."""
    m = _SWIN_TRAIN.search(line)
    if m is None:
        return None
    metrics = _spaced_pairs(_RUNNING_MEAN.sub(" |", line[m.end() :]).replace("\t", " | "))
    if not metrics:
        return None
    epoch = int(m.group(1))
    return _Parsed(x._epoch_step(epoch, int(m.group(2)), int(m.group(3)), x._base_of(epoch)), metrics)


def _onmt(x: MetricExtractor, line: str) -> _Parsed | None:
    if ";" not in line:
        return None
    m = _ONMT_OLD.search(line)
    step = None
    if m is not None:
        step = x._epoch_step(int(m.group(1)), int(m.group(2)), int(m.group(3)), 1)
    else:
        m = _ONMT_STEP.search(line)
        if m is not None:
            step = int(m.group(1))
    if step is None:
        return None
    out = {}
    for key, raw in _KV.findall(line[m.end() :]):
        low = key.lower()
        named = ("loss", 1.0) if low == "xent" else metric_name(key) if _metric_like(key) else None
        if named is not None:
            out.setdefault(named[0], _value(raw) * named[1])
    return _Parsed(step, out)


_ONMT_VALID = re.compile(r"(?:^|\] |\| |- )\s*Validation (perplexity|accuracy): (" + _NUM + r")\s*$")


def _onmt_valid(x: MetricExtractor, line: str) -> _Parsed | None:
    """OpenNMT's validation report (``onmt/utils/report_manager.py``): ``Validation perplexity: 450.1`` and
    ``Validation accuracy: 12.3`` (a percentage) on lines of their own, at the current step. Its ``Train
    perplexity`` / ``Train accuracy`` lines are averages over the epoch's lines already read: not read."""
    m = _ONMT_VALID.search(line)
    if m is None:
        return None
    return _Parsed(x._current_step(), {"val/ppl" if m.group(1) == "perplexity" else "val/acc": _value(m.group(2))})


def _torch_example(x: MetricExtractor, line: str) -> _Parsed | None:
    """PyTorch's examples (mnist and the many scripts copied from it): the step counts samples, as the line does."""
    if "Train Epoch:" in line:
        m = _TORCH_EXAMPLE.search(line)
        if m is not None:
            epoch, seen, total = int(m.group(1)), int(m.group(2)), int(m.group(3))
            return _Parsed(x._epoch_step(epoch, seen, total, 1), {"loss": _value(m.group(4))})
    if "Test set:" in line:
        m = _TORCH_EXAMPLE_TEST.search(line)
        if m is not None and int(m.group(3)) > 0:
            return _Parsed(max(x.last_step, 0), {"val/loss": _value(m.group(1)),
                                                 "val/acc": int(m.group(2)) / int(m.group(3))})
    return None


def _fastai(x: MetricExtractor, line: str) -> _Parsed | None:
    """fastai's results table: an ``epoch train_loss valid_loss ... time`` header, then a row per epoch (skorch's
    ``epoch train_loss valid_acc valid_loss dur`` too).

    Also the rows of a notebook table (:func:`_notebook_header`), and its header when a column name holds a digit.
    """
    if line[:1] in "SE|" and _NOTEBOOK_HEADER.match(line):
        _notebook_header(x, line)
        return None
    m = _FASTAI_HEADER.match(line)
    if m is not None:
        x.table = m.group(1).split()
        return None
    m = _SKORCH_HEADER.match(line)
    if m is not None:
        x.table = [*m.group(1).split(), "@dur"]
        return None
    if x.table is None:
        return None
    if x.table[0] == "@notebook":
        return _notebook_row(x, line)
    if x.table[0] == "@steps":
        return _step_table_row(x, line)
    columns = x.table
    if columns[-1] == "@dur":
        m = _SKORCH_ROW.match(line)
        columns = columns[:-1]
        cells = m.group(2).split()[:-1] if m is not None else []
    else:
        m = _FASTAI_ROW.match(line)
        cells = m.group(2).split() if m is not None else []
    if m is None or len(cells) != len(columns):
        return None
    out = {}
    for column, cell in zip(columns, cells):
        named = metric_name(column)
        if named is not None and cell != "#na#":
            out.setdefault(named[0], _value(cell) * named[1])
    return _Parsed(int(m.group(1)), out)


_NOTEBOOK_HEADER = re.compile(r"^\|?\s*(?:Step|Epoch)(?:\t|\s{2,}|\s*\|\s*)(?:Training|Validation) Loss\b", re.IGNORECASE)
_NOTEBOOK_SPLIT = re.compile(r"\t|\s{2,}|\s*\|\s*")


def _notebook_header(x: MetricExtractor, header: str) -> None:
    """The Hugging Face Trainer's notebook table (also Unsloth's): ``Step  Training Loss  Validation Loss  Accuracy``.

    Stored in ``x.table`` as ``["@notebook", name per column after the first...]``: "Training Loss" is ``loss``,
    every other column an evaluation metric (``val/...``), as the Trainer fills them at evaluation steps.
    """
    columns = [c.strip() for c in _NOTEBOOK_SPLIT.split(header.strip().strip("|").strip())]
    names = []
    for column in columns[1:]:
        low = " ".join(column.lower().split())
        named = ("loss", 1.0) if low == "training loss" else metric_name(low.replace("validation ", ""), "val/")
        names.append("" if named is None or named[1] != 1.0 else named[0])
    x.table = ["@notebook", *names]


def _notebook_row(x: MetricExtractor, line: str) -> _Parsed | None:
    """A row of the notebook table (:func:`_notebook_header`): ``10  2.345600  No log  0.51``; ``No log`` is absent."""
    cells = [c.strip() for c in _NOTEBOOK_SPLIT.split(line.strip().strip("|").strip().replace("No log", "-"))]
    if len(cells) != len(x.table) or not cells[0].isdigit():
        x.table = None  # the table ended
        return None
    out = {}
    for name, cell in zip(x.table[1:], cells[1:]):
        if name and cell != "-":
            if not re.fullmatch(_NUM, cell):
                x.table = None
                return None
            out[name] = _value(cell)
    return _Parsed(int(cells[0]), out)


def _torchtune(x: MetricExtractor, line: str) -> _Parsed | None:
    """torchtune's recipes: ``epoch|step|Loss: value`` as the progress bar's description."""
    if "|Loss:" not in line:
        return None
    m = _TORCHTUNE.search(line)
    return None if m is None else _Parsed(int(m.group(2)), {"loss": _value(m.group(3))})


def _keras(x: MetricExtractor, line: str) -> _Parsed | None:
    m = _KERAS_EPOCH.fullmatch(line)
    if m is not None:
        x.epoch, x.epoch_lines = int(m.group(1)), 0
        return None
    if " - " not in line:
        return None
    m = _KERAS_BAR.search(line) if "/" in line else None
    if m is not None:
        batch, total = int(m.group(1)), int(m.group(2))
        step = batch if x.epoch is None else x._epoch_step(x.epoch, batch, total, 1)
    elif x.epoch is not None and x.epoch_lines <= 2 and (m := _KERAS1_SUMMARY.match(line)) is not None:
        step = x.epoch  # Keras 1's verbose=2 prints the epoch's time and values, no batch count: one step per epoch
    else:
        return None
    out = {}
    for part in line[m.end() :].split(" - "):
        kv = re.fullmatch(r"\s*([A-Za-z][\w./]*):\s*(" + _NUM + r")\s*", part)
        if kv is None:
            continue
        named = metric_name(kv.group(1))
        if named is not None:
            out.setdefault(named[0], _value(kv.group(2)) * named[1])
    return _Parsed(step, out)


# Keras 1 with verbose=2, under its "Epoch 3/10" line: "88s - loss: 1.4001 - acc: 0.5754 - val_loss: 1.8586"; Keras 2.1-2.2
# prints " - 88s - loss: ..." (a dash first), and some versions the time per step too (" - 88s 12ms/step - loss: ...")
_KERAS1_SUMMARY = re.compile(r"^\s*(?:-\s+)?\d+(?:\.\d+)?m?s(?:\s+\d+(?:\.\d+)?[mu]?s/step)?(?= - [A-Za-z])")
_RICH_BAR = re.compile(r"^\s*Epoch (\d+)/\d+\s+[\u2500-\u257f]+\s+(\d+)/(\d+)\s")
_BRACKET_STEP = re.compile(r"(?:^|\]\s)\s*\[(\d+)\]\s+(?=[A-Za-z][\w./\-]*=)")
# "[0/5][50/1583] Loss_D: ...", "[100/1000] loss: ...": at the line's start or after a log prefix (checked apart: a
# pattern that starts with "[" is found by a fast literal scan)
_BRACKET_FRACTIONS = re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\](?:\s*\[\s*(\d+)\s*/\s*(\d+)\s*\])?\s*[:,|-]?\s*(?=[A-Za-z])")
_PREFIX_END = re.compile(r"(?:[\]|:]\s|\s-\s)\s*$")


def _rich_bar(x: MetricExtractor, line: str) -> _Parsed | None:
    """Lightning's ``RichProgressBar``: ``Epoch 2/9 ━━━━ 938/938 0:00:12 • 0:00:00 75.12it/s v_num: 0 train_loss: 0.12``
    (0-based epochs, as Lightning counts them)."""
    if "Epoch" not in line:
        return None
    m = _RICH_BAR.match(line)
    if m is None:
        return None
    metrics = _pairs(line[m.end() :], keep=_metric_like)
    if not metrics:
        return None
    return _Parsed(x._epoch_step(int(m.group(1)), int(m.group(2)), int(m.group(3)), 0), metrics, bar=True)


def _bracket_step(x: MetricExtractor, line: str) -> _Parsed | None:
    """CLU's ``LoggingWriter`` (JAX: Flax, T5X, big_vision), through absl: ``...logging_writer.py:48] [100]
    learning_rate=0.001, loss=2.31``: the step in brackets, then ``key=value`` pairs."""
    if "=" not in line:
        return None
    m = _BRACKET_STEP.search(line)
    if m is None:
        return None
    rest = line[m.end() :]
    phase = ""
    if rest.startswith("collection="):  # CLU's LoggingWriter(collection=...): "[1000] collection=train loss=2.35, ..."
        c = _COLLECTION.match(rest)
        if c is None:
            return None
        name = c.group(1).lower()
        if "eval" in name or "val" in name:
            phase = "val/"
        elif "test" in name:
            phase = "test/"
        elif name not in ("train", "training"):
            return None  # a collection of unknown phase: its values could be anyone's
        rest = rest[c.end() :]
    metrics = _pairs(rest, phase, keep=_metric_like)
    return _Parsed(int(m.group(1)), metrics) if metrics else None


_COLLECTION = re.compile(r"collection=([\w./\-]+)\s")


def _bracket_fractions(x: MetricExtractor, line: str) -> _Parsed | None:
    """A custom loop's ``[epoch/epochs][batch/batches]`` or ``[iter/iters]`` before its ``key: value`` pairs: PyTorch's
    DCGAN example ``[0/5][50/1583]\tLoss_D: 0.3127\tLoss_G: 8.4021``, ``[100/1000] loss: 2.34 lr: 0.001``.

    With two fractions the step is ``(epoch - base) * batches + batch`` (the base from the first epoch the log
    names); with one, the iteration itself.
    """
    if "/" not in line or "[" not in line:
        return None
    m = _BRACKET_FRACTIONS.search(line)
    if m is None or (m.start() and (line[: m.start()].strip() and _PREFIX_END.search(line, 0, m.start()) is None)):
        return None
    metrics = _pairs(line[m.end() :], _phase(line), keep=_metric_like)
    if not metrics:
        return None
    if "global_step" in line and (g := _GLOBAL_STEP_KV.search(line, m.end())) is not None:
        return _Parsed(int(g.group(1)), metrics)  # PaddleOCR: "epoch: [1/500], global_step: 10, lr: ..., loss: ..."
    if m.group(3) is None:
        return _Parsed(int(m.group(1)), metrics)
    epoch = int(m.group(1))
    return _Parsed(x._epoch_step(epoch, int(m.group(3)), int(m.group(4)), x._base_of(epoch)), metrics)


def _bar(x: MetricExtractor, line: str) -> _Parsed | None:
    """A tqdm bar (Lightning's, the Trainer's, NeMo's): the step is the bar's position in the run (its epoch times
    its total, plus its count; 0-based epochs, as Lightning counts them), or the postfix's ``global_step`` when
    there is one (NeMo: the optimizer's step); the postfix's ``key=value`` pairs are its metrics."""
    if "%|" not in line and "it [" not in line:
        return None
    m = _BAR.search(line)
    if m is None:
        return None
    if m.group(2) is None:
        step = int(m.group(4))  # a bar without a total counts the epoch's iterations
    else:
        n, total = int(m.group(2)), int(m.group(3))
        step = n if m.group(1) is None else int(m.group(1)) * total + n
    postfix = m.group(5)
    g = _GLOBAL_STEP.search(postfix) if postfix else None
    if g is not None and math.isfinite(float(g.group(1))):
        step = int(float(g.group(1)))
    elif m.group(1) is None and m.group(2) is not None:
        e = _POSTFIX_EPOCH.search(postfix) if postfix and "epoch=" in postfix else None
        if e is not None:  # a custom loop's tqdm(loader) with set_postfix(epoch=epoch, loss=...)
            epoch = int(e.group(1))
            step = x._epoch_step(epoch, int(m.group(2)), int(m.group(3)), x._base_of(epoch))
        else:
            step = _restarted_bar(x, int(m.group(2)), int(m.group(3)), postfix or "")
    x.bar_step, x.bar_lines = step, 0
    if not postfix:
        if line.lstrip().startswith(("Validation", "Validating")):
            x.validating = True  # Lightning's validation bar
        return None
    out = {}
    for key, raw in _KV.findall(postfix):
        named = metric_name(key)
        if named is not None and key.lower() not in ("v_num", "global_step", "consumed_samples", "epoch"):
            out.setdefault(named[0], _value(raw) * named[1])
    if x.validating:
        if out == x.last_postfix:
            return _Parsed(None, {})  # a validation batch on Lightning's main bar: the training values again
        x.validating = False
    x.last_postfix = out
    return _Parsed(step, out, bar=True)


def _restarted_bar(x: MetricExtractor, n: int, total: int, postfix: str) -> int:
    """The run's step for position ``n`` of a bar of ``total`` that names no epoch: a bar whose count goes back
    (``tqdm(loader)`` in each epoch of a custom loop) starts the next epoch, after the previous ones' steps.
    So does a complete bar followed by a complete one with other values: a captured stream keeps only a
    redrawn bar's last state (``runwatch pipe``, a log file's last ``\\r`` segment), one ``100/100`` line per
    epoch; the same values again are the same bar printed twice.

    Tracked per total, so an evaluation bar of another length in between neither restarts the training bar
    nor is read as its epochs.
    """
    key = str(total)
    last_n, offset, last_postfix = x.bars.get(key, (0, 0, ""))
    if n < last_n or (n == last_n == total and postfix != last_postfix):
        offset += total
    if key not in x.bars and len(x.bars) >= 16:  # totals that keep changing: forget the oldest
        x.bars.pop(next(iter(x.bars)))
    x.bars[key] = (n, offset, postfix[:200])
    return offset + n


# LeRobot's training line rounds its counters: "step:400 ... loss:2.215", then "step:1K", "step:1K", "step:2K", ...
_ROUNDED_STEP = re.compile(r"(?<![\w.])step:(\d+)(?:\.(\d+))?([KMBT])(?![\w.])")
_BIG = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def _rounded(step: int, unit: str, decimals: int) -> str:
    """``step`` as LeRobot's ``format_big_number`` prints it in ``unit`` (Python's rounding, half to even)."""
    return f"{step / _BIG[unit]:.{decimals}f}{unit}"


def _rounded_step(x: MetricExtractor, line: str) -> _Parsed | None:
    """A step printed rounded (``step:2K``): the step the log's own rhythm predicts (the last step plus the last
    rise) when it rounds to what is printed, else the printed value when it is past the last step."""
    m = _ROUNDED_STEP.search(line)
    if m is None:
        return None
    metrics = _pairs(line, _phase(line), keep=_metric_like)
    if not metrics:
        return None
    whole, frac, unit = m.groups()
    printed = f"{whole}.{frac}{unit}" if frac else f"{whole}{unit}"
    if x.step_gap > 0 and x.last_step >= 0:
        predicted = x.last_step + x.step_gap
        if _rounded(predicted, unit, len(frac or "")) == printed:
            return _Parsed(predicted, metrics)
    step = int(float(f"{whole}.{frac or 0}") * _BIG[unit])
    return _Parsed(step, metrics) if step > x.last_step else None


def _anchored(x: MetricExtractor, line: str) -> _Parsed | None:
    low = line.lower()
    if "ep" not in low and "iter" not in low:  # "ep" is in "step" and "epoch" too
        if "batch" not in low or x.epoch is None:
            return None
        lead = _BATCH_LEAD.match(line)  # "Batch 100/200, Loss: 0.5" after an "Epoch 1/10" line
        if lead is None:
            return None
        metrics = _pairs(line, _phase(line), keep=_metric_like)
        return _Parsed(_step_in_epoch(x, line, int(lead.group(1))), metrics) if metrics else None
    anchors = _ANCHOR.findall(line)
    if not anchors:
        return None
    word, value = min(anchors, key=lambda a: _ANCHOR_RANK[a[0].lower()])
    if word.lower() == "ep":
        word = "epoch"
    if word.lower() == "epoch" and _fractions(line) > 1 and _EPOCH_BATCH.search(line) is None:
        return None  # "Epoch: 55/167 (996/1926)": the epoch is not the step, and the step is not given
    metrics = _pairs(line, _phase(line), keep=_metric_like)
    metrics.pop("epoch", None)
    if metrics.keys() == {"lr"} and word.lower() != "epoch" and _LR_IN_PARENTHESES.search(line) is not None:
        return None  # "Step 4/6  Phase 1 -- layer4 only (6 epochs, LR=0.0001) ...": a stage's setting, not a step
    if not metrics and "per-step time" in line and word.lower() == "step":
        # TF's Object Detection API: "Step 100 per-step time 0.5s", then the step's losses as a dict
        x.bar_step, x.bar_lines = int(value), 0
        return None
    litgpt = _LOSS_TRAIN_VAL.search(line) if "loss train:" in line else None
    if litgpt is not None:
        metrics["loss"] = _value(litgpt.group(1))
        if litgpt.group(2) is not None:
            metrics["val/loss"] = _value(litgpt.group(2))
    elif "loss" not in metrics and "val/loss" not in metrics:
        for name, loss in _split_losses(line).items():
            metrics.setdefault(name, loss)
    if not metrics:
        # an epoch line alone ("Epoch 3/30"), or CycleGAN's "End of epoch 4 / 100 \t Time Taken: 95 sec": the epoch of
        # the lines that follow
        if word.lower() == "epoch" and (_EPOCH_LINE.fullmatch(_message(line)) or _END_OF_EPOCH.match(line)):
            x.epoch, x.epoch_lines = int(value), 0
        return None
    if word.lower() == "epoch":
        batch = _EPOCH_BATCH.search(line)
        if batch is None and "batch" not in low:
            e = _EPOCH_OF.search(line)
            if e is not None and e.group(2):  # "Epoch 1/2 (lr=0.01000)": "Batch 50/295, Loss: ..." lines follow
                x.epoch, x.epoch_lines = int(e.group(1)), 0
                if set(metrics) <= {"lr"}:
                    return None  # the epoch's setting, printed before its first batch: not a step of its own
        of = _EPOCH_THEN_FRACTION.search(line) if batch is None else None
        if of is not None:  # fairseq < 0.6: "| epoch 001  1000 / 331737 loss=...", the batch of the epoch's total
            step = _continued_step(x, int(of.group(1)), int(of.group(2)), int(of.group(3)))
        elif batch is None and x.step_epoch is not None and int(value) == x.step_epoch:
            # "Epoch 1 - Validation Accuracy: 0.79" after that epoch's "Epoch 1, Batch 100, Loss: ..." lines: the
            # epoch's summary, at the step its batches reached (at the epoch's number it would go back, and be dropped)
            step = x._current_step()
        else:
            step = int(value) if batch is None else _step_in_epoch(x, line, int(batch.group(1)))
    else:
        step = _step_in_epoch(x, line, int(value))
    return _Parsed(step, metrics)


# "[1,  2000] loss: 2.192" (PyTorch's CIFAR-10 tutorial: epoch, batch), or "[3] loss: 0.309" (one counter)
_LR_IN_PARENTHESES = re.compile(r"\([^()]*\b(?:lr|learning[ _]rate)\s*[:=]", re.IGNORECASE)
_TUTORIAL_PAIR = re.compile(r"^\s*\[\s*(\d+)\s*(?:,\s*(\d+)\s*)?\]\s+(?=[A-Za-z])")
_GAN_STEP = re.compile(r"\[Epoch\s+(\d+)\s*/\s*(\d+)\]\s*\[Batch\s+(\d+)\s*/\s*(\d+)\]")
_BRACKET_FIELD = re.compile(r"\[\s*([A-Za-z][\w ]{0,30}?)\s*:\s*(" + _NUM + r")\s*[\],]")
_VISUALIZER = re.compile(r"^\s*\(epoch:\s*(\d+),\s*iters:\s*(\d+),[^)]*\)\s+(?=[A-Za-z])")
_DARKNET = re.compile(r"^\s*(\d+):\s*(" + _NUM + r"),\s*(" + _NUM + r") avg(?: loss)?,\s*(" + _NUM + r") rate,\s*(" + _NUM
                      + r") seconds,\s*\d+ images")
# A loss printed per split without "loss" in its key: "Epoch 001: train=2.5584, val=2.3731, ppl=10.73" (bare split
# names, read only with a training and a held-out value both), "Loss: Train 0.32 Val 0.43", "loss (val): 0.43". The
# values must be written as decimals (or nan/inf): "train: 50000, val: 10000" are the splits' sizes.
_SPLIT = r"(train(?:ing)?|val(?:id(?:ation)?)?|eval|test)"
_DECIMAL = r"[-+]?(?:\d*\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)|[nN][aA][nN]|[iI][nN][fF]"
_BARE_SPLIT = re.compile(r"(?<![\w./(])" + _SPLIT + r"\s*[:=]\s*(" + _DECIMAL + r")" + _END, re.IGNORECASE)
_LOSS_THEN_SPLITS = re.compile(
    r"\bloss\s*[:=]?\s*" + _SPLIT + r"\s*[:=]?\s*(" + _DECIMAL + r")" + _END
    + r"(?:\s*[,;|/]?\s*" + _SPLIT + r"\s*[:=]?\s*(" + _DECIMAL + r")" + _END + r")?",
    re.IGNORECASE,
)
_LOSS_OF_SPLIT = re.compile(r"\bloss\s*\(\s*" + _SPLIT + r"\s*\)\s*[:=]?\s*(" + _DECIMAL + r")" + _END, re.IGNORECASE)
_SPLIT_LOSS = {"train": "loss", "training": "loss", "val": "val/loss", "valid": "val/loss", "validation": "val/loss",
               "eval": "val/loss", "test": "test/loss"}


def _split_losses(line: str) -> dict[str, float]:
    """The losses a line prints per split under the split's name alone (see ``_BARE_SPLIT``), first value per split.

    >>> _split_losses("Epoch 001: train=2.5584, val=2.3731, ppl=10.73 [BEST]")
    {'loss': 2.5584, 'val/loss': 2.3731}
    >>> _split_losses("Epoch 3 | Loss: Train 0.32 Val 0.43 | Acc: Train 0.88 Val 0.85")
    {'loss': 0.32, 'val/loss': 0.43}
    >>> _split_losses("Epoch [3/10] Loss (train): 0.32 Loss (val): 0.43"), _split_losses("epoch 1 train: 50000, val: 10000")
    ({'loss': 0.32, 'val/loss': 0.43}, {})
    """
    out: dict[str, float] = {}
    low = line.lower()
    if "loss" in low:
        for m in _LOSS_THEN_SPLITS.finditer(line):
            for split, raw in ((m.group(1), m.group(2)), (m.group(3), m.group(4))):
                if split is not None:
                    out.setdefault(_SPLIT_LOSS[split.lower()], _value(raw))
        for m in _LOSS_OF_SPLIT.finditer(line):
            out.setdefault(_SPLIT_LOSS[m.group(1).lower()], _value(m.group(2)))
        if out:
            return out
    bare: dict[str, float] = {}
    for m in _BARE_SPLIT.finditer(line):
        bare.setdefault(_SPLIT_LOSS[m.group(1).lower()], _value(m.group(2)))
    return bare if "loss" in bare and len(bare) > 1 else {}


_LOSS_AT_STEP = re.compile(r"\b(?:([A-Za-z]+) )?loss at step\s+(\d+)\s*:\s*(" + _NUM + r")" + _END, re.IGNORECASE)


# PyTorch's official NLP tutorials print their running loss with the iteration, its share of the total and the time
# taken: names classification "5000 5% (0m 12s) 2.4177 Coelho / Portuguese ✓", names generation "0m 20s (5000 5%)
# 2.9023", seq2seq translation "0m 26s (- 6m 35s) (5000 6%) 2.8417" (time so far, time left).
_TUTORIAL_TIMED = re.compile(
    r"^\s*(?:(\d+) \d+(?:\.\d+)?% \((?:\d+m )?\d+s\) (" + _NUM + r")(?=\s|$)|"
    r"(?:\d+m )?\d+s (?:\(- ?-?(?:\d+m )?\d+s\) )?\((\d+) \d+(?:\.\d+)?%\) (" + _NUM + r")\s*$)"
)


def _tutorial_timed(x: MetricExtractor, line: str) -> _Parsed | None:
    """PyTorch's NLP tutorials' progress lines (``_TUTORIAL_TIMED``): the loss at the iteration.

    >>> _tutorial_timed(MetricExtractor(), "35000 35% (1m 4s) nan Nam / Russian ✗ (Korean)").step
    35000
    >>> _tutorial_timed(MetricExtractor(), "0m 26s (- 6m 35s) (5000 6%) 2.8417").metrics
    {'loss': 2.8417}
    """
    m = _TUTORIAL_TIMED.match(line)
    if m is None:
        return None
    step, value = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    return _Parsed(int(step), {"loss": _value(value)})


def _tutorial_loops(x: MetricExtractor, line: str) -> _Parsed | None:
    """Loops that tutorials and model zoos print, each one fixed shape (see the module docstring), also behind
    a launcher's prefix. Steps that count within an epoch continue across epochs (:func:`_continued_step`)."""
    parsed = _tutorial_shapes(x, line)
    if parsed is None:
        m = LAUNCHER_PREFIX.match(line)
        if m is not None:
            parsed = _tutorial_shapes(x, line[m.end() :])
    return parsed


def _tutorial_shapes(x: MetricExtractor, line: str) -> _Parsed | None:
    head = line.lstrip()[:1]
    m = _TUTORIAL_PAIR.match(line) if head == "[" else None
    if m is not None:  # PyTorch's CIFAR-10 tutorial: [epoch, batch] loss: v
        metrics = _pairs(line[m.end() :], _phase(line), keep=_metric_like)
        if not metrics:
            return None
        if m.group(2) is None:
            return _Parsed(int(m.group(1)), metrics)
        return _Parsed(_continued_step(x, int(m.group(1)), int(m.group(2))), metrics)
    m = _GAN_STEP.search(line) if "[Batch" in line else None
    if m is not None:  # PyTorch-GAN: [Epoch e/E] [Batch b/B] [D loss: v] [G loss: v]
        metrics: dict[str, float] = {}
        for key, raw in _BRACKET_FIELD.findall(line[m.end() :]):
            named = metric_name(key)
            if named is not None:
                metrics.setdefault(named[0], _value(raw) * named[1])
        if not metrics:
            return None
        return _Parsed(x._epoch_step(int(m.group(1)), int(m.group(3)), int(m.group(4)), 0), metrics)  # range(n_epochs)
    m = _VISUALIZER.match(line) if head == "(" else None
    if m is not None:  # CycleGAN/pix2pix: (epoch: e, iters: i, time: t, data: d) G_GAN: v D_real: v ...
        metrics = _pairs(line[m.end() :])
        return _Parsed(_continued_step(x, int(m.group(1)), int(m.group(2))), metrics) if metrics else None
    m = _DARKNET.match(line) if " rate," in line else None
    if m is not None:
        return _Parsed(int(m.group(1)), {"loss": _value(m.group(2)), "avg_loss": _value(m.group(3)),
                                         "lr": _value(m.group(4)), "step_time": _value(m.group(5))})
    m = _LOSS_AT_STEP.search(line) if "at step" in line else None
    if m is not None:  # TensorFlow tutorials: "Average loss at step 2000: 4.37", "Minibatch loss at step 500: 1.2"
        first = (m.group(1) or "").lower()
        name = metric_name(f"{first} loss")[0] if first in _PHASE_WORDS else "loss"
        return _Parsed(int(m.group(2)), {name: _value(m.group(3))})
    return None


def _word_language_model(x: MetricExtractor, line: str) -> _Parsed | None:
    """PyTorch's examples (word_language_model and the tutorials copied from it): ``| epoch 1 | 200/2928 batches |
    lr 20.00 | ms/batch 45.00 | loss 7.63 | ppl 2055.20``, then ``| end of epoch 1 | time: 40.0s | valid loss 5.58 |
    valid ppl 265.80`` at the epoch's last step."""
    if "epoch" not in line or "|" not in line:
        return None
    m = _WLM.match(line)
    if m is not None:
        epoch = int(m.group(1))
        base = x._base_of(epoch)
        metrics = _segments(line[m.end() :])
        metrics.pop("ms/batch", None)
        return _Parsed(x._epoch_step(epoch, int(m.group(2)), int(m.group(3)), base), metrics) if metrics else None
    if _WLM_END.match(line) is not None:
        metrics = {k: v for k, v in _segments(line).items() if k.startswith("val/")}
        return _Parsed(x._current_step(), metrics) if metrics else None
    return None


# Torch7's char-rnn and the models copied from it (lstm-char-cnn): "100/21150 (epoch 0.236), train_loss = 1.98,
# grad/param norm = 8.9e-02, time/batch = 0.14s": the iteration of the run's total, then its values
_CHAR_RNN = re.compile(r"\s*(\d+)/\d+ \(epoch " + _NUM + r"\),\s*(?=[A-Za-z])")


def _char_rnn(x: MetricExtractor, line: str) -> _Parsed | None:
    m = _CHAR_RNN.match(line)
    if m is None:
        return None
    metrics = _pairs(line[m.end() :], keep=_metric_like)
    return _Parsed(int(m.group(1)), metrics) if metrics else None


def _step_in_epoch(x: MetricExtractor, line: str, step: int) -> int:
    """The run's step for a line that names its epoch and a step: ``step`` unless that counts within the epoch.

    - A log whose step runs on when the epoch changes ("epoch 2 step 1000" after "epoch 1 step 900", or
      PaddleSeg's "epoch: 2, iter: 1100/80000") gives the run's step: it is kept as it is from then on.
    - "Epoch [3/10], Step [100/600]": (3 - 1) * 600 + 100. A step given as a fraction of the epoch's total:
      the epoch counts from the first epoch the log names if that is 0, else from 1, whether it is a fraction
      ("[3/10]", "3/10") or bare ("epoch 3", "Epoch[3]"): ``range(epochs)`` loops print 0 first, Ignite and
      ``epoch + 1`` prints start at 1 (before 2026-12-06 a fraction always counted from 1, and a log of
      "Epoch [0/50]" ... "Epoch [1/50]" put both epochs' steps in one place).
    - "epoch 2 step 100" after "epoch 1 step 900": the step went back as the epoch moved on, so steps count
      within an epoch; each epoch's steps then follow the previous epoch's largest one (900 + 1 + 100), an
      estimate of the run's step that keeps every epoch's values instead of dropping them as going back.
    """
    e = _EPOCH_OF.search(line)
    m = _STEP_OF.search(line)
    total = int(m.group(2)) if m is not None and int(m.group(1)) == step else None
    if e is None:  # the epoch an "Epoch 3/10" line named before, if any
        return step if x.epoch is None else _continued_step(x, x.epoch, step, total)
    return _continued_step(x, int(e.group(1)), step, total)


def _continued_step(x: MetricExtractor, epoch: int, step: int, total: int | None = None) -> int:
    """:func:`_step_in_epoch` given the epoch, the step and, for a step written as a fraction, the epoch's ``total``."""
    base = x._base_of(epoch)
    new_epoch = x.step_epoch is not None and epoch > x.step_epoch
    previous_max = x.epoch_max
    # A step past the previous epoch's largest ran on across the epoch change: the run's own count (PaddleSeg's
    # "iter: 1100/80000"). Not once a fraction has reached its total (4816 of 5011): it counts within its epoch,
    # even where lines went missing and the next epoch's first step seen is past the last one's.
    if total is not None and step >= 0.9 * total:
        x.fraction_filled = True
    if new_epoch and step > previous_max and not x.fraction_filled:
        x.steps_run_on = True
    if x.step_epoch is None or epoch < x.step_epoch or new_epoch:
        x.step_epoch, x.epoch_max = epoch, step
    else:
        x.epoch_max = max(x.epoch_max, step)
    if x.steps_run_on:
        return step
    if total is not None:
        return x._epoch_step(epoch, step, total, base)
    if new_epoch and step + x.step_offset <= x.last_step:  # the count started again with the epoch
        x.step_offset += previous_max + 1
    return step + x.step_offset


def _spaced_step(x: MetricExtractor, line: str) -> _Parsed | None:
    """``epoch 3, step 1200, loss 0.4521, lr 0.001``, ``Epoch 3 | Step 1200 | Loss 0.45``: a step word, then
    ``key value`` pairs without ``:`` (:func:`_spaced_pairs`)."""
    low = line.lower()
    if "step" not in low and "iter" not in low and "epoch" not in low:
        return None
    anchors = list(_STEP_WORD.finditer(line))
    rest = _STEP_WORD.sub(" | ", _EPOCH_OF.sub(" | ", line))
    metrics = _spaced_pairs(rest, _phase(line), bare_phase_loss=True)
    metrics.pop("epoch", None)
    if not metrics:
        return None
    if not anchors:  # "Epoch 3: train loss 0.45, val loss 0.50": a per-epoch log, the epoch is the step
        b = _EPOCH_BATCH.search(line)
        if b is not None:  # "Epoch 1 | Batch 100/972 | ... | Train Loss 0.72": the batch counts within the epoch
            return _Parsed(_step_in_epoch(x, line, int(b.group(1))), metrics)
        e = _EPOCH_OF.search(line)
        return None if e is None or e.group(2) else _Parsed(int(e.group(1)), metrics)
    rank = {"global step": 0, "global_step": 0, "step": 1, "iteration": 2, "iter": 2}
    m = min(anchors, key=lambda a: rank[a.group(1).lower()])
    return _Parsed(_step_in_epoch(x, line, int(m.group(2))), metrics)


def _leading_step(x: MetricExtractor, line: str) -> _Parsed | None:
    """``Step 100 | loss 2.34 | lr 3e-4``, ``iter 100 step 25: loss 2.34, iter time: 120ms``: fields without ``:``."""
    m = _LEADING_STEP.match(line)
    if m is None:
        return None
    step = int(m.group(1))
    out: dict[str, float] = {}
    for seg in re.split(r"\s*[|,]\s*", m.group(2)):
        kv = _SEGMENT.fullmatch(seg.strip())
        if kv is None or not _metric_like(kv.group(1)):
            continue
        named = metric_name(kv.group(1))
        if named is not None:
            out.setdefault(named[0], _value(kv.group(2)) * named[1])
    return _Parsed(_step_in_epoch(x, line, step), out) if out else None


# "Train 12, loss: 1.98, train acc: 0.74" / "Test 12, loss: ..." (DGCNN and the point-cloud repositories after it): a
# phase word and the epoch, then the epoch's metrics
_PHASE_EPOCH = re.compile(
    r"^\W*(train(?:ing)?|test|val(?:id(?:ation)?)?|eval(?:uation)?)\s+(?:epoch\s+)?(\d+)\s*,\s+(?=[A-Za-z])", re.IGNORECASE
)
# The CycleGAN/pix2pix repository's "End of epoch 3 / 200 \t Time Taken: 95 sec": the lines after it report that epoch
_END_OF_EPOCH = re.compile(r"^\W*End of epoch\s+(\d+)\s*/\s*(\d+)\b")
_PHASE_EPOCH_FIRST = frozenset("TtVvEe")  # the first letter of every phase word _PHASE_EPOCH starts with
_LEADING_PUNCTUATION = " \t" + "".join(c for c in string.punctuation if c != "_")  # what its "^\W*" skips


def _phase_epoch(x: MetricExtractor, line: str) -> _Parsed | None:
    if line.lstrip(_LEADING_PUNCTUATION)[:1] not in _PHASE_EPOCH_FIRST:  # most lines: a strip, not a regex
        return None
    m = _PHASE_EPOCH.match(line)
    if m is None:
        return None
    metrics = _pairs(line[m.end() :], _HEADER_PHASE[m.group(1).lower()], keep=_metric_like)
    return _Parsed(int(m.group(2)), metrics) if metrics else None


# A held-out evaluation's summary without a step, after the training lines: Flair's "DEV  : loss 10.39 - f-score 0.63
# - acc 0.46" and "TEST : loss ...", "Validation loss: 0.43", "val: loss=0.43, acc=0.85", "整体测试集上的Loss: 6.46". The phase word opens the
# message (after a timestamp and a level); a letter must follow, so "Validation: 100%|###" bars are not read.
_HELDOUT_LEAD = re.compile(
    r"^\W*(?:\d{4}-\d\d-\d\d[ T][\d:.,]+\W*)?(?:(?:INFO|DEBUG|WARNING)\s*(?:[-:|\]]\s*)+)?"
    r"(?:(dev|valid(?:ation)?|val|eval(?:uation)?|test)(?:\s+set)?\s*(?:[:|-]\s*|\s+(?=loss\b))"
    # the same in Chinese, the key in Latin letters: "整体测试集上的Loss: 6.46" (test), "验证集 loss: 0.5" (validation)
    r"|[\u4e00-\u9fff]{0,8}?(测试|验证)[\u4e00-\u9fff]{0,8}\s*)(?=[A-Za-z])",
    re.IGNORECASE,
)


def _heldout_summary(x: MetricExtractor, line: str) -> _Parsed | None:
    """A step-less evaluation line with a loss (``_HELDOUT_LEAD``) reports at the run's current step, once the log
    has steps."""
    # A tqdm bar just before, past the last step, gives the position (a loop printing "Validation loss: 5.87"
    # under its training bar); an evaluation bar's own count (10/10 after step 135) is not one.
    bar = x.pending is None and x.bar_step is not None and x.bar_lines <= 3 and x.bar_step > x.last_step
    if (x.last_step < 0 or x.counting) and x.pending is None and not bar:
        return None  # no step to report at (a log numbering its lines: _pairs_only counts this one)
    m = _HELDOUT_LEAD.match(line)
    if m is None:
        return None
    word = (m.group(1) or m.group(2)).lower()
    phase = "test/" if word in ("test", "测试") else "val/"
    rest = line[m.end() :]
    metrics = _pairs(rest, phase, keep=_metric_like) or _spaced_pairs(rest, phase)
    if not metrics:
        return None
    return _Parsed(x.bar_step if bar else x._current_step(), metrics)


_LOSS_PART = re.compile(r"([A-Za-z]+)[ _]loss\s*:", re.IGNORECASE)
_LEAD_TAG = re.compile(r"\[[^\[\]]{1,40}\]:?\s*")
_TAG_WORD = re.compile(r"\[\s*([A-Za-z]+)")


# "1 epoch, loss: 0.0148,  loss_test: 0.0153, time: 0:11:54" (the count before the word)
_COUNT_EPOCH = re.compile(r"\s*(\d+)(?:st|nd|rd|th)? epoch\b[,:]?\s+(?=[A-Za-z])", re.IGNORECASE)


def _count_then_epoch(x: MetricExtractor, line: str) -> _Parsed | None:
    text = _message(line)
    m = _COUNT_EPOCH.match(text)
    if m is None:
        return None
    rest = text[m.end() :]
    metrics = _pairs(rest, _phase(rest), keep=_metric_like)
    return _Parsed(int(m.group(1)), metrics) if metrics else None


def _pairs_only(x: MetricExtractor, line: str) -> _Parsed | None:
    """A line of nothing but ``key: value`` pairs, one of them a loss, in a log that gives no steps (``loss:
    2.3089 val_loss: 2.3017`` printed once per step of a notebook's loop): its events numbered in order. Once
    the log names a step, such lines are left alone (a count would collide with the steps it names)."""
    if (x.last_step >= 0 and not x.counting) or x.header_step is not None:
        return None  # (a line of counters names the steps: the values under it are at its step, _tagged_pairs)
    line = _message(line)  # "2018-03-23 15:29:33,355:INFO: train loss:1.10886": the record's own text
    phase = _phase(line)
    if line[:1] == "[" and (tag := _LEAD_TAG.match(line)) is not None:
        # "[TRAIN(0,0,33)]: i: 0, train_loss: 1.386": a tag before the pairs, maybe naming their phase ("[Dev]")
        word = _TAG_WORD.match(tag.group(0))
        phase = _HEADER_PHASE.get(word.group(1).lower(), phase) if word is not None else phase
        line = line[tag.end() :]
    if "loss" not in line.lower() or _PAIR_LINE.fullmatch(line) is None:
        return None
    if len({w.lower() for w in _LOSS_PART.findall(line)} - _PHASE_WORDS) > 1:
        return None  # "classify loss: 0.92, angle loss: 0.65, iou loss: 5.87": a loss's parts, not the loss
    metrics = _pairs(line, phase, keep=_metric_like)
    if not any("loss" in name for name in metrics):
        return None
    x.counting = True
    return _Parsed(None, metrics)


def _message(line: str) -> str:
    """A log record's message: what follows a logging module's level word ("2026-05-22 02:57:12,678 - INFO - ",
    "[2024-01-01 10:00:00] INFO: "), where the level comes within the line's first 80 characters; else the line.

    >>> _message("2026-05-22 02:56:39,224 - INFO - Epoch 1/100"), _message("Epoch 2 INFO: 3")
    ('Epoch 1/100', 'Epoch 2 INFO: 3')
    >>> _message("05/21/2026 16:19:08 - INFO - __main__ - train_loss: 0.5")
    'train_loss: 0.5'
    """
    if "INFO" not in line and "DEBUG" not in line and "WARN" not in line:
        return line
    level = _MESSAGE_START.search(line, 0, 120)
    if level is None or level.start() > 80 or (level.start() and line[0] != "[" and not line[0].isdigit()):
        return line  # the level word inside a message, not after a time stamp
    name = level.group(1)
    if name is not None and name.lower() in _HEADER_PHASE:  # "INFO - Validation - Loss: 1.34": the message's phase
        return line[level.start(1) :]
    return line[level.end() :]


# A logging module's level word, its separators and a logger name written between " - " ("INFO - __main__ - "):
# not _LEVEL_PREFIX, whose logger name may end in ":" and would take "train_loss: " for one
# (loguru's default writes "name:function:line - " after the level: "| INFO     | train:main:86 - epoch=1")
_MESSAGE_START = re.compile(
    r"\b(?:INFO|DEBUG|WARNING|WARN|NOTICE)\b(?:\s*[-:|\]]\s*)+(?:([\w.<>]+)(?::[\w.<>]+)*\s+-\s+)?"
)


def _epoch_context(x: MetricExtractor, line: str) -> _Parsed | None:
    if x.epoch is None or x.epoch_lines > 8 or (":" not in line and "=" not in line):
        return None
    text = _message(line)  # the record's own text (the values under an "Epoch 3/30" record of a logging module)
    if _PAIR_LINE.fullmatch(text) is not None:
        sep = ":"
    elif "=" in text and _EQ_PAIR_LINE.fullmatch(text) is not None:
        sep = "="
    else:
        return None
    phase = _phase(line)
    line = text
    out = {}
    for part in _PAIR_GAP.split(line.strip()):
        kv = re.fullmatch(r"([A-Za-z][\w ./\-]*?)" + sep + r"\s*(" + _NUM + r")(s?)", part.strip())
        if kv is None:
            continue
        key, raw, seconds = kv.groups()
        low = " ".join(key.lower().split())
        if seconds:
            if low != "time taken":
                continue
            out["epoch_time"] = _value(raw)
            continue
        words = low.split()
        if words and words[0] in ("train", "training") and len(words) > 1:
            low = " ".join(words[1:])
        if not _metric_like(low):
            continue
        named = metric_name(low, phase)
        if named is not None:
            out.setdefault(named[0], _value(raw) * named[1])
    return _Parsed(x.epoch, out) if out else None


# A line of counters alone, "epoch: 0, iteration: 100, step: 100", printed before the lines of values at that step.
_COUNTER_PAIR = r"(?:epoch|iteration|iter|step|global_step|batch)\s*[:=]\s*\d+"
# Written so that no two ways of matching compete (a separator is one of the two alternatives, never both): no
# backtracking blow-up on a long line of counters that fails at its end.
_COUNTER_LINE = re.compile(
    r"\W*" + _COUNTER_PAIR + r"(?:(?:\s*[,;|]\s*|\s+)" + _COUNTER_PAIR + r")*\s*", re.IGNORECASE
)
_COUNTER = re.compile(r"(epoch|iteration|iter|step|global_step|batch)\s*[:=]\s*(\d+)", re.IGNORECASE)
# A line of values tagged with its phase: "[Train] loss: 0.68, score: 0.81", "[Dev] loss: 0.55, score: 0.87".
_TAGGED = re.compile(r"\W*\[(train|training|dev|valid|validation|val|eval|test)\]\s*(.*)", re.IGNORECASE)


def _counter_line(x: MetricExtractor, line: str) -> _Parsed | None:
    """Remember the step of a line of counters alone (no event: the values follow, :func:`_tagged_pairs`)."""
    if "tep" not in line and "ter" not in line and "atch" not in line:
        return None  # no step, iteration or batch: an epoch alone names no step
    if _COUNTER_LINE.fullmatch(line) is None:
        return None
    counters = {k.lower(): int(v) for k, v in _COUNTER.findall(line)}
    step = counters.get("global_step", counters.get("step", counters.get("iteration", counters.get("iter"))))
    if step is None and "batch" in counters and "epoch" in counters:
        step = _step_in_epoch(x, line, counters["batch"])  # "Epoch: 1<TAB>Batch: 50": the batch counts within the epoch
    if step is not None:
        x.header_step, x.header_lines = step, 0
    return None


def _tagged_pairs(x: MetricExtractor, line: str) -> _Parsed | None:
    """``[Train] loss: 0.68, score: 0.81`` / ``[Dev] loss: 0.55`` within 3 lines of a line of counters: at its step;
    so is a line of pairs alone without a tag (``iteration: 5`` / ``learning rate: 0.1`` / ``loss = 0.113``)."""
    if x.header_step is None or x.header_lines > 3:
        return None
    m = _TAGGED.match(line)
    if m is not None:
        metrics = _pairs(m.group(2), _HEADER_PHASE[m.group(1).lower()], keep=_metric_like)
    else:
        text = _message(line)
        if _PAIR_LINE.fullmatch(text) is None and _EQ_PAIR_LINE.fullmatch(text) is None:
            return None
        metrics = _pairs(text, _phase(text), keep=_metric_like)
    return _Parsed(x.header_step, metrics) if metrics else None


# A token of a line of nothing but "key value" pairs (print("Train loss", loss): "Train loss 0.347656").
_SPACED_TOKEN_SPLIT = re.compile(r"[\s,;|]+")
_WORD = re.compile(r"[A-Za-z][\w./\-]*")
_NUMBER = re.compile(_NUM)


def _spaced_line(line: str) -> bool:
    """Whether ``line`` is words and numbers alone, each number after a word, ending with a number.

    Checked token by token: a regex of optional words and spaces backtracks without end on a long line that fails.

    >>> _spaced_line("Train loss 0.347656"), _spaced_line("loss 1 acc 0.5"), _spaced_line("took 3 s"), _spaced_line("1 2")
    (True, True, False, False)
    """
    tokens = [t for t in _SPACED_TOKEN_SPLIT.split(line) if t]
    if not tokens or _NUMBER.fullmatch(tokens[-1]) is None:
        return False
    after_word = False
    for token in tokens:
        if after_word and _NUMBER.fullmatch(token) is not None:
            after_word = False
        elif _WORD.fullmatch(token) is not None:
            after_word = True
        else:
            return False
    return True
_OWN_COUNTER = re.compile(r"\s*(?:epoch|step|iter(?:ation)?|batch|it)\b", re.IGNORECASE)


def _epoch_spaced(x: MetricExtractor, line: str) -> _Parsed | None:
    """``Train loss 0.347656`` under an ``Epoch 3:`` line: :func:`_epoch_context` for pairs written without ``:``."""
    if x.epoch is None or x.epoch_lines > 8 or ":" in line or not _spaced_line(line):
        return None
    if _OWN_COUNTER.match(line):
        return None  # "Epoch 5 tr_loss 0.29": the line names its own epoch or step (other parsers read it)
    out = _spaced_pairs(line.strip(), _phase(line))
    return _Parsed(x.epoch, out) if out else None


def _marker(x: MetricExtractor, line: str) -> _Parsed | None:
    """A line without a digit: a table's header or rule, a block's title; it may close a table with its values."""
    s = line.strip()
    if not s:
        return None
    if x.table is not None and x.table[0] == "@steps":
        if x.table[1] == "|" and _TABLE_RULE.fullmatch(s):
            return None  # the rule under a drawn table's header
        x.table = None  # a step table ends at a line of words (a new header opens another below)
    head = s[0]
    if head == "-" and _SB3_RULE.fullmatch(s):
        return _sb3_rule(x)
    if head == "|" and x.rl_table is not None:
        return _sb3_row(x, s)
    x.metrics_block = None  # a block of "key = value" rows ends at the first line of another kind
    if head == "*":
        m = _HF_BLOCK.search(s)
        if m is not None:
            x.metrics_block = m.group(1).lower()
    elif head == "e" and s.startswith("epoch "):
        _fastai(x, line)  # a results table's header: no digits, but it names the columns
    if head in "SEe|" and _NOTEBOOK_HEADER.match(s):
        _notebook_header(x, s)
        return None
    if head == "E" and s.startswith("Epoch "):
        words = s.split()
        if len(words) > 3 and words[1].lower() == "gpu_mem":
            # YOLOv8+ counts epochs from 1; YOLOv5 from 0, with a gpu_mem column (older) or an obj_loss one (v7.0)
            one_based = words[1] == "GPU_mem" and "obj_loss" not in words
            x.yolo = [1 if one_based else 0, *words[1:]]
        elif len(words) > 2 and all(w.endswith("_loss") or w == "lr" for w in words[1:]):
            x.yolo = [0, *words[1:]]  # YOLOv6's "Epoch  lr  iou_loss  dfl_loss  cls_loss", epochs from 0
    if head in "sSiIeEgG" and (x.table is None or x.table[0] == "@steps") and _STEP_TABLE_FIRST.match(s):
        _step_table_header(x, s)
    return None


_TABLE_RULE = re.compile(r"[-=+|: ]+")
_STEP_TABLE_FIRST = re.compile(r"(?:step|steps|iter|iteration|global_step|epoch)[\t, ]", re.IGNORECASE)
_COLUMN = re.compile(r"[A-Za-z][\w./\-]*")


def _step_table_header(x: MetricExtractor, header: str) -> None:
    """A custom script's table of values per step: a header ``step\tloss`` (``iter  loss  lr``, ``epoch,train_loss,val_loss``)
    whose first column is the step (or the epoch) and every other column a metric-like name, then a row of numbers
    per step (:func:`_step_table_row`). A column that is no metric (``time``, ``step`` beside ``epoch``) leaves
    the table unread: its rows could be anything. Chainer's and pytorch-pfn-extras' ``PrintReport`` is read too
    (``epoch  iteration  main/loss  validation/main/loss  main/accuracy  elapsed_time``): its ``iteration``
    beside ``epoch`` is the step, its ``elapsed_time`` is skipped and its reporter names are runwatch's
    (:func:`_report_column`).

    Stored in ``x.table`` as ``["@steps", separator, metric per column after the first...]`` (``@step``: the
    column that holds the step, ``@skip``: a column not read).

    >>> x = MetricExtractor()
    >>> _step_table_header(x, "epoch       main/loss   validation/main/loss  main/accuracy  elapsed_time")
    >>> x.table[2:]
    ['loss', 'val/loss', 'acc', '@skip']
    """
    sep = "|" if "|" in header else "\t" if "\t" in header else "," if "," in header else " "
    cells = _table_cells(header, sep)
    report = any("/" in c for c in cells) or cells[-1] == "elapsed_time"  # a PrintReport's header
    names = []
    for j, cell in enumerate(cells[1:]):
        if (report and cell == "elapsed_time") or (sep == "|" and cell.lower() in _TIME_COLUMNS):
            names.append("@skip")  # a drawn table's time column ("19.6s  <- best"): not read, no reason to stop
            continue
        if report and j == 0 and cell == "iteration" and cells[0] == "epoch":
            names.append("@step")
            continue
        named = None
        if _COLUMN.fullmatch(cell.replace(" ", "_")):  # a drawn table's cell may hold words: "Train Loss"
            cell = _CAMEL.sub(" ", cell)  # "TrainLoss", "ValAcc": two words
            named = metric_name(cell) if _metric_like(cell) else None
        if report and named is not None and "/" in cell:
            named = _report_column(cell)
        if named is None or named[1] != 1.0 or named[0] in names:
            return
        names.append(named[0])
    if any(not n.startswith("@") for n in names):
        x.table = ["@steps", sep, *names]


def _report_column(cell: str) -> tuple[str, float] | None:
    """A Chainer / pytorch-pfn-extras reporter name as runwatch's: ``main/loss`` is ``loss``, ``validation/main/loss``
    ``val/loss``, ``train/loss`` ``loss``, ``val/accuracy`` ``val/acc`` (``main`` is the reporter of the model trained;
    the split in front is read as :func:`metric_name` reads ``validation_loss``).

    >>> _report_column("validation/main/accuracy"), _report_column("train/loss"), _report_column("main/loss")
    (('val/acc', 1.0), ('loss', 1.0), ('loss', 1.0))
    """
    parts = [p for p in cell.lower().split("/") if p != "main"]
    return metric_name("_".join(parts)) if parts else None


def _table_cells(line: str, sep: str) -> list[str]:
    """A table line's cells: split at ``sep`` (any run of spaces for ``" "``), a drawn table's outer ``|`` dropped."""
    if sep == " ":
        return line.split()
    if sep == "|":
        line = line.strip().strip("|")
    return [c.strip() for c in line.split(sep)]


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_TIME_COLUMNS = frozenset({"time", "elapsed", "elapsed_time", "duration", "dur", "eta", "epoch_time"})
_PERCENT_CELL = re.compile(r"[-+]?\d+(?:\.\d+)?\s?%")


def _step_table_row(x: MetricExtractor, line: str) -> _Parsed | None:
    """A row of a step table (:func:`_step_table_header`): ``10\t8.460716``; a row of another shape ends the table.

    In a table drawn with ``|`` a percentage (``50.80%``) is not read, and a column it skips may hold anything.
    """
    sep, names = x.table[1], x.table[2:]
    cells = _table_cells(line, sep)
    if len(cells) != len(names) + 1 or not cells[0].isdigit():
        x.table = None
        return None
    step = int(cells[0])
    out = {}
    for name, cell in zip(names, cells[1:]):
        if name == "@skip" or not cell:
            continue
        if name == "@step":
            if not cell.isdigit():
                x.table = None
                return None
            step = int(cell)
            continue
        if not _NUM_CELL.fullmatch(cell):
            if sep == "|" and _PERCENT_CELL.fullmatch(cell):
                continue
            x.table = None
            return None
        out[name] = _value(cell)
    return _Parsed(step, out) if out else None


_NUM_CELL = re.compile(_NUM)


def _sb3_rule(x: MetricExtractor) -> _Parsed | None:
    """Stable-Baselines3's table rule: opens a table, or closes one and reports its rows at its total timesteps.

    A rule that finds an empty table open (a lost closing rule, or a table with no rows) opens it afresh.
    """
    table = x.rl_table
    if table is None or not table["values"]:
        x.rl_table = {"section": "", "values": {}}
        return None
    x.rl_table = None
    metrics: dict[str, float] = {}
    for key, value in table["values"].items():
        section, _, field = key.rpartition("/")
        if key in _SB3_COUNTERS:
            continue
        if section == "train":
            named = metric_name(field)
            if named is not None and named[0] in ("loss", "lr", "grad_norm"):
                metrics[named[0]] = value * named[1]
                continue
        metrics[_sanitize(key)] = value
    steps = table["values"].get("time/total_timesteps")
    step = int(steps) if steps is not None and math.isfinite(steps) else None
    return _Parsed(step, metrics, counter=step is None)


_SB3_COUNTERS = {"time/iterations", "time/time_elapsed", "time/total_timesteps", "time/episodes", "train/n_updates"}


def _sb3_row(x: MetricExtractor, line: str) -> _Parsed | None:
    """A row of an open Stable-Baselines3 table: ``| train/ |  |`` names a section, ``|  loss | 6.06 |`` a value."""
    table = x.rl_table
    if table is None or line.lstrip()[:1] != "|":
        return None
    m = _SB3_ROW.fullmatch(line.strip())
    if m is None or not m.group(1)[0].isalpha():
        return None
    key, cell = m.group(1), m.group(2)
    if not cell and key.endswith("/"):
        table["section"] = key.rstrip("/")
    elif not table["section"]:
        return None  # every value of an SB3 table sits in a section: this is some other table
    elif re.fullmatch(_NUM, cell) and len(table["values"]) < 256:
        table["values"][f"{table['section']}/{key}"] = _value(cell)
    return _Parsed(None, {})  # a row of the table: no other shape reads it


_HF_BLOCK_SKIP = ("runtime", "per_second", "samples", "steps", "flos", "mem")


def _hf_metrics_row(x: MetricExtractor, line: str) -> _Parsed | None:
    """A row of the Trainer's ``***** eval metrics *****`` block: ``  eval_loss = 0.4123`` at the current step.

    The ``train`` block's values are averages over the whole run (read, reported nowhere).
    """
    split = x.metrics_block
    if split is None:
        return None
    m = _HF_ROW.fullmatch(line)
    if m is None:
        x.metrics_block = None
        return None
    key, cell = m.group(1).lower(), m.group(2)
    if split not in ("eval", "predict", "test") or not re.fullmatch(_NUM, cell) or key == "epoch":
        return _Parsed(None, {})
    if any(word in key for word in _HF_BLOCK_SKIP):
        return _Parsed(None, {})
    if split == "eval":
        named = metric_name(key if key.startswith("eval_") else "eval_" + key)
    else:
        named = metric_name(key.split("_", 1)[1] if "_" in key else key, "test/")
    if named is None:
        return _Parsed(None, {})
    return _Parsed(x._current_step(), {named[0]: _value(cell) * named[1]})


def _yolo(x: MetricExtractor, line: str) -> _Parsed | None:
    """Ultralytics YOLO's training table (after its ``Epoch GPU_mem box_loss ...`` header).

    A row ``1/100  2.61G  1.184  1.531  1.244  42  640: 100%|...| 8/8 [...]`` is a progress bar:
    the step is ``(epoch - base) * batches + batch``; each loss column is reported and ``loss`` is
    their sum (the objective YOLO minimises, per image). The validation bar's ``all`` row reports
    ``val/precision``, ``val/recall``, ``val/map50`` and ``val/map50_95`` at the training step.
    """
    if x.yolo is None:
        return None
    m = _YOLO_ROW.match(line)
    if m is None:
        if "mAP" in line and _YOLO_VAL_HEADER.search(line) is not None:
            return _Parsed(None, {})  # the validation bar's header: not a training step
        a = _YOLO_ALL.match(line)
        if a is None:
            return None
        names = ("val/precision", "val/recall", "val/map50", "val/map50_95")
        return _Parsed(x._current_step(), {k: _value(v) for k, v in zip(names, a.groups())})
    base, columns = x.yolo[0], x.yolo[1:]
    cells = m.group(3).split()
    if len(cells) != len(columns):
        return None
    out: dict[str, float] = {}
    total = None  # YOLOv5 before v4.0 printed the sum itself: "GIoU obj cls total"
    for column, cell in zip(columns, cells):
        low = column.lower()
        if not re.fullmatch(_NUM, cell):
            continue
        if low == "total":
            total = _value(cell)
        elif low.endswith("_loss") or low in ("box", "giou", "obj", "cls", "seg", "dfl"):
            out[low if low.endswith("_loss") else low + "_loss"] = _value(cell)
    if not out:
        return None
    out["loss"] = total if total is not None else round(sum(out.values()), 12)
    epoch = int(m.group(1))
    if epoch < base:  # a counter that prints epoch 0 counts from 0, whatever its header suggested
        x.yolo[0] = base = epoch
    step = x._epoch_step(epoch, int(m.group(4)), int(m.group(5)), base)
    x.bar_step, x.bar_lines = step, 0
    return _Parsed(step, out, bar=True)


def _composer(x: MetricExtractor, line: str) -> _Parsed | None:
    """MosaicML Composer's console: ``[epoch=1][batch=100/1000]:`` then a row per value, ``\\t Train loss/train/total: 2.34``.

    Training rows are reported at the progress line's step (``(epoch - 1) * batches + batch``, or the
    batch, token or sample count); ``[Eval batch=...]`` rows at the current training step, as ``val/``.
    """
    if line[:1] == "[":
        m = _COMPOSER_HEAD.match(line)
        rest = "" if m is None else line[m.end():].strip()
        if m is None or (rest not in ("", ":") and not rest.startswith("Eval on ")):
            x.composer_step = None
            return None
        epoch, unit, count, total = m.groups()
        if unit == "Eval batch":
            x.composer_step = -1
        elif epoch is not None and total is not None:
            x.composer_step = x._epoch_step(int(epoch), int(count), int(total), 1)
        else:
            x.composer_step = int(count)
        return _Parsed(None, {})
    if x.composer_step is None:
        return None
    m = _COMPOSER_ROW.fullmatch(line)
    if m is None:
        x.composer_step = None
        return None
    phase, key, raw = m.groups()
    return _header_row(x, x.composer_step, _composer_name(key, "val/" if phase == "Eval" else ""), raw)


def _header_row(x: MetricExtractor, header_step: int, name: str | None, raw: str) -> _Parsed:
    """One ``name`` row under a progress record (Composer's, OLMo's): at the record's step, or at the current
    training step for an evaluation record (``header_step`` -1); nothing for a name not read."""
    if name is None:
        return _Parsed(None, {})
    step = x._current_step() if header_step < 0 else header_step
    return _Parsed(step, {name: _value(raw)})


def _composer_name(key: str, phase: str) -> str | None:
    """``loss/train/total`` -> ``loss``, ``lr-DecoupledAdamW/group0`` -> ``lr``, ``metrics/eval/LanguageCrossEntropy`` -> ``val/loss``."""
    low = key.lower()
    if low.startswith(("time/", "trainer/", "throughput/")):
        return None
    if low.startswith("lr-"):
        return None if phase else "lr"
    parts = low.split("/")
    if parts[0] == "loss":
        return phase + ("loss" if parts[-1] == "total" else "loss/" + parts[-1])
    if parts[0] == "metrics" and len(parts) >= 3:
        field = parts[-1]
        if field == "languagecrossentropy":
            return phase + "loss"
        return phase + ("ppl" if field == "languageperplexity" else _sanitize(field))
    return phase + _sanitize(low)


def _olmo(x: MetricExtractor, line: str) -> _Parsed | None:
    """OLMo's console: a record ending in ``[step=12/15000,epoch=0]``, then ``    train/CrossEntropyLoss=2.998`` rows.

    Training rows are reported at the record's step; ``[eval_step=...]`` rows (``eval/<set>/CrossEntropyLoss``) at
    the current training step, the first evaluation set's loss as ``val/loss``, the others' as ``val/<set>/loss``.
    """
    if line.endswith(("]", "] ")):
        # the record's header ends the line: match from its last "[step=" / "[eval_step=" only (a long line of
        # such brackets would otherwise be tried from each of them)
        at = max(line.rfind("[step="), line.rfind("[eval_step="))
        m = _OLMO_HEAD.match(line, at) if at >= 0 else None
        if m is not None:
            x.olmo_step = int(m.group(2)) if m.group(1) == "step" else -1
            return _Parsed(None, {})
    if x.olmo_step is None:
        return None
    m = _OLMO_ROW.fullmatch(line)
    if m is None:
        x.olmo_step = None
        return None
    return _header_row(x, x.olmo_step, _olmo_name(x, m.group(1)), m.group(2).replace(",", ""))


def _olmo_name(x: MetricExtractor, key: str) -> str | None:
    """``train/CrossEntropyLoss`` -> ``loss``, ``optim/total_grad_norm`` -> ``grad_norm``,
    ``optim/learning_rate_group0`` -> ``lr``, ``eval/c4_en/CrossEntropyLoss`` -> ``val/loss`` (the first set)."""
    parts = key.split("/")
    head, field = parts[0].lower(), parts[-1].lower()
    if head in ("throughput", "system") or (head == "optim" and field not in ("total_grad_norm", "learning_rate_group0")):
        return None
    if head == "optim":
        return "grad_norm" if field == "total_grad_norm" else "lr"
    short = {"crossentropyloss": "loss", "perplexity": "ppl", "zloss": "loss/z"}.get(field, _sanitize(field))
    if head == "train":
        return short
    if head == "eval" and len(parts) >= 3:
        dataset = "/".join(parts[1:-1])
        if x.olmo_eval is None:
            x.olmo_eval = dataset
        return f"val/{short}" if dataset == x.olmo_eval else f"val/{_sanitize(dataset)}/{short}"
    return _sanitize(key)


_TF_EVAL = re.compile(r"\bSaving dict for global step (\d+): ")


def _tf_eval(x: MetricExtractor, line: str) -> _Parsed | None:
    """TensorFlow Estimator's evaluation result (``estimator.py`` ``_write_dict_to_summary``): ``Saving dict for global
    step 300: accuracy = 0.91, global_step = 300, loss = 0.25``: the evaluation's values, ``val/``, at that step."""
    m = _TF_EVAL.search(line)
    if m is None:
        return None
    metrics = _pairs(line[m.end() :], "val/")
    return _Parsed(int(m.group(1)), metrics) if metrics else _Parsed(None, {})


def _deepspeed(x: MetricExtractor, line: str) -> _Parsed | None:
    """DeepSpeed's engine report ``step=100, skipped=0, lr=[0.0001], mom=[...]``: the learning rate of the first group.

    The Trainer's dict printed right after it was logged at the same optimizer step (both count every step, skipped
    ones too): the report anchors it as a bar does.
    """
    if "skipped=" not in line:
        return None
    m = _DEEPSPEED.search(line)
    if m is None:
        return None
    step = int(m.group(1))
    x.bar_step, x.bar_lines = step, 0
    return _Parsed(step, {"lr": _value(m.group(2))})


_ESPNET = re.compile(r"\b(\d+)epoch:train:\d+-(\d+)batch:(?:(\d+)num_updates:)?\s")
_ESPNET_RESULTS = re.compile(r"\b\d+epoch results: .*?\[valid\] ")
_ESPNET_LR = re.compile(r"^(?:optim\d+_)?lr_?\d+$")


def _espnet_pairs(text: str, phase: str = "") -> dict[str, float]:
    """ESPnet's ``key=value`` fields; its learning rates (``optim0_lr0``, ``lr_0``) as ``lr`` (the first one)."""
    out: dict[str, float] = {}
    for key, raw in _KV.findall(text):
        if _ESPNET_LR.match(key):
            if not phase:
                out.setdefault("lr", _value(raw))
            continue
        if _metric_like(key):
            named = metric_name(key, phase)
            if named is not None:
                out.setdefault(named[0], _value(raw) * named[1])
    return out


def _espnet(x: MetricExtractor, line: str) -> _Parsed | None:
    """ESPnet2's trainer (and FunASR's): ``2epoch:train:11-20batch: iter_time=0.006, loss=50.87, acc=0.47,
    grad_norm=530.9, optim0_lr0=1.0e-05, ...`` every few batches, then ``2epoch results: [train] ..., [valid]
    loss=47.9, acc=0.52, ...`` at the epoch's end (its validation values are reported at the current step).

    The batch count starts again each epoch: the step is FunASR's ``num_updates`` when printed, else the batch
    count continued across epochs (:func:`_continued_step`).
    """
    m = _ESPNET.search(line)
    if m is not None:
        metrics = _espnet_pairs(line[m.end() :])
        if not metrics:
            return None
        step = int(m.group(3)) if m.group(3) else _continued_step(x, int(m.group(1)), int(m.group(2)))
        return _Parsed(step, metrics)
    m = _ESPNET_RESULTS.search(line)
    if m is None:
        return None
    metrics = _espnet_pairs(line[m.end() :].split("[", 1)[0], "val/")
    return _Parsed(x._current_step(), metrics) if metrics else None


def _request(x: MetricExtractor, line: str) -> _Parsed | None:
    """An inference server's per-request line with its latency (:mod:`runwatch.models.text.requests`), at the next step;
    per route (``latency_ms/<route>``) when the line names one: the first :data:`MAX_ROUTES` routes of a run each get
    their own series, later ones share ``latency_ms/other``."""
    found = request_latency(line)
    if found is None:
        return None
    route = request_route(line) if "latency_ms" in found else None
    if route is not None:
        if route not in x.routes and len(x.routes) < MAX_ROUTES:
            x.routes.append(route)
        found[f"latency_ms/{route if route in x.routes else 'other'}"] = found.pop("latency_ms")
    return _Parsed(None, found)


_PARSERS: tuple[Callable[[MetricExtractor, str], _Parsed | None], ...] = (
    _sb3_row, _hf_metrics_row, _composer, _olmo, _megatron, _fairseq, _hf_dict, _mm, _metriclogger, _acc_summary, _detectron2,
    _timm, _nanogpt,
    _onmt, _torch_example, _fastai, _torchtune, _yolo, _keras, _rich_bar, _bar, _tf_eval, _deepspeed, _espnet, _bracket_step,
    _bracket_fractions, _tutorial_loops, _tutorial_timed,
    _word_language_model, _char_rnn, _rounded_step, _anchored, _leading_step, _phase_epoch,
    _epoch_context, _epoch_spaced, _onmt_valid, _heldout_summary, _spaced_step, _count_then_epoch, _pairs_only, _request,
    _counter_line, _tagged_pairs,
    # shapes no parser above reads, last: a line of another shape does not pay for them
    _nanogpt_or_nnunet_log, _yolov3_losses, _swin,
)
# A substring each parser's lines must hold (each parser returns None first thing without it): tested in the loop,
# a line skips the call. "" = no such test.
_NEEDLES = {
    _counter_line: "", _tagged_pairs: "", _sb3_row: "|", _megatron: "|", _fairseq: "num_updates", _hf_dict: "{", _metriclogger: "Epoch:", _detectron2: "eta:", _timm: "%)]", _onmt: ";",
    _torchtune: "|Loss:", _yolov3_losses: "[Losses: ", _swin: "Train: [", _rich_bar: "Epoch", _deepspeed: "skipped=", _espnet: "epoch", _bracket_step: "=",
    _bracket_fractions: "[",
    _word_language_model: "epoch", _char_rnn: "(epoch ", _epoch_context: "", _epoch_spaced: "oss", _onmt_valid: "Validation ", _acc_summary: "Acc@1",
    _pairs_only: ":", _count_then_epoch: "poch", _tutorial_timed: "%", _heldout_summary: "oss",  # a held-out summary gives a loss / Loss
    _tf_eval: "Saving dict", _phase_epoch: ", ", _rounded_step: "step:",
}
_DISPATCH = tuple((_NEEDLES.get(p, ""), p) for p in _PARSERS)
