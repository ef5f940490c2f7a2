"""Metric extraction: one test per supported line shape (lines written here in each tool's format)."""

from __future__ import annotations

import json
import math

import pytest

from runwatch.models.text.extract import MetricExtractor, metric_name


def ext(lines):
    x = MetricExtractor()
    out = x.extract_many(lines) + x.flush()
    return out, x


def test_megatron_iteration_and_validation():
    out, _ = ext([
        (" iteration      400/    3000 | consumed samples:        51200 | elapsed time per iteration (ms): 12879.0 |"
        " learning rate: 6.300E-06 | global batch size:   128 | lm loss: 6.758929E+00 | loss scale: 64.0 |"
        " grad norm: 1.872 | number of skipped iterations:   0 | number of nan iterations:   0 |"),
        " validation loss at iteration 1000 | lm loss value: 4.503653E+00 | lm loss PPL: 9.034661E+01 | ",
        (" iteration     1100/    3000 | elapsed time per iteration (ms): 11197.8 | learning rate 8.493E-06 |"
        " lm loss NAN | loss scale 0.1 |"),
    ])
    (s0, m0), (s1, m1), (s2, m2) = out
    assert s0 == 400 and m0["loss"] == 6.758929 and m0["grad_norm"] == 1.872 and m0["loss_scale"] == 64.0
    assert m0["lr"] == 6.3e-06 and m0["step_time"] == pytest.approx(12.879) and m0["consumed_samples"] == 51200
    assert (s1, m1) == (1000, {"val/loss": 4.503653, "val/ppl": 90.34661})
    assert s2 == 1100 and math.isnan(m2["loss"]) and m2["loss_scale"] == 0.1


def test_nanotron_skips_suffixed_numbers():
    out, _ = ext([("10/17/2025 16:31:56 [INFO|DP=0|PP=0|TP=0]: iteration: 3281 / 37895 | consumed_tokens: 85.8G | "
                  "elapsed_time_per_iteration_ms: 11.5K | lm_loss: 2.38 | lr: 0.0003 | grad_norm: 0.412")])
    assert out == [(3281, {"loss": 2.38, "lr": 0.0003, "grad_norm": 0.412})]


def test_fairseq_inner_and_valid_lines():
    out, _ = ext([
        ("2024-05-01 09:12:44 | INFO | train_inner | epoch 003:    200 / 1975 loss=4.12, nll_loss=2.91, ppl=7.52, "
        "wps=130830, ups=2.15, lr=0.0005, gnorm=0.61, clip=12%, loss_scale=8, train_wall=48, wall=954, num_updates=4150"),
        ("2024-05-01 09:13:01 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 4.01 | nll_loss 2.8 | "
        "ppl 6.96 | wps 41020 | num_updates 4150 | best_loss 4.01"),
        "2024-05-01 09:13:02 | INFO | train | epoch 003 | loss 4.2 | nll_loss 2.99 | ppl 7.9 | num_updates 4150",
    ])
    (s0, m0), (s1, m1) = out  # the train epoch summary (an average of lines already read) is skipped
    assert s0 == 4150 and m0["loss"] == 4.12 and m0["grad_norm"] == 0.61 and m0["loss_scale"] == 8
    assert "clip" not in m0 and "num_updates" not in m0
    assert s1 == 4150 and m1 == {"val/loss": 4.01, "val/nll_loss": 2.8, "val/ppl": 6.96, "val/wps": 41020}


def test_fairseq_before_0_6_progress_lines_take_the_batch_of_the_epoch():
    # "| epoch 001  1000 / 20000 loss=...": the epoch, then the batch of its total; the epoch alone is not the step
    out, _ = ext([
        "| epoch 001  1000 / 20000 loss=9.12 (10.30), wps=18000, wpb=31000, bsz=860, lr=1.25, clip=100%, gnorm=2.05",
        "| epoch 001  2000 / 20000 loss=8.40 (9.70), wps=18100, wpb=31000, bsz=870, lr=1.25, clip=100%, gnorm=1.71",
        "| epoch 002:   500 / 20000 loss=5.10 (5.30), wps=18200, wpb=31000, bsz=870, lr=1.25, clip=100%, gnorm=nan",
    ])
    assert [s for s, _ in out] == [1000, 2000, 20500]
    assert out[1][1] == {"loss": 8.4, "lr": 1.25, "grad_norm": 1.71}
    assert math.isnan(out[2][1]["grad_norm"])


def test_hf_trainer_dicts_take_the_progress_bar_step():
    out, _ = ext([
        " 12%|█▏        | 120/1000 [01:10<08:31,  1.72it/s]",
        "{'loss': 0.4121, 'grad_norm': nan, 'learning_rate': 4.8e-05, 'epoch': 0.31}",
        "{'eval_loss': 0.52, 'eval_runtime': 3.1, 'eval_samples_per_second': 90.2, 'epoch': 0.31}",
        "{'train_runtime': 700.2, 'train_samples_per_second': 1.4, 'train_loss': 0.44, 'epoch': 1.0}",
    ])
    assert out[0][0] == 120 and math.isnan(out[0][1]["grad_norm"]) and out[0][1]["lr"] == 4.8e-05
    assert out[1] == (120, {"val/loss": 0.52, "val/runtime": 3.1, "val/samples_per_second": 90.2})
    assert len(out) == 2  # the end-of-training summary is skipped


def test_dict_without_a_step_uses_a_running_counter():
    out, _ = ext(["{'loss': 1.0, 'learning_rate': 1e-4, 'epoch': 0.1}", "{'loss': 0.9, 'learning_rate': 1e-4, 'epoch': 0.2}"])
    assert [s for s, _ in out] == [0, 1]


def test_json_lines_per_epoch():
    out, _ = ext([('{"train_lr": 0.0005, "train_loss": 3.58, "test_loss": 1.11, "test_acc1": 74.15, "epoch": 150, '
                  '"n_parameters": 11590840}')])
    assert out == [(150, {"lr": 0.0005, "loss": 3.58, "test/loss": 1.11, "test/acc1": 74.15, "epoch": 150.0})]


def test_settings_dict_is_not_metrics():
    assert ext(["Default sampling parameters: {'temperature': 0.7, 'top_k': 20, 'top_p': 0.95}"])[0] == []


def each(lines):
    """Each line through its own extractor (formats of different runs)."""
    return [e for line in lines for e in ext([line])[0]]


def test_mmengine_and_mmcv():
    out = each([
        ("2025/04/09 13:05:16 - mmengine - INFO - Epoch(train)  [5][4600/7724]  lr: 6.5426e-04  eta: 1 day, 0:44:11  "
        "time: 0.7527  data_time: 0.0105  memory: 9194  grad_norm: 3.5217  loss: 3.1877  loss_cls: 0.1783"),
        "2025/04/09 13:09:16 - mmengine - INFO - Iter(train) [ 4650/90000]  lr: 1.0e-02  eta: 9:01:11  time: 0.41  loss: 0.77",
        ("2022-12-05 17:15:45,490 - mmdet - INFO - Epoch [12][1400/3953]\tlr: 3.604e-06, eta: 2:28:37, time: 3.902, "
        "data_time: 0.919, memory: 19582, loss_cls: 0.2377, d0.loss_bbox: 0.5164, loss: 4.4046, grad_norm: nan"),
    ])
    (s0, m0), (s1, m1), (s2, m2) = out
    assert s0 == 4 * 7724 + 4600 and m0["step_time"] == 0.7527 and "eta" not in m0 and m0["loss"] == 3.1877
    assert (s1, m1) == (4650, {"lr": 0.01, "step_time": 0.41, "loss": 0.77})
    assert s2 == 11 * 3953 + 1400 and m2["d0.loss_bbox"] == 0.5164 and math.isnan(m2["grad_norm"])


def test_detectron2_timm_metriclogger():
    out = each([
        ("[12/20 18:16:09 d2.utils.events]:  eta: 19:46:55  iter: 4959  total_loss: 10.31  loss_ce: 0.8514  "
        "time: 0.2815  data_time: 0.0115  lr: 2.5e-05  max_mem: 10921M"),
        ("Train: 1 [ 350/5004 (  7%)]  Loss:  6.732388 (6.8414)  Time: 1.271s,  201.43/s  (0.608s,  420.96/s)  "
        "LR: 2.133e-02  Data: 1.056 (0.403)"),
        ("[05:19:47.352788] Epoch: [2]  [1480/1504]  eta: 0:01:45  lr: 0.000012  loss: 0.9233 (0.9531)  "
        "grad_norm: 0.2695 (0.3902)  time: 4.3916  data: 0.0002  max mem: 51710"),
    ])
    assert out[0] == (4959, {"loss": 10.31, "loss_ce": 0.8514, "step_time": 0.2815, "data_time": 0.0115, "lr": 2.5e-05})
    assert out[1] == (5354, {"loss": 6.732388, "lr": 0.02133, "data_time": 1.056, "step_time": 1.271})
    assert out[2] == (2 * 1504 + 1480, {"lr": 1.2e-05, "loss": 0.9233, "grad_norm": 0.2695, "step_time": 4.3916, "data_time": 0.0002})


def test_nanogpt_and_opennmt():
    out, _ = ext([
        "iter 2990: loss 3.8853, time 1096.65ms, mfu 15.34%",
        "step 3000: train loss 4.0390, val loss 4.0427",
        "iter 3000: loss 4.2490, time 35392.33ms, mfu 13.85%",
    ])
    out += each([
        "[2024-01-01 10:00:00,000 INFO] Step 3100/20000; acc: 41.2; ppl: 22.1; xent: 3.1; lr: 0.00070; 9000/8000 tok/s;   600 sec",
        "Epoch  2, 12900/37527; acc:   4.48; ppl: 35173.75; xent:  10.47; 3599 src tok/s; 3678 tgt tok/s;   9861 s elapsed",
    ])
    assert out[0] == (2990, {"loss": 3.8853, "step_time": pytest.approx(1.09665)})
    assert out[1] == (3000, {"val/loss": 4.0427})
    assert out[2][0] == 3000 and out[2][1]["loss"] == 4.249
    assert out[3] == (3100, {"acc": 41.2, "ppl": 22.1, "loss": 3.1, "lr": 0.0007})
    assert out[4] == (37527 + 12900, {"acc": 4.48, "ppl": 35173.75, "loss": 10.47})


def test_build_nanogpt_log_and_pytorch_yolov3_batches():
    out, _ = ext([
        "0 val 10.9310",
        "0 hella 0.2413",
        "0 train 10.934416",
        "1 train 10.883945",
        ("[Epoch 1/30, Batch 2/7329] [Losses: x 0.287134, y 0.270254, w 8.582551, h 5.053944, conf 3.922812, "
         "cls 0.810259, total 18.926954, recall: 0.00253, precision: 0.00012]"),
    ])
    assert out[:4] == [(0, {"val/loss": 10.931}), (0, {"val/hellaswag_acc": 0.2413}), (0, {"loss": 10.934416}),
                       (1, {"loss": 10.883945})]
    assert out[4] == (7329 + 2, {"loss": 18.926954, "recall": 0.00253, "precision": 0.00012})


def test_nnunet_v1_and_v2_logs_give_a_value_a_line_at_their_epoch():
    v2, _ = ext([
        "2023-03-20 10:00:00.000000: Epoch 5",
        "2023-03-20 10:00:00.000001: Current learning rate: 0.00955",
        "2023-03-20 10:02:00.000000: train_loss -0.6421",
        "2023-03-20 10:02:00.000001: val_loss -0.6801",
        "2023-03-20 10:02:00.000002: Pseudo dice [0.8123, 0.7877]",
        "2023-03-20 10:02:00.000003: Epoch time: 120.0 s",
        "2023-03-20 10:02:01.000000: Epoch 6",
        "2023-03-20 10:04:00.000000: train_loss -0.6621",
    ])
    assert v2 == [(5, {"lr": 0.00955}), (5, {"loss": -0.6421}), (5, {"val/loss": -0.6801}), (5, {"val/dice": 0.8}),
                  (6, {"loss": -0.6621})]
    v1, _ = ext(["2021-01-01 10:00:00.000000: ", "epoch:  5 ", "2021-01-01 10:02:00.000000: train loss : -0.6421 ",
                 "2021-01-01 10:02:10.000000: validation loss: -0.6801 ", "2021-01-01 10:02:10.000002: lr: 0.009550"])
    assert v1 == [(5, {"loss": -0.6421}), (5, {"val/loss": -0.6801}), (5, {"lr": 0.00955})]


def test_swin_paddleocr_and_kohya_lines():
    swin, _ = ext([
        ("[2022-01-01 10:00:00 swin_tiny] (main.py 230): INFO Train: [1/300][10/1251]\teta 10:00:00 lr 0.000001\t"
         "time 0.5000 (0.9000)\tloss 6.8000 (6.8500)\tgrad_norm 1.1000 (1.0500)\tmem 10000MB"),
    ])
    assert swin == [(10, {"lr": 1e-06, "loss": 6.8, "grad_norm": 1.1})]  # epochs counted from the first named
    paddle, _ = ext([
        ("[2023/01/01 10:00:00] ppocr INFO: epoch: [1/500], global_step: 10, lr: 0.001000, acc: 0.000000, "
         "loss: 25.1230, avg_reader_cost: 0.1 s"),
        "[2023/01/01 10:01:00] ppocr INFO: epoch: [1/500], global_step: 20, lr: 0.001000, acc: 0.000000, loss: 22.1230",
    ])
    assert [(s, m["loss"]) for s, m in paddle] == [(10, 25.123), (20, 22.123)]
    kohya, _ = ext(["steps:  10%|█         | 100/1000 [01:00<09:00,  1.66it/s, avr_loss=0.123]"])
    assert kohya == [(100, {"loss": 0.123})]


def test_nll_is_the_loss_unless_the_line_prints_its_own_and_an_epochs_loss_avg():
    out, _ = ext(["epoch 0 step 1/45 lr=9.78e-05 nll=0.4868", "step 5 | nll=0.4 loss=0.6", "step 6 | loss=0.5 nll=0.3"])
    assert out == [(1, {"lr": 9.78e-05, "loss": 0.4868}), (5, {"loss": 0.6}), (6, {"loss": 0.5})]
    out, _ = ext([
        "[12/25 14:24:53] epoch:[  1/25 ] train step:100  loss: 3.45068 lr: 0.010000 top1: 0.23438",
        "[12/25 14:26:56] END epoch:1   val loss_avg: 3.62249 top1_avg: 0.14896 top5_avg: 0.38984",
    ])
    assert out == [(100, {"loss": 3.45068, "lr": 0.01}), (100, {"val/loss": 3.62249})]


def test_bare_phase_words_on_an_epoch_line_are_losses():
    out, _ = ext([
        "09:34:10 | Epoch 01 | train 7.164 | val 5.535 (saved)",
        "09:35:34 | Epoch 02 | train 5.164 | val 4.554 (saved)",
        "Epoch 03 | train 92.3% | val 88.1%",  # percentages are accuracies, not losses
        "Split: train 0.8, val 0.1",  # no epoch or step on the line: not a log of training
    ])
    assert out == [(1, {"loss": 7.164, "val/loss": 5.535}), (2, {"loss": 5.164, "val/loss": 4.554})]


def test_a_splits_average_named_in_one_word():
    out, _ = ext(["-----0------", "train_mean loss: 0.225224", "train_accuracy: 0.923984", "test_mean loss: 0.504793"])
    assert [m for _, m in out] == [{"loss": 0.225224}, {"test/loss": 0.504793}]


def test_keras_progress_with_epoch_context():
    out, _ = ext([
        "Epoch 2/10",
        "  3/234 [..............................] - ETA: 33:37 - loss: 44.4110Batch 3: Invalid loss, terminating training",
        "234/234 [==============================] - 3s 12ms/step - loss: 0.3121 - accuracy: 0.9012 - val_loss: nan - val_accuracy: 0.8811",
    ])
    assert len(out) == 1
    step, m = out[0]
    assert step == 234 + 234 and m["loss"] == 0.3121 and m["acc"] == 0.9012 and math.isnan(m["val/loss"])


def test_keras_3_bar_and_verbose_2_lines():
    """Keras 3 (TF >= 2.16) draws its bar with box characters and sorts the metrics; ``verbose=2`` prints no bar."""
    k3, _ = ext([
        "Epoch 1/10",
        "1875/1875 ━━━━━━━━━━━━━━━━━━━━ 5s 2ms/step - accuracy: 0.9137 - loss: 0.2973 - val_accuracy: 0.9571 - val_loss: 0.1425",
        "Epoch 2/10",
        " 900/1875 ━━━━━━━━━━━━━━━━━━━━ 2s 2ms/step - accuracy: 0.9533 - loss: 0.1590",
    ])
    assert k3 == [(1875, {"acc": 0.9137, "loss": 0.2973, "val/acc": 0.9571, "val/loss": 0.1425}),
                  (2775, {"acc": 0.9533, "loss": 0.159})]
    v2, _ = ext([
        "Epoch 3/10",
        "1875/1875 - 4s - loss: 0.1421 - accuracy: 0.9581 - val_loss: 0.1011 - val_accuracy: 0.9690 - 4s/epoch - 2ms/step",
    ])
    assert v2 == [(2 * 1875 + 1875, {"loss": 0.1421, "acc": 0.9581, "val/loss": 0.1011, "val/acc": 0.969})]


def test_terminal_colours_are_not_part_of_a_line():
    from runwatch.models.text.monitor import TextMonitor

    coloured = ("\x1b[1m1875/1875\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m \x1b[1m5s\x1b[0m 2ms/step - "
                "accuracy: 0.9137 - loss: 0.2973")
    events, _ = TextMonitor("r").observe_lines(["Epoch 1/10", coloured])
    assert events == [(1875, {"acc": 0.9137, "loss": 0.2973})]


def test_lightning_rich_bar_and_clu_bracketed_steps():
    rich, _ = ext(["Epoch 2/9  ━━━━━━━━━━━━━━━━━━━━ 938/938 0:00:12 • 0:00:00 75.12it/s v_num: 0 train_loss: 0.123 "
                   "val_loss: 0.100", "Epoch 3/9  ━━━━━━━━━━━━━━━━━━━━ 10/938 0:00:01 • 0:00:11 75.1it/s v_num: 0 train_loss: 0.1"])
    assert rich == [(2 * 938 + 938, {"loss": 0.123, "val/loss": 0.1}), (3 * 938 + 10, {"loss": 0.1})]
    clu, _ = ext(["I1204 10:00:00.123456 140245 logging_writer.py:48] [100] learning_rate=0.001000, loss=2.310000",
                  "[200] loss=2.11, lr=0.001"])
    assert clu == [(100, {"lr": 0.001, "loss": 2.31}), (200, {"loss": 2.11, "lr": 0.001})]


def test_pytorch_word_language_model_example_and_epoch_batch_lines():
    out, _ = ext([
        "| epoch   1 |   200/ 2928 batches | lr 20.00 | ms/batch 45.00 | loss  7.63 | ppl  2055.20",
        "-" * 89,
        "| end of epoch   1 | time: 40.00s | valid loss  5.58 | valid ppl   265.80",
        "| epoch   2 |   200/ 2928 batches | lr 20.00 | ms/batch 45.00 | loss  5.40 | ppl   221.00",
    ])
    assert out == [(200, {"lr": 20.0, "loss": 7.63, "ppl": 2055.2}), (200, {"val/loss": 5.58, "val/ppl": 265.8}),
                   (2928 + 200, {"lr": 20.0, "loss": 5.4, "ppl": 221.0})]
    batches, _ = ext(["INFO:root:Epoch 1, Batch 100, Loss: 0.6931", "INFO:root:Epoch 1, Batch 200, Loss: 0.6531",
                      "INFO:root:Epoch 2, Batch [100/250], Loss: 0.5931"])
    assert [s for s, _ in batches] == [100, 200, 350]  # the epoch alone is not the step


def test_lightning_bar_holds_values_until_the_bar_moves():
    out, _ = ext([
        "Epoch 1:  11%|█         | 2/18 [00:11<01:33,  5.82s/it, loss=10.473, v_num=193315]",
        "Epoch 1:  11%|█         | 2/18 [00:11<01:33,  5.82s/it, loss=10.224, v_num=193315]",
        "Epoch 1:  17%|█▋        | 3/18 [00:14<01:13,  4.87s/it, loss=10.047, v_num=193315]",
    ])
    assert out == [(20, {"loss": 10.224}), (21, {"loss": 10.047})]


def test_nemo_bars_without_a_rate_or_a_total_take_the_global_step():
    out, _ = ext([
        "Epoch 0: :  47%|████▋     | 7/15 [06:19<07:13, reduced_train_loss=11.50, global_step=6.000, consumed_samples=12288.0]",
        "Epoch 0: : 100%|██████████| 15/15 [13:26<00:00, v_num=gjbq, reduced_train_loss=9.70, global_step=14.00, "
        "consumed_samples=26624.0, train_step_timing in s=49.50, val_loss=9.212]",
        "Epoch 1: : 1it [00:04,  4.36s/it, v_num=d3c7, reduced_train_loss=nan, global_step=15.00, consumed_samples=28672.0]",
    ])
    assert [s for s, _ in out] == [6, 14, 15]
    assert out[1][1] == {"reduced_train_loss": 9.7, "val/loss": 9.212} and math.isnan(out[2][1]["reduced_train_loss"])


def test_step_anchored_free_form_lines():
    out, _ = ext([
        "Epoch 3 step 200 loss=0.41 acc=0.88",
        "02:31:56: train iter: 300 loss_net: nan loss_scale: 785.4200 norm: nan norm_average: 0.8729 seconds: 122.871",
        "{| Epoch: 55/167 (996/1926) | Loss: 0.2907 | 0.93 steps/s | Step: 425k | }",
    ])
    assert out[0] == (200, {"loss": 0.41, "acc": 0.88})
    assert out[1][0] == 300 and set(out[1][1]) == {"loss_net", "loss_scale"}
    assert len(out) == 2  # "Step: 425k" is not a step and the epoch is not one either


def test_step_lines_whose_fields_have_no_colon():
    """Custom loops print ``f"epoch {e}, step {s}, loss {l:.4f}"``: a step word, then ``key value`` fields."""
    out, _ = ext([
        "epoch 3, step 1200, loss 0.4521, lr 0.001",
        "Epoch 3 | Step 1300 | Loss 0.4401 | LR 1.0e-03 | grad norm 1.25",
        "step 1400 train loss 0.4312 val loss 0.5120",
        "global step 1500: loss 0.4201",
    ])
    assert out == [
        (1200, {"loss": 0.4521, "lr": 0.001}),
        (1300, {"loss": 0.4401, "lr": 0.001, "grad_norm": 1.25}),
        (1400, {"loss": 0.4312, "val/loss": 0.512}),
        (1500, {"loss": 0.4201}),
    ]


def test_per_epoch_lines_without_colons_report_at_the_epoch():
    out, _ = ext(["Epoch 3: train loss 0.45, val loss 0.50", "Epoch 4: train loss 0.41, val loss 0.49",
                  "Saving model at epoch 4, best val loss 0.49",  # a best-so-far value, not read
                  "| epoch 004 | loss 6.326 | nll_loss 5.193 | ppl 36.58 | num_updates 21896"])  # fairseq's epoch averages
    assert out == [(3, {"loss": 0.45, "val/loss": 0.5}), (4, {"loss": 0.41, "val/loss": 0.49})]


def test_two_word_keys_keep_their_phase():
    """``Val Loss: 0.50`` before ``Train Loss: 0.45`` was read as the training loss (the key was just ``Loss``)."""
    out, _ = ext(["Epoch 3 | Val Loss: 0.50 | Train Loss: 0.45", "Step: 1200, Loss: 0.4521, Grad Norm: 1.23, Learning Rate: 1e-4"])
    assert out == [(3, {"val/loss": 0.5, "loss": 0.45}), (1200, {"loss": 0.4521, "grad_norm": 1.23, "lr": 0.0001})]


def test_losses_named_by_their_split_alone():
    """A loss printed under its split's name: bare ``train=``/``val=`` keys (read only as a pair, and only decimals:
    ``train: 50000`` is a split's size), ``Loss: Train 0.32 Val 0.43``, ``Loss (val): 0.43``, ``tr_loss``/``va_loss``."""
    out, _ = ext([
        "2025-11-04 10:38:56,383 - INFO - Epoch 001: train=2.5584, val=2.3731, ppl=10.73 [BEST]",
        "2025-11-04 10:39:16,636 - INFO - Epoch 002: train=2.2996, val=2.2523, ppl=9.51 (no improve 1/10)",
        "Epoch 3 | Loss: Train 0.32 Val 0.43 | Acc: Train 0.88 Val 0.85",
        "Epoch [4/10] Loss (train): 0.30 Loss (val): 0.44",
        "Epoch 5 tr_loss 0.29 va_loss 0.45",
        "step 600 train=nan val=nan",
    ])
    assert out[:5] == [(1, {"ppl": 10.73, "loss": 2.5584, "val/loss": 2.3731}),
                       (2, {"ppl": 9.51, "loss": 2.2996, "val/loss": 2.2523}),
                       (3, {"loss": 0.32, "val/loss": 0.43}), (4, {"loss": 0.30, "val/loss": 0.44}),
                       (5, {"loss": 0.29, "val/loss": 0.45})]
    step, nan = out[5]  # a diverged run's NaNs are values too
    assert step == 600 and set(nan) == {"loss", "val/loss"} and all(math.isnan(v) for v in nan.values())
    assert ext(["epoch 1 train: 50000, val: 10000", "Epoch 2: train=0.41"])[0] == []  # sizes; a split alone


def test_a_held_out_summary_without_a_step_reports_at_the_current_step():
    """Flair's ``DEV  : loss ...`` / ``TEST : loss ...`` after an epoch's iterations, and the same in other words; an
    evaluation progress bar is no summary, and before any step nothing can be placed."""
    out, _ = ext([
        "2024-02-01 10:00:00,100 epoch 1 - iter 120/135 - loss 16.80228248",
        "2024-02-01 10:00:08,100 EPOCH 1 done: loss 16.7398 - lr 0.1000 - bad epochs 0",
        "2024-02-01 10:01:04,654 DEV  : loss 10.39208508 - f-score 0.6282 - acc 0.4580",
        "2024-02-01 10:02:02,589 TEST : loss 10.26942635 - f-score 0.5831 - acc 0.4116",
        "2024-02-01 10:02:10,000 epoch 2 - iter 0/135 - loss 9.91",
        "Validation: 100%|#####| 10/10 [00:01<00:00]",
        "Validation loss: 9.12",
    ])
    assert out == [(120, {"loss": 16.80228248}), (120, {"val/loss": 10.39208508, "val/acc": 0.458}),
                   (120, {"test/loss": 10.26942635, "test/acc": 0.4116}), (135, {"loss": 9.91}), (135, {"val/loss": 9.12})]
    # in a log that names no step, lines of nothing but pairs with a loss are numbered in order instead
    assert ext(["Validation loss: 9.12", "Validation loss: 9.05"])[0] == [(0, {"val/loss": 9.12}), (1, {"val/loss": 9.05})]
    # the phase in Chinese before a Latin key: "loss on the whole test set", "validation set loss"
    out, _ = ext(["Epoch: 001/040 | Batch 0100/0469 | Loss: 0.1032", "整体测试集上的Loss: 6.462724664248526",
                  "整体测试集上的正确率: 0.9724", "Epoch: 002/040 | Batch 0100/0469 | Loss: 0.0932", "验证集 loss: 0.5"])
    assert out == [(100, {"loss": 0.1032}), (100, {"test/loss": 6.462724664248526}), (569, {"loss": 0.0932}),
                   (569, {"val/loss": 0.5})]


def test_key_value_pairs_without_a_colon_under_an_epoch_line():
    """``print("Train loss", loss)`` under ``Epoch 3:`` (LadderNet's log): read at the epoch like ``Valid loss: 5.1``;
    words and numbers that are no metric pair are not."""
    out, _ = ext(["Epoch 0:", "Train loss 0.347656", "Valid loss: 5.1115", "Epoch 4:", "Train loss 1629511453423918336.0",
                  "Valid loss: 18624358.1250", "Epoch 5:", "best loss 0.3", "took 3 s"])
    assert out == [(0, {"loss": 0.347656}), (0, {"val/loss": 5.1115}), (4, {"loss": 1.629511453423918336e18}),
                   (4, {"val/loss": 18624358.125})]


def test_lines_tagged_with_their_phase_after_a_line_of_counters():
    """A loop printing its counters, then ``[Train]`` and ``[Dev]`` lines of values (a course project's log): both at
    the counters' step; long after them, a tag gives nothing."""
    out, x = ext(["epoch: 0, iteration: 0, step: 0", "[Train] loss: 2.412177, score: 0.078125",
                  "[Dev] loss: 2.192344, score: 0.228200", "best accuracy performance has been updated: 0.00000 --> 0.22820",
                  "epoch: 0, iteration: 100, step: 100", "[Train] loss: 0.679867, score: 0.8125",
                  "[Dev] loss: 0.548701, score: 0.8655"])
    assert out == [(0, {"loss": 2.412177}), (0, {"val/loss": 2.192344}), (100, {"loss": 0.679867}),
                   (100, {"val/loss": 0.548701})]
    restored = MetricExtractor()
    restored.load_state_dict(x.state_dict())
    assert (restored.header_step, restored.header_lines) == (100, 2)
    # without counters anywhere, tagged lines are numbered in order like other step-less lines of pairs, in their phase
    assert ext(["[Train] loss: 2.41", "[Dev] loss: 2.19"])[0] == [(0, {"loss": 2.41}), (1, {"val/loss": 2.19})]
    assert ext(["step: 5", "a", "b", "c", "d", "[Dev] loss: 2.19"])[0] == []


@pytest.mark.parametrize(
    ("unit", "end"),
    [("Train loss 0.5 ", "@"), ("loss 1 ", "@"), ("a b 1 ", "@"), ("step: 1 ", "@"), ("step: 1 , ", "@"),
     ("epoch: 0, step: 1, ", "@"), ("itereval_lossiter", "1"), ("a.b-c_", "1"), ("val_loss", ":x"),
     ("[step=1/2, eta=a", "]]"),  # an OLMo record header that never closes cleanly
     ("Loss: 1%, ", "@"), ("05/21/2026 ", "Epoch 1, loss: 1"), (" Epoch | TrainLoss |", "@")],
)
def test_long_lines_that_fail_at_their_end_are_read_in_linear_time(unit, end):
    """A regex of optional words and spaces that backtracks can take hours on one long line that fails at its end
    (it did, for 20 repetitions, before these lines were checked token by token), and a key pattern tried at every
    letter of one long word took seconds on a 64 KiB line (quadratic): one bad line must not stall a stream. An alarm
    turns a stall into a failure."""
    import signal

    def stalled(*_):
        raise TimeoutError(f"extraction stalled on {unit!r} x 2000")

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        for context in ("Epoch 3:", "epoch: 0, iteration: 1, step: 1"):
            x = MetricExtractor()
            x.extract(context)
            x.extract((unit * 4000)[:60_000] + end)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_an_epoch_line_padded_to_a_long_line_is_read_in_linear_time():
    """``Epoch 1`` followed by 60,000 spaces or separators and a stray letter: the epoch-line pattern's quantifiers
    once overlapped on the spaces and took seconds at 10,000 (quadratic or worse)."""
    import signal

    def stalled(*_):
        raise TimeoutError("extraction stalled on a padded epoch line")

    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, 10.0)
    try:
        for padding in (" ", " /", " ]", "= "):
            assert MetricExtractor().extract("Epoch 1" + padding * (60_000 // len(padding)) + "x") == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_log_without_steps_numbers_its_lines_of_metric_pairs():
    """A notebook's loop printing ``loss: X val_loss: Y`` each step, and a loop printing its validation loss
    under its tqdm bar: numbered in order, and placed at the bar's position; a log that names steps is not
    numbered (a count would collide with its steps)."""
    out, _ = ext(["cuda", "loss: 2.3089 val_loss: 2.3017", "model saved", "loss: 2.2936 val_loss: 2.2988"])
    assert out == [(0, {"loss": 2.3089, "val/loss": 2.3017}), (1, {"loss": 2.2936, "val/loss": 2.2988})]
    out, _ = ext(["  0%|          | 1/2400 [00:05<3:30:53,  5.27s/it]", "Validation loss: 10.7486",
                  " 13%|#3        | 301/2400 [06:01<1:30:04,  2.57s/it]", "Validation loss: 5.8670"])
    assert out == [(1, {"val/loss": 10.7486}), (301, {"val/loss": 5.867})]
    out, _ = ext(["Epoch 3: train loss 0.45", "loss: 0.44", "Epoch 4: train loss 0.41"])
    assert out == [(3, {"loss": 0.45}), (4, {"loss": 0.41})]


def test_fields_without_colon_are_taken_only_when_unambiguous():
    out, _ = ext([
        "step 100 best loss 0.30 so far",  # a best-so-far value, not this step's loss
        "Saving model at step 200 to ckpt_200.pt",
        "step 300 took 3.2 s, 12 samples",
        "Reached step 400, mean reward 3.5",
    ])
    assert out == []


def test_a_step_counted_within_its_epoch_becomes_the_runs_step():
    """``Epoch [2/10], Step [100/600]`` is step 700 of the run (epochs written as fractions count from 1)."""
    out, _ = ext([
        "Epoch [1/10], Step [100/600], Loss: 0.4521",
        "Epoch [1/10], Step [600/600], Loss: 0.4021",
        "Epoch [2/10], Step [100/600], Loss: 0.3521",
    ])
    assert [s for s, _ in out] == [100, 600, 700] and out[2][1] == {"loss": 0.3521}
    # A bare epoch counts from the first one the log names: 0 (range(epochs)) or 1 (Ignite, epoch + 1).
    zero, _ = ext(["epoch 0 iter 50/500 loss 0.5", "epoch 2 iter 50/500 loss 0.3"])
    one, _ = ext(["Epoch[1] Iteration[100/938] Loss: 0.45", "Epoch[2] Iteration[100/938] Loss: 0.40"])
    assert [s for s, _ in zero] == [50, 1050] and [s for s, _ in one] == [100, 1038]
    # PaddleSeg's "iter: 1100/80000" is the run's iteration out of all of them: it runs on across epochs
    paddle, x = ext([f"[TRAIN] epoch: {e}, iter: {i}/80000, loss: 0.9, lr: 0.01" for e, i in ((1, 100), (1, 1000), (2, 1100), (3, 2100))])
    assert [s for s, _ in paddle] == [100, 1000, 1100, 2100] and x.dropped == 0


def test_ep_abbreviates_the_epoch():
    """``ep: 0, batch: 20`` (a pretraining script's print): the batch counts within the epoch, as after ``epoch:``;
    "ep" inside another word (keep, deep) or before no number is no epoch."""
    out, _ = ext(["ep: 0, batch: 20, time: 9.17, ntokens: 485.20/513, loss: 10.984375",
                  "ep: 0, batch: 40, time: 8.38, ntokens: 431.70/513, loss: 10.976562"])
    assert out == [(20, {"loss": 10.984375}), (40, {"loss": 10.976562})]
    assert ext(["ep=3 loss=1.2"])[0] == [(3, {"loss": 1.2})]
    assert ext(["keep 3 loss 1"])[0] == []


def test_a_phase_word_inside_the_tag_that_opens_the_message():
    """``[Diff-Val(Test-Normal)] Epoch 001 (Deterministic): loss = ...`` is the held-out loss of epoch 1 (its first
    phase word); ``[Train]`` is training, and a logger's tag such as ``[eval_callback]`` names no phase."""
    out, _ = ext(["2026-05-12 12:09:33,770 - INFO - [Train] Epoch 001: loss = 0.019304",
                  "2026-05-12 12:09:42,781 - INFO - [Diff-Val(Test-Normal)] Epoch 001 (Deterministic): loss = 0.007187",
                  "[EMA-Eval] Epoch 002: loss = 0.4"])
    assert out == [(1, {"loss": 0.019304}), (1, {"val/loss": 0.007187}), (2, {"val/loss": 0.4})]
    assert ext(["[eval_callback] Epoch 003: loss = 0.3"])[0] == [(3, {"loss": 0.3})]


def test_a_date_written_with_slashes_is_no_fraction():
    """The HF example scripts' logging format (``%m/%d/%Y %H:%M:%S``) and a script's ``05/21/26``: an epoch line
    behind such a date is read (two "fractions" on an epoch line otherwise mean the epoch is not the step)."""
    out, _ = ext(["05/21/2026 16:19:08 - INFO - __main__ - Epoch 1, loss: 0.5",
                  "05/21/26 16:22:02 - 0:02:54 - Epoch 2, Average Loss: 0.4070756584405899"])
    assert out == [(1, {"loss": 0.5}), (2, {"loss": 0.4070756584405899})]
    assert ext(["Epoch: 55/167 (996/1926) loss: 0.3"])[0] == []  # still: neither number is the step


def test_a_percentage_beside_the_losses_is_not_read_and_does_not_hide_them():
    out, _ = ext(["epoch 1", "Train Loss: 2.336028, Acc: 10.788889%", "Val Loss: 2.422681, Acc: 9.540000%"])
    assert out == [(1, {"loss": 2.336028}), (1, {"val/loss": 2.422681})]


def test_a_table_drawn_with_bars_under_a_header_of_run_together_names():
    """``Epoch | TrainLoss | TrainAcc | ValLoss | ...`` then a rule and a row per epoch: the names read as two words,
    percentages and the time column (with a "best" marker after it) left out."""
    out, x = ext([" Epoch | TrainLoss | TrainAcc |  ValLoss |  ValAcc |       LR |   Time",
                  "----------------------------------------------------------------------",
                  "     1 |    1.0164 |   50.80% |   0.8634 |  60.67% | 0.001000 |  19.6s  \u2190 best",
                  "     2 |    0.8442 |   62.22% |   1.1590 |  31.25% | 0.001000 |  19.4s",
                  "Training finished"])
    assert out == [(1, {"loss": 1.0164, "val/loss": 0.8634, "lr": 0.001}), (2, {"loss": 0.8442, "val/loss": 1.159, "lr": 0.001})]
    assert x.table is None  # a line of words ends it


def test_chinese_and_japanese_metric_names_and_full_width_punctuation():
    out, _ = ext(["Epoch 3 验证损失\uff1a0.41\uff0c学习率\uff1a0.001", "Epoch 4/10", "训练损失: 0.5", "検証損失: 0.6"])
    assert out == [(3, {"val/loss": 0.41, "lr": 0.001}), (4, {"loss": 0.5}), (4, {"val/loss": 0.6})]


def test_values_under_an_epoch_record_of_a_logging_module():
    """``2026-05-22 02:56:39,224 - INFO - Epoch 1/100`` then ``... - INFO - train_loss: 32.1``: the values belong to the
    epoch the record before named, as without the logging prefix."""
    out, _ = ext(["2026-05-22 02:56:39,224 - INFO - Epoch 1/100", "2026-05-22 02:57:12,678 - INFO - train_loss: 32.1293",
                  "05/22/2026 02:58:39 - INFO - __main__ - Epoch 2/100", "05/22/2026 02:59:12 - INFO - __main__ - loss: 30.1"])
    assert out == [(1, {"loss": 32.1293}), (2, {"loss": 30.1})]


def test_steps_that_start_again_each_epoch_keep_every_epoch():
    """``print(f"epoch {e} step {i} loss {l}")`` with ``i`` counting within the epoch: before, every epoch after
    the first was dropped as steps going back."""
    lines = [f"epoch {e} step {i} loss {2.0 - 0.1 * e - i / 10000:.4f}" for e in range(3) for i in range(0, 1000, 100)]
    out, x = ext(lines)
    steps = [s for s, _ in out]
    assert len(out) == 30 and x.dropped == 0 and steps == sorted(set(steps))
    assert steps[9:12] == [900, 901, 1001]  # epoch 1 follows epoch 0's last step
    assert out[10][1] == {"loss": 1.9}
    # a log whose steps run on across epochs keeps them as they are
    on, _ = ext([f"epoch: {e} step: {e * 1000 + i} loss: 0.5" for e in range(3) for i in (0, 500)])
    assert [s for s, _ in on] == [0, 500, 1000, 1500, 2000, 2500]
    # and a checkpoint between epochs continues the count
    a = MetricExtractor()
    a.extract_many(lines[:15])
    b = MetricExtractor()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.extract_many(lines[15:]) == out[15:]


def test_epoch_block_lines():
    out, _ = ext([
        "lr: 0.0001",  # a hyperparameter header, not a metric
        "Epoch: 1/30",
        "Time Taken: 140.67s - LR: 9.98e-05",
        "Train Loss: 7.3080 - Train Perplexity: 1492.26",
        "Valid Loss: 6.5195 - Valid Perplexity: 678.23",
        "Epoch: 2/30",
        "Train Loss: 6.2874 - Train Perplexity: 537.77",
    ])
    assert out == [
        (1, {"epoch_time": 140.67, "lr": 9.98e-05}),
        (1, {"loss": 7.308, "ppl": 1492.26}),
        (1, {"val/loss": 6.5195, "val/ppl": 678.23}),
        (2, {"loss": 6.2874, "ppl": 537.77}),
    ]


def test_steps_never_go_back_and_repeats_are_dropped():
    out, x = ext(["iter 100: loss 2.0, time 10.0ms, mfu 1%", "iter 50: loss 2.5, time 10.0ms, mfu 1%",
                  "iter 100: loss 2.2, time 10.0ms, mfu 1%"])
    assert out == [(100, {"loss": 2.0, "step_time": 0.01})] and x.dropped == 1


def test_ambiguous_numbers_are_not_metrics():
    out, _ = ext([
        "eta: 2:28:37 loss: 0. step 5",  # cut-off value, clock time
        "Saving checkpoint at 14 epochs",
        "max_seq_len: 128",
        "Model Parameter Count: 66829394",
    ])
    assert out == []


def test_state_round_trip():
    a = MetricExtractor()
    a.extract_many(["Epoch: 4/30", "Epoch 1:  11%|█ | 2/18 [00:11<01:33,  5.82s/it, loss=nan]"])
    b = MetricExtractor()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    rest = ["Train Loss: 1.5 - Train Perplexity: 4.48", "Epoch 1:  17%|█ | 3/18 [00:11<01:33,  5.82s/it, loss=1.0]"]
    ea, eb = a.extract_many(rest) + a.flush(), b.extract_many(rest) + b.flush()
    assert repr(ea) == repr(eb)


def test_metric_names():
    assert metric_name("learning rate") == ("lr", 1.0)
    # an average in front of a split (a Kaggle notebook's "Epoch 1 - avg_train_loss: 0.69  avg_val_loss: 0.64")
    assert [metric_name(k) for k in ("avg_train_loss", "avg_val_loss", "mean_valid_acc", "average train loss")] == [
        ("loss", 1.0), ("val/loss", 1.0), ("val/acc", 1.0), ("loss", 1.0)]
    assert metric_name("mean_iou") == ("mean_iou", 1.0)  # a metric's own name, not an average of "iou"
    assert metric_name("valid_ppl") == ("val/ppl", 1.0)
    assert metric_name("elapsed time per iteration (ms)") == ("step_time", 1e-3)


def test_pytorch_examples_count_samples_and_read_the_test_summary():
    out, _ = ext([
        "Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.301944",
        "Train Epoch: 1 [12800/60000 (21%)]\tLoss: 0.512030",
        "",
        "Test set: Average loss: 0.0471, Accuracy: 9851/10000 (99%)",
        "",
        "Train Epoch: 2 [6400/60000 (11%)]\tLoss: nan",
    ])
    assert [s for s, _ in out] == [0, 12800, 12800, 66400]
    assert out[1][1] == {"loss": 0.51203} and out[2][1] == {"val/loss": 0.0471, "val/acc": 0.9851}
    assert math.isnan(out[3][1]["loss"])


def test_torchtune_progress_description():
    out, _ = ext([
        "1|37|Loss: 1.7382: 100%|██████████| 37/37 [01:02<00:00,  1.69s/it]",
        "2|74|Loss: 1.5123: 100%|██████████| 37/37 [01:01<00:00,  1.66s/it]",
    ])
    assert out == [(37, {"loss": 1.7382}), (74, {"loss": 1.5123})]


def test_lines_that_start_with_a_step_and_give_key_value_fields():
    out, _ = ext([
        "Step 1200 | loss 2.4107 | lr 2.9e-04 | tokens/s 51234",
        "iter 1300 step 325: loss 2.3954, iter time: 118.40ms (optimizer.step)",
        "step 1400, val loss 2.5120, grad norm 0.88",
        "Step 1500 | 2.31 | 2.9e-04",  # numbers without names: nothing to take
    ])
    assert out == [(1200, {"loss": 2.4107, "lr": 0.00029}), (1300, {"loss": 2.3954}),
                   (1400, {"val/loss": 2.512, "grad_norm": 0.88})]


def test_fastai_results_table():
    out, x = ext([
        "epoch     train_loss  valid_loss  error_rate  time    ",
        "0         1.184290    0.623117    0.187500    00:14     ",
        "1         0.712004    #na#        0.151786    00:13     ",
        "2         nan         nan         0.883929    00:13     ",
        "Better model found at epoch 1 with valid_loss value: 0.5231.",  # not a row of the table
    ])
    assert out[:2] == [(0, {"loss": 1.18429, "val/loss": 0.623117, "error_rate": 0.1875}),
                       (1, {"loss": 0.712004, "error_rate": 0.151786})]
    assert out[2][0] == 2 and math.isnan(out[2][1]["loss"]) and math.isnan(out[2][1]["val/loss"])
    restored = MetricExtractor()
    restored.load_state_dict(json.loads(json.dumps(x.state_dict())))
    assert restored.table == ["train_loss", "valid_loss", "error_rate"]
    assert restored.extract("3         0.60        0.58        0.14        00:13") == [
        (3, {"loss": 0.6, "val/loss": 0.58, "error_rate": 0.14})]


SB3_TABLE = """\
------------------------------------------
| rollout/                |              |
|    ep_len_mean          | 22.5         |
|    ep_rew_mean          | -1.2e+03     |
| time/                   |              |
|    fps                  | 1184         |
|    iterations           | 2            |
|    time_elapsed         | 3            |
|    total_timesteps      | 4096         |
| train/                  |              |
|    approx_kl            | 0.0089       |
|    learning_rate        | 0.0003       |
|    loss                 | nan          |
|    n_updates            | 10           |
|    value_loss           | 50.3         |
------------------------------------------""".splitlines()


def test_stable_baselines3_table_is_one_event_at_its_total_timesteps():
    out, _ = ext(SB3_TABLE)
    assert len(out) == 1
    step, m = out[0]
    assert step == 4096 and math.isnan(m.pop("loss"))
    assert m == {"rollout/ep_len_mean": 22.5, "rollout/ep_rew_mean": -1200.0, "time/fps": 1184.0,
                 "train/approx_kl": 0.0089, "lr": 0.0003, "train/value_loss": 50.3}


def test_stable_baselines3_table_survives_a_checkpoint_mid_table():
    x = MetricExtractor()
    assert x.extract_many(SB3_TABLE[:8]) == []
    restored = MetricExtractor()
    restored.load_state_dict(json.loads(json.dumps(x.state_dict())))
    out = restored.extract_many(SB3_TABLE[8:])
    assert [s for s, _ in out] == [4096] and out[0][1]["train/value_loss"] == 50.3


def test_other_tables_between_rules_are_not_read_as_stable_baselines3():
    out, _ = ext([
        "----------------------------------------",
        "| loss | 0.5 |",  # no section row: not an SB3 table
        "| epoch 001:    100 / 1234 loss=4.2, num_updates=100 |",
        "----------------------------------------",
    ])
    assert out == [(100, {"loss": 4.2})]


def test_hugging_face_eval_metrics_block_reports_at_the_current_step():
    out, _ = ext([
        "{'loss': 0.52, 'learning_rate': 1e-05, 'epoch': 2.9}",
        "***** Running Evaluation *****",
        "  Num examples = 872",
        "  Batch size = 8",
        "***** train metrics *****",  # averages over the run: not events
        "  epoch                    =        3.0",
        "  train_loss               =     0.3456",
        "  train_runtime            = 0:12:34.56",
        "***** eval metrics *****",
        "  epoch                   =        3.0",
        "  eval_accuracy           =     0.8765",
        "  eval_loss               =     0.4123",
        "  eval_runtime            = 0:00:12.34",
        "  eval_samples_per_second =    100.123",
        "  Num examples = 872",
        "Saving model checkpoint to out/checkpoint-300",
        "  eval_loss = 9.9",  # after another line: not in the block any more
    ])
    assert out == [(0, {"loss": 0.52, "lr": 1e-05, "epoch": 2.9}), (0, {"val/acc": 0.8765}), (0, {"val/loss": 0.4123})]


def test_a_line_whose_only_value_is_nan_is_read():
    # No digit on the line: a NaN evaluation loss must not be skipped as a line without values.
    out, _ = ext([
        "{'loss': 0.0063, 'learning_rate': 1e-05, 'epoch': 4.9}",
        "***** eval metrics *****",
        "  eval_loss               =        nan",
    ])
    assert out[0] == (0, {"loss": 0.0063, "lr": 1e-05, "epoch": 4.9})
    assert out[1][0] == 0 and list(out[1][1]) == ["val/loss"] and math.isnan(out[1][1]["val/loss"])


def test_ultralytics_yolo_training_and_validation_rows():
    out, _ = ext([
        "      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size",
        "      1/100      2.61G      1.184      1.531      1.244         42        640: 100%|##########| 8/8 [00:02<00:00,  3.21it/s]",
        "                 Class     Images  Instances      Box(P          R      mAP50  mAP50-95): 100%|##########| 4/4 [00:00<00:00,  5.11it/s]",
        "                   all        128        929      0.651      0.552      0.617      0.456",
        "      2/100      2.61G      1.084      1.431        nan         40        640:  50%|#####     | 4/8 [00:01<00:01,  3.21it/s]",
        "      2/100      2.61G      1.074      1.421        nan         40        640: 100%|##########| 8/8 [00:02<00:00,  3.21it/s]",
    ])
    assert out[0] == (8, {"box_loss": 1.184, "cls_loss": 1.531, "dfl_loss": 1.244, "loss": 3.959})
    assert out[1] == (8, {"val/precision": 0.651, "val/recall": 0.552, "val/map50": 0.617, "val/map50_95": 0.456})
    assert [s for s, _ in out[2:]] == [12, 16] and all(math.isnan(m["loss"]) for _, m in out[2:])


def test_ultralytics_own_progress_bar_since_8_3():
    """Ultralytics draws its bar itself since 8.3 ("100% ━━━━━━━━━━━━ 9/9 5.5s/it 49.5s", no tqdm brackets)."""
    out, _ = ext([
        "      Epoch    GPU_mem   box_loss   cls_loss   dfl_loss  Instances       Size",
        "      1/100      4.15G      1.186      4.366       1.26         43        640: 11% ━─────────── 1/9 51.2s/it 24.3s<6:50",
        "      1/100      4.32G      1.088      4.449      1.252         10        640: 100% ━━━━━━━━━━━━ 9/9 5.5s/it 49.5s",
        "                 Class     Images  Instances      Box(P          R      mAP50  mAP50-95): 100% ━━━━━━━━━━━━ 1/1 1.7s/it 1.7s",
        "                   all         14         31     0.0375     0.0469     0.0475     0.0376",
        "      2/100      4.23G     0.8373      4.312       1.13          6        640: 100% ━━━━━━━━━━━━ 9/9 2.7s/it 24.5s",
    ])
    assert out == [
        (1, {"box_loss": 1.186, "cls_loss": 4.366, "dfl_loss": 1.26, "loss": 6.812}),
        (9, {"box_loss": 1.088, "cls_loss": 4.449, "dfl_loss": 1.252, "loss": 6.789}),
        (9, {"val/precision": 0.0375, "val/recall": 0.0469, "val/map50": 0.0475, "val/map50_95": 0.0376}),
        (18, {"box_loss": 0.8373, "cls_loss": 4.312, "dfl_loss": 1.13, "loss": 6.2793}),
    ]


def test_early_yolov5_total_column_and_counts_in_g_format():
    """YOLOv5 before v4.0 printed ``GIoU obj cls total``: ``total`` is the loss; its ``all`` row wrote large counts in
    ``%10.3g`` (``5.57e+04``)."""
    out, _ = ext([
        "        Epoch   gpu_mem      GIoU       obj       cls     total   targets  img_size",
        "        14/299      6.4G   0.02273  0.002925 0.0003764   0.02603        11       640: 100%|##########| 7/7 [00:02<00:00]",
        "                   Class      Images     Targets           P           R      mAP@.5  mAP@.5:.95: 100%|#####| 2/2 [00:01<00:00]",
        "                     all    5.57e+04    1.74e+05    0.000332     0.00039     2.4e-06    8.59e-07",
    ])
    assert out[0][1] == {"giou_loss": 0.02273, "obj_loss": 0.002925, "cls_loss": 0.0003764, "loss": 0.02603}
    assert out[1][1] == {"val/precision": 0.000332, "val/recall": 0.00039, "val/map50": 2.4e-06, "val/map50_95": 8.59e-07}


def test_a_phase_named_after_the_epoch_it_reports():
    """``Epoch 1 Validation - Loss: 18.49, Mod Acc: 0.0`` is the validation of epoch 1, not its training."""
    out, _ = ext(["2025-07-05 12:57:18,784 - __main__ - INFO - Epoch 1 Training - Loss: 1.2084, Mod Acc: 0.8061",
                  "2025-07-05 12:57:21,354 - __main__ - INFO - Epoch 1 Validation - Loss: 18.4914, Mod Acc: 0.0000"])
    assert out == [(1, {"loss": 1.2084, "acc": 0.8061}), (1, {"val/loss": 18.4914, "val/acc": 0.0})]


def test_yolov5_rows_count_epochs_from_zero():
    out, _ = ext([
        "     Epoch   gpu_mem       box       obj       cls    labels  img_size",
        "      0/299     3.23G   0.04263   0.06001   0.02358       203       640: 100%|##########| 10/10 [00:03<00:00,  2.9it/s]",
        "      1/299     3.23G   0.04163   0.05901   0.02258       203       640: 100%|##########| 10/10 [00:03<00:00,  2.9it/s]",
    ])
    assert [s for s, _ in out] == [10, 20]
    assert out[0][1] == {"box_loss": 0.04263, "obj_loss": 0.06001, "cls_loss": 0.02358, "loss": 0.12622}


def test_yolov5_v7_rows_with_gpu_mem_header_count_epochs_from_zero():
    # YOLOv5 v7.0 prints the v8-style "GPU_mem" header but keeps its 0-based "epoch/epochs-1" counter.
    header = "      Epoch    GPU_mem   box_loss   obj_loss   cls_loss  Instances       Size"
    row = "       {}/99      3.52G    {}    0.04693    0.02833        215        640: 100%|##########| 8/8 [00:05<00:00,  1.46it/s]"
    out, _ = ext([header, row.format(0, "0.07946"), "", header, row.format(1, "0.07512"), row.format(2, "0.07312")])
    assert [(s, m["box_loss"]) for s, m in out] == [(8, 0.07946), (16, 0.07512), (24, 0.07312)]


def test_a_yolo_table_whose_first_epoch_is_zero_is_zero_based():
    out, _ = ext([
        "      Epoch    GPU_mem   box_loss   seg_loss   cls_loss   dfl_loss  Instances       Size",
        "        0/3      2.61G      1.184      2.001      1.386      1.237        158        640: 100%|##########| 8/8 [00:03<00:00,  2.31it/s]",
        "        1/3      2.61G      1.151      1.901      1.298      1.220        169        640: 100%|##########| 8/8 [00:03<00:00,  2.40it/s]",
    ])
    assert [s for s, _ in out] == [8, 16]


def test_bracketed_epoch_and_batch_fractions_of_a_custom_loop():
    # PyTorch's DCGAN example prints "[epoch/epochs][batch/batches]" then tab-separated "Key: value" fields.
    out, _ = ext([
        "[0/5][0/1583]\tLoss_D: 1.7410\tLoss_G: 4.7765\tD(x): 0.5343\tD(G(z)): 0.5771 / 0.0136",
        "[0/5][50/1583]\tLoss_D: 0.3127\tLoss_G: 8.4021\tD(x): 0.9236\tD(G(z)): 0.1513 / 0.0003",
        "[1/5][0/1583]\tLoss_D: 0.2127\tLoss_G: nan\tD(x): 0.9236\tD(G(z)): 0.1513 / 0.0003",
    ])
    assert [s for s, _ in out] == [0, 50, 1583]
    assert out[0][1] == {"loss_d": 1.741, "loss_g": 4.7765} and math.isnan(out[2][1]["loss_g"])


def test_a_bracketed_iteration_fraction_after_a_log_prefix():
    out, _ = ext([
        "2024-05-01 10:00:00 | INFO | [100/1000] loss: 2.3456 lr: 0.001",
        "[2024-05-01 10:00:10] [200/1000] loss=2.1456, lr=0.001, eta 0:01:00",
        "[200/1000] samples 51200",  # no metric named: not an event
    ])
    assert out == [(100, {"loss": 2.3456, "lr": 0.001}), (200, {"loss": 2.1456, "lr": 0.001})]


def test_the_trainers_notebook_table_pasted_as_text():
    # Tab-separated as copied from a notebook; the evaluation columns are validation metrics; "No log" is absent.
    out, _ = ext([
        "Epoch\tTraining Loss\tValidation Loss\tAccuracy\tF1",
        "1\tNo log\t0.401200\t0.842000\t0.800000",
        "2\t0.412300\t0.389000\t0.851000\t0.810000",
    ])
    assert out == [(1, {"val/loss": 0.4012, "val/acc": 0.842, "val/f1": 0.8}),
                   (2, {"loss": 0.4123, "val/loss": 0.389, "val/acc": 0.851, "val/f1": 0.81})]
    # A markdown table of a step-evaluated run, and Unsloth's two-column table (a NaN loss kept as NaN).
    out, _ = ext(["| Step | Training Loss | Validation Loss | Wer |", "|------|------|------|-----|",
                  "| 500 | 1.234500 | 0.987600 | 45.123 |", "| 1000 | 0.834500 | 0.887600 | 40.100 |"])
    assert out == [(500, {"loss": 1.2345, "val/loss": 0.9876, "val/wer": 45.123}),
                   (1000, {"loss": 0.8345, "val/loss": 0.8876, "val/wer": 40.1})]
    out, _ = ext(["Step     Training Loss", "10       2.345600", "20       nan", "Saving checkpoint 30", "40  1.5"])
    assert [s for s, _ in out] == [10, 20] and math.isnan(out[1][1]["loss"])  # the table ends at another line


def test_espnet_batch_reports_continue_across_epochs_and_its_valid_results_are_validation():
    head = "[host] 2023-10-27 13:37:46,484 (trainer:753) INFO: "
    out, _ = ext([
        head.replace("(trainer:753)", "(trainer:298)") + "1/30epoch started",
        head + "1epoch:train:1-100batch: iter_time=1.924e-04, loss_ctc=174.564, loss_att=145.106, acc=0.235, "
               "loss=153.944, grad_norm=156.442, clip=100.000, loss_scale=1.000, optim0_lr0=1.007e-05, train_time=0.127",
        head + "1epoch:train:101-200batch: loss=140.000, acc=0.300, grad_norm=120.100, optim0_lr0=2.007e-05",
        head + "1epoch results: [train] iter_time=0.164, loss=146.972, acc=0.268, lr_0=2.080e-06, time=1 minute and "
               "43.19 seconds, total_count=200, [valid] loss=139.955, acc=0.311, cer=0.9, time=10 seconds, total_count=200",
        head + "2epoch:train:1-100batch: loss=130.000, acc=0.350, grad_norm=nan, optim0_lr0=3.007e-05",
    ])
    assert [s for s, _ in out] == [100, 200, 200, 301]
    assert out[0][1] == {"loss_ctc": 174.564, "loss_att": 145.106, "acc": 0.235, "loss": 153.944, "grad_norm": 156.442,
                         "loss_scale": 1.0, "lr": 1.007e-05}
    assert out[2][1] == {"val/loss": 139.955, "val/acc": 0.311}
    assert math.isnan(out[3][1]["grad_norm"])
    # FunASR prints the update count: it is the step
    out, _ = ext([head + "2epoch:train:1-50batch:50num_updates: loss_att=0.186, acc=0.942, loss=0.192, optim0_lr0=7.484e-06"])
    assert out == [(50, {"loss_att": 0.186, "acc": 0.942, "loss": 0.192, "lr": 7.484e-06})]


def test_deepspeed_engine_reports_and_steps_lines():
    out, _ = ext([
        "[2024-01-01 10:00:00,123] [INFO] [logging.py:96:log_dist] [Rank 0] step=100, skipped=0, lr=[0.0001], mom=[(0.9, 0.999)]",
        "steps: 200 loss: 2.3456 iter time (s): 0.512 samples/sec: 62.500",
        "Total optimization steps = 1000",  # a setting, not a step
    ])
    assert out == [(100, {"lr": 0.0001}), (200, {"loss": 2.3456})]


def test_a_trainer_dict_after_a_deepspeed_report_is_at_its_step():
    """The Trainer under DeepSpeed: the engine's report at ``steps_per_print``, then the Trainer's dict logged at
    the same optimizer step (it was placed one step later, its loss at 11 beside the learning rate at 10)."""
    report = ("[2024-05-10 12:01:{:02d},200] [INFO] [logging.py:96:log_dist] [Rank 0] step={}, skipped=6, lr=[0.0001], "
              "mom=[(0.9, 0.999)]")
    out, _ = ext([
        report.format(10, 10),
        "{'loss': 2.95, 'grad_norm': 1.2, 'learning_rate': 0.0001, 'epoch': 0.05}",
        report.format(20, 20),
        "{'loss': 2.9, 'grad_norm': 1.2, 'learning_rate': 0.0001, 'epoch': 0.1}",
    ])
    assert out == [
        (10, {"lr": 0.0001}), (10, {"loss": 2.95, "grad_norm": 1.2, "epoch": 0.05}),
        (20, {"lr": 0.0001}), (20, {"loss": 2.9, "grad_norm": 1.2, "epoch": 0.1}),
    ]


def test_composer_console_rows_follow_their_progress_line():
    out, _ = ext([
        "[epoch=1][batch=100/1000]:",
        "\t Train time/batch: 99",
        "\t Train loss/train/total: 2.3456",
        "\t Train lr-DecoupledAdamW/group0: 0.0006",
        "[Eval batch=10/10] Eval on eval data:",
        "\t Eval metrics/eval/LanguageCrossEntropy: 2.1",
        "\t Eval metrics/eval/LanguagePerplexity: 8.17",
        "[epoch=2][batch=50/1000]:",
        "\t Train loss/train/total: 2.2",
        "[batch=300/1000] loss: 9.9",  # another tool's line in brackets: not Composer's progress line
        "\t Train loss/train/total: 7.7",  # so no row follows it
    ])
    assert out == [(100, {"loss": 2.3456}), (100, {"lr": 0.0006}), (100, {"val/loss": 2.1}), (100, {"val/ppl": 8.17}),
                   (1050, {"loss": 2.2})]


def test_olmo_console_rows_follow_their_step_record():
    # OLMo's trainer logs "[step=N/M,epoch=E]" at the end of a record, then one indented "name=value" per metric
    out, _ = ext([
        "2025-01-02 10:00:00.000\thost:0\tolmo.train:979\tINFO\t[step=1/500,epoch=0]",
        "    optim/total_grad_norm=0.2370",
        "    optim/learning_rate_group0=1e-05",
        "    optim/learning_rate_group1=2e-05",  # another group's rate: not the run's lr
        "    train/CrossEntropyLoss=2.998",
        "    train/Perplexity=20.04",
        "    throughput/total_tokens=2,097,152",  # counters, thousands separated: not metrics of learning
        "    System/Peak GPU Memory (MB)=20,487",
        "2025-01-02 10:00:04.000\thost:0\tolmo.train:979\tINFO\t[step=2/500, eta=0:30:00]",
        "    train/CrossEntropyLoss=2.919",
        "2025-01-02 10:00:09.000\thost:0\tolmo.train:979\tINFO\t[eval_step=20/20]",
        "    eval/c4_en/CrossEntropyLoss=3.104",  # the first evaluation set's loss is the run's val/loss
        "    eval/wikitext/CrossEntropyLoss=3.321",
        "2025-01-02 10:00:10.000\thost:0\tolmo.train:375\tINFO\tSaving checkpoint",
        "    train/CrossEntropyLoss=9.9",  # no record before it: not a row
    ])
    assert out == [(1, {"grad_norm": 0.237}), (1, {"lr": 1e-05}), (1, {"loss": 2.998}), (1, {"ppl": 20.04}),
                   (2, {"loss": 2.919}), (2, {"val/loss": 3.104}), (2, {"val/wikitext/loss": 3.321})]


def test_a_running_average_so_far_is_the_loss():
    out, _ = ext(["Epoch 0, Step 25, total used time 7.18 (s), avg loss so far is 0.1098",
                  "Epoch 0, Step 50, total used time 14.06 (s), avg loss so far is 0.0823"])
    assert out == [(25, {"loss": 0.1098}), (50, {"loss": 0.0823})]


def test_ms_swift_dicts_take_their_step_from_global_step_of_max_steps():
    out, _ = ext([
        "{'loss': 1.23456, 'acc': 0.65, 'grad_norm': 2.3, 'learning_rate': 1e-05, 'epoch': 0.01, "
        "'global_step/max_steps': '10/1000', 'percentage': '1.00%', 'elapsed_time': '1m 2s'}",
        "{'loss': 1.13456, 'grad_norm': 2.1, 'learning_rate': 2e-05, 'epoch': 0.02, 'global_step/max_steps': '20/1000'}",
    ])
    assert [s for s, _ in out] == [10, 20] and out[1][1]["loss"] == 1.13456


def test_litgpt_loss_train_and_val_at_the_optimizer_step():
    out, _ = ext([
        "Epoch 1 | iter 100 step 25 | loss train: 2.345, val: n/a | iter time: 123.45 ms (step)",
        "Epoch 1 | iter 200 step 50 | loss train: 2.145, val: 2.100 | iter time: 120.00 ms (step)",
    ])
    assert out == [(25, {"loss": 2.345}), (50, {"loss": 2.145, "val/loss": 2.1})]


def test_a_custom_loops_bar_with_the_epoch_in_its_postfix_continues_across_epochs():
    out, _ = ext([
        "100%|##########| 391/391 [00:20<00:00, 19.2it/s, epoch=1, loss=1.52, acc=0.45]",
        " 50%|#####     | 196/391 [00:10<00:10, 19.2it/s, epoch=2, loss=1.30, acc=0.52]",
        "100%|##########| 391/391 [00:20<00:00, 19.2it/s, epoch=2, loss=1.12, acc=0.60]",
    ])
    assert out == [(391, {"loss": 1.52, "acc": 0.45}), (587, {"loss": 1.30, "acc": 0.52}), (782, {"loss": 1.12, "acc": 0.60})]


def test_a_bar_that_starts_again_each_epoch_continues_the_run_and_an_eval_bar_does_not_restart_it():
    lines = []
    for epoch in range(3):
        lines += [f"{i}%|##   | {i}/100 [00:01<00:02, 50.0it/s, loss={1.0 / (epoch + 1) - i / 1000:.3f}]" for i in (50, 100)]
        lines.append("100%|#####| 20/20 [00:01<00:00, 20.0it/s, val_loss=0.5]")  # an evaluation bar in between
    out, x = ext(lines)
    assert [s for s, _ in out] == [50, 100, 150, 200, 250, 300]
    assert out[2] == (150, {"loss": 0.45})
    part = MetricExtractor()  # a checkpoint in the middle of the second epoch continues the same way
    before = part.extract_many(lines[:4])
    resumed = MetricExtractor()
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))
    assert before + resumed.extract_many(lines[4:]) + resumed.flush() == out


@pytest.mark.parametrize("lines, steps", [
    # a step count that starts again after each "Epoch N" line follows the previous epoch's last step
    (["Epoch 1", "Step 100 | loss 0.5", "Step 200 | loss 0.4", "Epoch 2", "Step 100 | loss 0.3"], [100, 200, 301]),
    # "Batch i/n" lines under "Epoch e/E": 1-based epochs of n batches
    (["Epoch 1/2", "Batch 100/200, Loss: 0.5", "Batch 200/200, Loss: 0.4", "Epoch 2/2", "Batch 100/200, Loss: 0.3"],
     [100, 200, 300]),
    # a step that runs on across the epoch lines is the run's own
    (["Epoch 1", "step: 100, loss: 0.5", "Epoch 2", "step: 300, loss: 0.3", "step: 400, loss: 0.2"], [100, 300, 400]),
])
def test_step_lines_under_epoch_lines(lines, steps):
    out, x = ext(lines)
    assert [s for s, _ in out] == steps and x.dropped == 0


def test_a_captured_stream_keeps_one_finished_bar_per_epoch_and_each_is_an_epoch():
    # runwatch pipe (and a log file's last \r segment) keeps a redrawn bar's last state: one 100/100 line per epoch;
    # the same values printed twice are one bar
    out, x = ext([
        "100%|##########| 100/100 [00:10<00:00, 9.5it/s, loss=0.593]",
        "100%|##########| 100/100 [00:10<00:00, 9.4it/s, loss=0.593]",
        "100%|##########| 20/20 [00:01<00:00, 19.5it/s, val_loss=0.55]",
        "100%|##########| 100/100 [00:10<00:00, 9.4it/s, loss=0.493]",
        "100%|##########| 100/100 [00:10<00:00, 9.4it/s, loss=0.393]",
    ])
    assert [(s, m.get("loss")) for s, m in out if "loss" in m] == [(100, 0.593), (200, 0.493), (300, 0.393)]


def test_printed_dicts_take_the_step_their_line_or_their_training_dict_gives():
    out, _ = ext([
        "step 100: {'loss': 0.5, 'lr': 0.001}",  # a step before the dict
        "Result for train_fn_00000: {'loss': 0.45, 'training_iteration': 150, 'time_this_iter_s': 1.2}",  # Ray Tune
    ])
    assert [s for s, _ in out] == [100, 150]
    out, _ = ext([  # the Trainer's evaluation dict at the step of the training dict with its epoch
        "{'loss': 0.5, 'grad_norm': 1.2, 'learning_rate': 2e-05, 'epoch': 0.5}",
        "{'eval_loss': 0.45, 'eval_runtime': 1.2, 'eval_samples_per_second': 100.0, 'epoch': 0.5}",
        "{'loss': 0.4, 'grad_norm': 1.1, 'learning_rate': 1e-05, 'epoch': 1.0}",
    ])
    assert [(s, "val/loss" in m) for s, m in out] == [(0, False), (0, True), (1, False)]
    # an HPO trial's parameters are settings, not metrics
    out, _ = ext(['[I 2024-01-01 10:00:00,000] Trial 0 finished with value: 0.123 and parameters: {"lr": 0.001}.'])
    assert out == []


def test_tf_object_detection_api_losses_at_the_step_line_before_them():
    out, _ = ext([
        "I0501 10:00:00.000000 140000 model_lib_v2.py:705] Step 100 per-step time 0.500s",
        "I0501 10:00:00.000000 140000 model_lib_v2.py:708] {'Loss/classification_loss': 0.5, "
        "'Loss/localization_loss': 0.3, 'Loss/total_loss': 1.2, 'learning_rate': 0.01}",
        "I0501 10:01:00.000000 140000 model_lib_v2.py:705] Step 200 per-step time 0.500s",
        "I0501 10:01:00.000000 140000 model_lib_v2.py:708] {'Loss/total_loss': 1.0, 'learning_rate': 0.02}",
    ])
    assert [s for s, _ in out] == [100, 200]
    assert out[0][1]["loss"] == 1.2 and out[0][1]["loss/classification_loss"] == 0.5 and out[1][1] == {"loss": 1.0, "lr": 0.02}


def test_skorch_print_log_table():
    out, _ = ext([
        "  epoch    train_loss    valid_acc    valid_loss     dur",
        "-------  ------------  -----------  ------------  ------",
        "      1        0.6905       0.5000        0.6901  0.1234",
        "      2        0.6805       0.5500        0.6801  0.1134",
    ])
    assert out == [(1, {"loss": 0.6905, "val/acc": 0.5, "val/loss": 0.6901}),
                   (2, {"loss": 0.6805, "val/acc": 0.55, "val/loss": 0.6801})]


def test_a_step_beyond_int64_is_dropped_not_passed_on():
    out, x = ext(["step 99999999999999999999999 loss=0.5", "step 9223372036854775808 loss=0.4", "step 5 loss=0.3"])
    assert out == [(5, {"loss": 0.3})] and x.dropped == 2


def test_a_printed_scalar_tensor_is_its_value():
    out, _ = ext([
        "Epoch [1/10], Step [100/600], Loss: tensor(2.3012, device='cuda:0', grad_fn=<NllLossBackward0>)",
        "step 700 loss: tensor([0.5]) acc: tensor(0.75, dtype=torch.float64)",
        "step 800 loss: tensor(nan, device='cuda:0', grad_fn=<NllLossBackward0>)",
        "step 900 labels: tensor([1, 0, 1]) loss: tensor(-1.5e-03)",
    ])
    assert out[:2] == [(100, {"loss": 2.3012}), (700, {"loss": 0.5, "acc": 0.75})]
    assert out[2][0] == 800 and math.isnan(out[2][1]["loss"])
    assert out[3] == (900, {"loss": -0.0015})  # a tensor of several values is no value


def test_tutorial_and_model_zoo_loops():
    # PyTorch's CIFAR-10 tutorial: [epoch, batch] with the batch counted within the epoch
    out, _ = ext(["[1,  2000] loss: 2.234", "[1,  4000] loss: 1.912", "[2,  2000] loss: 1.601"])
    assert [v["loss"] for _, v in out] == [2.234, 1.912, 1.601] and out[0][0] < out[1][0] < out[2][0]
    # PyTorch-GAN: the step is epoch * batches + batch
    out, _ = ext(["[Epoch 2/200] [Batch 10/938] [D loss: 0.693147] [G loss: nan]"])
    assert out[0][0] == 2 * 938 + 10 and out[0][1]["d_loss"] == 0.693147 and math.isnan(out[0][1]["g_loss"])
    # CycleGAN / pix2pix: every loss after the parenthesis
    out, _ = ext(["(epoch: 1, iters: 100, time: 0.105, data: 0.002) G_GAN: 1.234 G_L1: 30.123 D_real: 0.512 D_fake: 0.634"])
    assert out == [(100, {"g_gan": 1.234, "g_l1": 30.123, "d_real": 0.512, "d_fake": 0.634})]
    # darknet (AlexeyAB's and pjreddie's)
    out, _ = ext([" 1000: 0.512345, 0.602345 avg loss, 0.001000 rate, 2.345 seconds, 64000 images, 12.3 hours left",
                  " 1010: -nan, -nan avg, 0.001000 rate, 2.345 seconds, 64640 images"])
    assert out[0] == (1000, {"loss": 0.512345, "avg_loss": 0.602345, "lr": 0.001, "step_time": 2.345})
    assert out[1][0] == 1010 and math.isnan(out[1][1]["loss"])
    # TensorFlow tutorials
    out, _ = ext(["Average loss at step  2000 :  4.372", "Minibatch loss at step 2500: 1.234", "Validation loss at step 2500: 1.5"])
    assert out == [(2000, {"loss": 4.372}), (2500, {"loss": 1.234}), (2500, {"val/loss": 1.5})]


@pytest.mark.parametrize("prefix", ["[default0]:", "[rank0]: ", "gpu250: ", "(RayTrainWorker pid=1234, ip=10.0.0.1) ",
                                    "trainer-1  | ", "[pod/train-0/main] "])
def test_tutorial_loops_behind_a_launchers_prefix(prefix):
    assert ext([prefix + "[1,  2000] loss: 2.234"])[0] == [(2000, {"loss": 2.234})]
    darknet = prefix + " 1000: 0.51, 0.60 avg loss, 0.001 rate, 2.3 seconds, 64000 images"
    assert ext([darknet])[0] == [(1000, {"loss": 0.51, "avg_loss": 0.6, "lr": 0.001, "step_time": 2.3})]


# -- framework formats audited against the frameworks' own source (lines written here, in each format) ----------


def test_trainer_dicts_with_values_printed_as_strings():
    # transformers' ProgressCallback.on_log / PrinterCallback (trainer_callback.py) format floats as f"{v:.4g}"
    out, _ = ext([
        " 10%|█         | 100/1000 [00:50<07:30,  2.00it/s]",
        "{'loss': '0.5123', 'grad_norm': '2.345', 'learning_rate': '4.5e-05', 'epoch': '0.3'}",
        "{'eval_loss': '0.4987', 'eval_accuracy': '0.8123', 'eval_runtime': '5.123', 'epoch': '0.3'}",
        "{'train_runtime': '500.1', 'train_samples_per_second': '32', 'train_loss': '0.45', 'epoch': '3'}",
        "{'loss': 'nan', 'grad_norm': 'nan', 'learning_rate': '4.4e-05', 'epoch': '0.31'}",
    ])
    assert out[:2] == [(100, {"loss": 0.5123, "grad_norm": 2.345, "lr": 4.5e-05, "epoch": 0.3}),
                       (100, {"val/loss": 0.4987, "val/acc": 0.8123, "val/runtime": 5.123})]
    assert len(out) == 3 and out[2][0] == 101 and math.isnan(out[2][1]["loss"]) and out[2][1]["lr"] == 4.4e-05
    # a string that is not a number alone is no value: ms-swift's 'global_step/max_steps': '10/1000' gives the step
    out, _ = ext(["{'loss': '1.5', 'elapsed_time': '5s', 'percentage': '1.00%', 'global_step/max_steps': '10/1000'}"])
    assert out == [(10, {"loss": 1.5})]


def test_fairseq_json_log_format():
    # fairseq/logging/progress_bar.py JsonProgressBar: stats as strings, "update" is the epoch's fraction
    out, _ = ext([
        ('2024-05-01 09:12:44 | INFO | train_inner | {"epoch": 2, "update": 1.152, "loss": "5.12", "nll_loss": "3.91", '
         '"ppl": "15.03", "wps": "120830", "num_updates": "2270", "lr": "0.0005", "gnorm": "0.71", "loss_scale": "16"}'),
        ('2024-05-01 09:13:44 | INFO | valid | {"epoch": 2, "valid_loss": "4.98", "valid_nll_loss": "3.8", '
         '"valid_ppl": "13.93", "valid_num_updates": "2300", "valid_best_loss": "4.98"}'),
        ('2024-05-01 09:13:45 | INFO | train | {"epoch": 2, "train_loss": "5.2", "train_ppl": "15.9", '
         '"train_num_updates": "2300", "train_lr": "0.0005"}'),
    ])
    assert out == [
        (2270, {"loss": 5.12, "nll_loss": 3.91, "ppl": 15.03, "wps": 120830.0, "lr": 0.0005, "grad_norm": 0.71,
                "loss_scale": 16.0}),
        (2300, {"val/loss": 4.98, "val/nll_loss": 3.8, "val/ppl": 13.93}),
    ]  # the train summary (the epoch's averages) is skipped, as in the simple format


@pytest.mark.parametrize("line", [
    # DeepSpeed's config print (runtime/config.py: a dot leader, then the section's dict)
    ("[2024-05-01 10:00:00,123] [INFO] [config.py:1000:print]   fp16 ......................... {'enabled': True, "
     "'auto_cast': False, 'loss_scale': 0, 'initial_scale_power': 16, 'loss_scale_window': 1000, 'min_loss_scale': 1}"),
    ("[2024-05-01 10:00:00,000] [INFO] [config.py:988:print]   optimizer_params ............. {'lr': 0.0002, "
     "'betas': [0.9, 0.95], 'eps': 1e-08, 'weight_decay': 0.1}"),
    ('[2024-05-01 10:00:00,123] [INFO] [config.py:1000:print_user_config]   json = {"train_batch_size": 32, '
     '"optimizer": {"type": "AdamW", "params": {"lr": 0.0002, "weight_decay": 0.0}}}'),
    "{'learning_rate': 0.001, 'batch_size': 32, 'num_epochs': 10, 'optimizer': 'adamw'}",
    '{"lr": 0.001, "batch_size": 64, "epochs": 20, "dropout": 0.1, "loss": "mse"}',
    "{'model': 'resnet18', 'lr': 0.1, 'momentum': 0.9, 'pretrained': True}",
    "Hyperparameters {'lr': 0.0003, 'warmup_steps': 100}",
    "best_params = {'lr': 0.003, 'weight_decay': 1e-5}",
    "Best trial config: {'lr': 0.0012, 'batch_size': 32}",
    "{'loss_scale': 0, 'enabled': True}",
])
def test_settings_dicts_printed_at_startup_are_not_metrics(line):
    assert ext([line])[0] == []


def test_torchtitan_step_and_validate_lines():
    # torchtitan/components/metrics.py MetricsProcessor.log / log_validation (colours stripped by the monitor)
    out, _ = ext([
        ("[rank0]:[titan] 2025-05-01 10:00:00,000 - root - INFO - step: 10  loss:  7.1234  grad_norm:  1.2345  "
         "memory: 12.34GiB(15.60%)  tps: 12,345  tflops: 123.45  mfu: 12.34%"),
        "[rank0]:[titan] 2025-05-01 10:00:09,000 - root - INFO - validate step: 20  loss:  6.9000  memory: 12.34GiB(15.60%)  tps: 22,345",
        "2024-05-01 10:00:00 INFO Validation step 400: loss 2.1",
    ])
    assert out == [(10, {"loss": 7.1234, "grad_norm": 1.2345}), (20, {"val/loss": 6.9}), (400, {"val/loss": 2.1})]


def test_mmcv_evaluation_lines_and_an_epoch_written_as_a_fraction():
    # mmcv/runner/hooks/logger/text.py TextLoggerHook: "Epoch(val) [4][625]\t..." / "Iter(val) [500]\t..." (no total)
    out, _ = ext([
        ("2021-03-01 10:00:00,000 - mmdet - INFO - Epoch [2][7330/7330]\tlr: 1.988e-03, eta: 0:00:00, time: 0.612, "
         "data_time: 0.051, memory: 3657, loss: 1.7825"),
        ("2021-03-01 11:00:00,000 - mmdet - INFO - Epoch(val) [2][625]\tbbox_mAP: 0.2140, bbox_mAP_50: 0.3870, "
         "bbox_mAP_copypaste: 0.214 0.387 0.215 0.121 0.235 0.280"),
    ])
    assert out[1] == (14660, {"val/bbox_map": 0.214, "val/bbox_map_50": 0.387})  # copypaste: six values, not one
    out, _ = ext([
        "2021-03-01 10:00:00,000 - mmseg - INFO - Iter [16000/160000]\tlr: 9.1e-03, eta: 1 day, 1:02:03, loss: 2.7825",
        "2021-03-01 10:10:00,000 - mmseg - INFO - Iter(val) [500]\taAcc: 0.8012, mIoU: 0.4123, mAcc: 0.5234",
    ])
    assert out == [(16000, {"lr": 0.0091, "loss": 2.7825}), (16000, {"val/aacc": 0.8012, "val/miou": 0.4123, "val/macc": 0.5234})]
    # forks that print the epoch out of the total: "Epoch [4/12][100/1000]" (epochs count from 1)
    out, _ = ext(["2021-03-01 10:00:00,000 - mmdet - INFO - Epoch [4/12][100/1000]\tlr: 2.0e-02, time: 0.500, loss: 1.5000"])
    assert out == [(3100, {"lr": 0.02, "step_time": 0.5, "loss": 1.5})]


def test_opennmt_validation_report_lines():
    # onmt/utils/report_manager.py ReportMgr._report_epoch / statistics.py Statistics.output
    out, _ = ext([
        ("[2024-05-01 10:00:00,123 INFO] Step 100/ 1000; acc: 10.0; ppl: 500.0; xent: 6.2; lr: 0.00100; "
         "sents:   12345; bsz: 1234/1456/ 45; 12345/23456 tok/s;     42 sec;"),
        "[2024-05-01 10:01:00,123 INFO] Validation perplexity: 450.12",
        "[2024-05-01 10:01:00,123 INFO] Validation accuracy: 12.34",
        "Train perplexity: 480.1",  # the epoch's average: not read
        "Best Validation perplexity: 400.0",
    ])
    assert out == [(100, {"acc": 10.0, "ppl": 500.0, "loss": 6.2, "lr": 0.001}), (100, {"val/ppl": 450.12}),
                   (100, {"val/acc": 12.34})]


def test_pytorch_imagenet_example_meters_and_evaluation_summaries():
    # pytorch/examples imagenet/main.py: ProgressMeter.display (AverageMeter "name val (avg)") and display_summary
    out, _ = ext([
        ("Epoch: [1][  10/5005]\tTime  0.512 ( 0.910)\tData  0.003 ( 0.250)\tLoss 6.9100e+00 (6.9123e+00)\t"
         "Acc@1   0.00 (  0.14)\tAcc@5   0.39 (  0.57)"),
        "Test: [ 10/196]\tTime  0.312 ( 0.450)\tLoss 1.1234e+00 (1.2345e+00)\tAcc@1  75.00 ( 72.00)\tAcc@5  92.00 ( 91.00)",
        " *   Acc@1 71.234 Acc@5 90.123",
    ])  # the averages in parentheses and the per-batch Test lines are not read
    assert out == [(5015, {"loss": 6.91, "step_time": 0.512, "data_time": 0.003, "acc1": 0.0, "acc5": 0.39}),
                   (5015, {"val/acc1": 71.234, "val/acc5": 90.123})]
    # DeiT / MAE engine.py evaluate(): "* Acc@1 ... Acc@5 ... loss ..."
    assert ext(["* Acc@1 81.800 Acc@5 95.600 loss 0.800"])[0] == [(0, {"val/acc1": 81.8, "val/acc5": 95.6, "val/loss": 0.8})]
    assert ext(["* Acc@1 is the top-1 accuracy", "  * Acc@1 76.130 Acc@5 92.862 (best 77.0)"])[0] == []


def test_megatron_throughput_per_gpu():
    # megatron/training/training.py training_log with --log-throughput
    out, _ = ext([(" [2024-05-01 10:00:00] iteration      120/  500000 | consumed samples:        61440 | elapsed time per "
                   "iteration (ms): 1234.5 | throughput per GPU (TFLOP/s/GPU): 150.2 | learning rate: 1.500000E-04 | "
                   "global batch size:   512 | lm loss: 7.123456E+00 | loss scale: 1.0 | grad norm: 1.234 | "
                   "number of skipped iterations:   0 | number of nan iterations:   0 |")])
    (step, m), = out
    assert step == 120 and m["tflops_per_gpu"] == 150.2 and m["loss"] == 7.123456 and m["lr"] == 1.5e-04
    assert m["grad_norm"] == 1.234 and m["loss_scale"] == 1.0 and m["step_time"] == pytest.approx(1.2345)


def test_a_custom_scripts_table_of_values_per_step():
    # print("step\tloss") then print(f"{step}\t{loss:.6f}") (a shape in this repository's local training-log corpus)
    out, x = ext(["step\tloss", "10\t8.460716", "20\t7.688958", "training done", "30\t7.2"])
    assert out == [(10, {"loss": 8.460716}), (20, {"loss": 7.688958})]  # a line of words ends the table
    out, _ = ext(["epoch,train_loss,val_loss,val_acc", "1,0.9,0.8,0.7", "2,0.8,0.75,", "3,0.7,nan,0.72"])
    assert out[:2] == [(1, {"loss": 0.9, "val/loss": 0.8, "val/acc": 0.7}), (2, {"loss": 0.8, "val/loss": 0.75})]
    assert out[2][0] == 3 and math.isnan(out[2][1]["val/loss"])
    out, _ = ext(["iter  loss      lr", "100   2.3456    0.001", "Saved checkpoint at 200", "300   2.1    0.0009"])
    assert out == [(100, {"loss": 2.3456, "lr": 0.001})]
    # a column that is no metric leaves the table unread (fastai's "time" table has its own reader)
    assert ext(["epoch\tloss\tseconds", "1\t0.5\t12.3"])[0] == []
    assert ext(["epoch,step,train_loss", "0,49,0.5"])[0] == []  # Lightning's metrics.csv: "step" is no metric
    _, y = ext(["step\tloss"])
    z = MetricExtractor()
    z.load_state_dict(json.loads(json.dumps(y.state_dict())))
    assert z.extract("40\t6.9") == [(40, {"loss": 6.9})]


def test_tensorflow_estimator_training_and_evaluation_lines():
    # tensorflow_estimator basic_session_run_hooks.LoggingTensorHook and estimator._write_dict_to_summary
    out, _ = ext([
        "INFO:tensorflow:loss = 0.6931, step = 1",
        "INFO:tensorflow:global_step/sec: 12.345",
        "INFO:tensorflow:loss = 0.4123, step = 101 (8.101 sec)",
        "INFO:tensorflow:Saving dict for global step 300: accuracy = 0.91, global_step = 300, loss = 0.25",
    ])  # the evaluation's dict was read as the training loss before
    assert out == [(1, {"loss": 0.6931}), (101, {"loss": 0.4123}), (300, {"val/acc": 0.91, "val/loss": 0.25})]


def test_clu_logging_writer_collections_name_the_phase():
    # clu/metric_writers/logging_writer.py: logging.info("[%d]%s %s", step, " collection=<name>", "k=v, ...")
    out, _ = ext([
        "I0501 10:00:00.123 140000 logging_writer.py:48] [1000] collection=train accuracy=0.512, learning_rate=0.001, loss=2.35",
        "I0501 10:05:00.123 140000 logging_writer.py:48] [2000] collection=training_eval accuracy=0.55, loss=2.1",
        "I0501 10:06:00.123 140000 logging_writer.py:48] [3000] collection=inference accuracy=0.57",
    ])  # a collection whose phase is unknown is not read
    assert out == [(1000, {"acc": 0.512, "lr": 0.001, "loss": 2.35}), (2000, {"val/acc": 0.55, "val/loss": 2.1})]


@pytest.mark.parametrize("line", [
    "Namespace(arch='resnet50', batch_size=256, epochs=90, lr=0.1, momentum=0.9, weight_decay=0.0001, loss_scale=128.0)",
    "2024-05-01 | INFO | fairseq_cli.train | Namespace(no_progress_bar=False, log_interval=100, lr=[0.0005], clip_norm=0.0)",
    "learning_rate: 0.001",
    "  lr .............................................. 0.00015",  # Megatron's and DeepSpeed's argument print
    "  loss_scale ...................................... None",
    "learning_rate=5e-05,",  # TrainingArguments(...) printed one field a line
    "lr=0.001 batch_size=32 epochs=10 seed=42",
    "optimizer: AdamW (lr=0.0003, betas=(0.9, 0.999), weight_decay=0.1)",
    "Python 3.11.4 torch 2.1.0+cu121 CUDA 12.1",
    "transformers version 4.40.1",
    "Connecting to 10.0.0.12:29500",
    "MASTER_ADDR=192.168.1.5 MASTER_PORT=29500",
    "2024-05-01 10:00:00.123456",
    "  5%|▌         | 50/1000 [00:10<03:10,  5.00it/s]",
    "Loading checkpoint shards: 100%|██████████| 2/2 [00:05<00:00,  2.50s/it]",
    "Map: 100%|██████████| 1000/1000 [00:00<00:00, 5000.00 examples/s]",
    "  Total optimization steps = 375",
    "Epoch 00005: reducing learning rate of group 0 to 1.0000e-04.",
    "Epoch 1: val_loss improved from inf to 0.25000, saving model to best.h5",
    "Epoch 0, global step 938: 'val_loss' reached 0.13000 (best 0.13000), saving model to '/ckpt/epoch=0-step=938.ckpt'",
    "[2024-05-01 10:00:00,000] [INFO] [config.py:988:print]   gradient_clipping ............ 1.0",
    "best val loss so far: 0.2345 (epoch 7)",
])
def test_startup_prints_versions_addresses_and_bars_without_values_are_not_metrics(line):
    assert ext([line])[0] == []


def test_nemo2_progress_printer_lines_take_the_global_step():
    # nemo/lightning/pytorch/callbacks/progress_printer.py ProgressPrinter.format_string ("{prefix} | key: value ...")
    out, _ = ext([
        ("Training epoch 0, iteration 99/99 | lr: 3e-05 | global_batch_size: 32 | global_step: 99 | "
         "reduced_train_loss: 5.9 | train_step_timing in s: 1.2 | consumed_samples: 3200 | val_loss: 6.1"),
        "Validation: iteration 5/10",
        "Training epoch 1, iteration 49/99 | lr: 4.5e-05 | global_step: 149 | reduced_train_loss: 5.5",
    ])  # the iteration counts within the epoch: the second line was dropped as a step that went back
    assert out == [
        (99, {"lr": 3e-05, "global_batch_size": 32.0, "reduced_train_loss": 5.9, "step_time": 1.2,
              "consumed_samples": 3200.0, "val/loss": 6.1}),
        (149, {"lr": 4.5e-05, "reduced_train_loss": 5.5}),
    ]


def test_transfer_learning_tutorial_phase_lines_after_an_epoch_line():
    # PyTorch's "finetuning torchvision models" tutorial: the epoch on its own line, then one line per phase
    out, _ = ext(["Epoch 0/24", "----------", "train Loss: 0.6120 Acc: 0.6680", "val Loss: 0.2543 Acc: 0.9020", "",
                  "Epoch 1/24", "----------", "train Loss: 0.4310 Acc: 0.8116", "val Loss: 0.2217 Acc: 0.9216"])
    assert out == [(0, {"loss": 0.612, "acc": 0.668}), (0, {"val/loss": 0.2543, "val/acc": 0.902}),
                   (1, {"loss": 0.431, "acc": 0.8116}), (1, {"val/loss": 0.2217, "val/acc": 0.9216})]


def test_paddle_is_values_and_batch_ids():
    # PaddlePaddle's examples: "epoch: {}, batch_id: {}, loss is: {}, acc is: {}"
    out, _ = ext(["epoch: 0, batch_id: 100, loss is: 0.9012, acc is: 0.7031",
                  "epoch: 0, batch_id: 200, loss is: 0.5103, acc is: 0.8281"])
    assert out == [(100, {"loss": 0.9012, "acc": 0.7031}), (200, {"loss": 0.5103, "acc": 0.8281})]


def test_phase_and_epoch_lines_of_point_cloud_repositories():
    # DGCNN's "Train %d, loss: %.6f, train acc: %.6f, train avg acc: %.6f" and its Test line
    out, _ = ext(["Train 3, loss: 1.980094, train acc: 0.742761, train avg acc: 0.600895",
                  "Test 3, loss: 1.700002, test acc: 0.801459, test avg acc: 0.712233"])
    assert out == [(3, {"loss": 1.980094, "acc": 0.742761}), (3, {"test/loss": 1.700002, "test/acc": 0.801459})]


def test_fraction_epochs_counting_from_zero_and_batches_of_a_total():
    out, _ = ext(["Epoch [0/50] Batch [0/200] D_loss: -5.6973 G_loss: 5.6968",
                  "Epoch [0/50] Batch [100/200] D_loss: -4.2680 G_loss: 3.7673",
                  "Epoch [1/50] Batch [0/200] D_loss: -2.1000 G_loss: 2.5000"])
    assert [s for s, _ in out] == [0, 100, 200]  # epoch 0 is the first: before, epochs 0 and 1 shared their steps
    assert out[0][1] == {"d_loss": -5.6973, "g_loss": 5.6968}
    one_based, _ = ext(["Epoch [1/10], Batch [100/600], Loss: 0.50", "Epoch [2/10], Batch [100/600], Loss: 0.40"])
    assert one_based == [(100, {"loss": 0.5}), (700, {"loss": 0.4})]


def test_end_of_epoch_line_gives_the_epoch_of_the_summary_after_it():
    # the CycleGAN/pix2pix repository's epoch line, then a script's own summary of that epoch
    out, _ = ext(["End of epoch 4 / 100 \t Time Taken: 95 sec", "Generator Loss: 3.8441, Discriminator Loss: 0.2864"])
    assert out == [(4, {"generator_loss": 3.8441, "discriminator_loss": 0.2864})]


def test_an_epoch_header_with_its_learning_rate_gives_the_epoch_of_the_batch_lines():
    out, _ = ext(["Epoch 1/2 (lr=0.01000)", "  Batch 0/300, Loss: 0.6176", "  Batch 50/300, Loss: 0.4012",
                  "Epoch 2/2 (lr=0.00100)", "  Batch 0/300, Loss: 0.3100"])
    assert out == [(0, {"loss": 0.6176}), (50, {"loss": 0.4012}), (300, {"loss": 0.31})]


def test_sentences_of_a_script_name_the_phase_and_end_values_with_a_full_stop():
    out, _ = ext(["Epoch 0 trained with loss: 0.0197. The running time is 4073.9.",
                  "Epoch 0 evaluated with loss: 0.0034, dice score: 0.71. The running time is 713.2."])
    assert out == [(0, {"loss": 0.0197}), (0, {"val/loss": 0.0034})]
    cut, _ = ext(["eta: 2:28:37 loss: 0. step 5", "loss: 0.5. next"])  # a cut-off value, a full stop before no sentence
    assert cut == []


def test_a_loop_that_prints_only_its_mean_training_loss():
    out, _ = ext(["2024-06-17 16:43:11,171 - INFO - Epoch: 1, Avg_loss: 0.507, Duration: 3.65s",
                  "Epoch 2 | loss: 0.40 | average loss: 0.45", "epoch 3, val avg loss: 0.52"])
    assert out == [(1, {"loss": 0.507}), (2, {"loss": 0.4}), (3, {"val/loss": 0.52})]


def test_pipe_separated_epoch_and_batch_of_a_total():
    out, _ = ext(["Epoch  1 | Batch 100/900 | Time/Batch(ms) 691.84 | Train Loss 0.7241",
                  "Epoch  2 | Batch 100/900 | Time/Batch(ms) 701.10 | Train Loss 0.6500"])
    assert out == [(100, {"loss": 0.7241}), (1000, {"loss": 0.65})]


def test_an_epoch_summary_after_its_batch_lines_is_placed_where_the_batches_got_to():
    out, x = ext(["2025-05-17 13:50:48 - clf - INFO - Epoch 1, Batch 0, Loss: 2.5930",
                  "2025-05-17 13:50:58 - clf - INFO - Epoch 1, Batch 100, Loss: 2.5580",
                  "2025-05-17 13:55:31 - clf - INFO - Epoch 1 - Validation Accuracy: 0.7876"])
    assert out[-1] == (100, {"val/acc": 0.7876}) and x.dropped == 0  # at step 1 it went back, and was dropped


def test_the_phase_word_may_start_the_message_after_a_logging_prefix():
    out, _ = ext(["2019-08-19 14:49:47.783573: Step [7]  train Loss : 2.02, training accuracy :  0.31",
                  "2024-01-01 10:00:00 - INFO - trainer - Validation | step 7 | total loss: 0.51 | acc: 0.83"])
    assert out == [(7, {"loss": 2.02, "acc": 0.31}), (7, {"val/loss": 0.51, "val/acc": 0.83})]


def test_lerobot_training_lines_with_rounded_step_counters():
    # LeRobot's MetricsTracker line: counters rounded by format_big_number from 1,000 on ("step:1K", "step:2K")
    line = "INFO 2025-01-01 10:00:00 ot_train.py:300 step:{} smpl:{} ep:40 epch:1.01 loss:{} grdn:49.8 lr:1.0e-05 updt_s:0.504 data_s:0.083"
    lines = [line.format(s, "13K", v) for s, v in (("400", 2.2), ("600", 1.8), ("800", 1.5), ("1K", 1.2), ("1K", 1.0),
                                                   ("1K", 0.9), ("2K", 0.7))]
    out, _ = ext(lines)
    assert [s for s, _ in out] == [400, 600, 800, 1000, 1200, 1400, 1600]  # the rhythm of 200, as each rounds
    assert out[0][1] == {"loss": 2.2, "grad_norm": 49.8, "lr": 1e-05, "step_time": 0.504, "data_time": 0.083}
    jump, _ = ext([line.format("800", "1K", 1.5), line.format("5K", "1K", 1.0)])  # off the rhythm: the printed value
    assert [s for s, _ in jump] == [800, 5000]


def test_a_phase_header_names_the_keys_of_its_segment():
    """Scripts print each phase's metrics under its name: before, the validation values repeated the training keys
    (``loss``, ``acc``) and were dropped as repeats."""
    out, _ = ext([
        "[Epoch 1] Train: loss=0.52, acc=0.81 | Val: loss=0.61, acc=0.77",
        "Epoch 2 Train: Loss: 0.45 Acc: 0.85 Val: Loss: 0.58 Acc: 0.79",
        "Epoch 3 | Test: loss=0.60 | lr=0.001",  # the header's segment ends at "|"
        "Validation: 100%|##########| 10/10 [00:01<00:00, 9.8it/s]",  # a progress bar: no header
    ])  # fmt: skip
    assert out[0] == (1, {"loss": 0.52, "acc": 0.81, "val/loss": 0.61, "val/acc": 0.77})
    assert out[1] == (2, {"loss": 0.45, "acc": 0.85, "val/loss": 0.58, "val/acc": 0.79})
    assert out[2][1]["test/loss"] == 0.6 and out[2][1]["lr"] == 0.001


def test_pytorch_nlp_tutorials_progress_lines():
    """The official tutorials' running loss: names classification (with a NaN, as a real thread pasted it),
    names generation, and seq2seq translation (time so far, time left)."""
    out, _ = ext(["5000 5% (0m 12s) 2.4177 Coelho / Portuguese ✓", "35000 35% (1m 4s) nan Nam / Russian ✗ (Korean)"])
    assert out[0] == (5000, {"loss": 2.4177}) and out[1][0] == 35000 and math.isnan(out[1][1]["loss"])
    assert ext(["0m 20s (5000 5%) 2.9023", "0m 53s (- 6m 3s) (10000 13%) 2.2862"])[0] == [
        (5000, {"loss": 2.9023}), (10000, {"loss": 2.2862})]
    assert ext(["Downloaded 50% (3m 2s) of the file"])[0] == []


def test_keras_1_epoch_summaries_paddle_epoch_fractions_and_prefixed_test_lines():
    # Keras 1 with verbose=2: the epoch's time and values under its "Epoch n/N" line, no batch count
    out, _ = ext(["Epoch 1/10", "95s - loss: 2.4940 - acc: 0.2269 - val_loss: 2.4267 - val_acc: 0.3675",
                  "Epoch 2/10", "90s - loss: 1.8297 - acc: 0.4346 - val_loss: 2.0373 - val_acc: 0.4125"])
    assert [(s, m["loss"], m["val/loss"]) for s, m in out] == [(1, 2.494, 2.4267), (2, 1.8297, 2.0373)]
    # "Epoch 3[16/5011]:" counts within the epoch, also after lines went missing (epoch 18 cut short, then 19's last)
    lines = [f"Epoch {e}[{b}/5011]: loss:0.05, lr:0.01000, batch time:0.28" for e in (17, 18) for b in (16, 1616, 3216, 4816)]
    lines = lines[:6] + ["Epoch 19[4816/5011]: loss:0.02, lr:0.01000", "Epoch 20[16/5011]: loss:0.02, lr:0.01000"]
    steps = [s for s, _ in ext(lines)[0]]
    assert steps[-2:] == [18 * 5011 + 4816, 19 * 5011 + 16] and steps == sorted(steps)
    # a held-out line after a time stamp and a marker
    out, _ = ext(["[2026-09-10 15:23:28] Epoch 010/20  train_loss=0.5567  lr=2.25e-04",
                  "[2026-09-10 15:23:29]   >> Test  loss=0.5657  acc=97.34%"])
    assert out == [(10, {"loss": 0.5567, "lr": 0.000225}), (10, {"test/loss": 0.5657, "test/acc": 0.9734})]


def test_quoted_keys_and_values_outside_a_dict():
    """PaddleDetection's static-graph logger prints its stats quoted: ``'loss': '24.061707'``, then ``'loss': 'nan'``."""
    out, _ = ext(["2022-03-09 15:20:28,459-INFO: iter: 0, lr: 0.000083, 'loss': '24.061707', eta: 0:02:34, ips: 5168.58164 images/sec",
                  "2022-03-09 15:20:50,962-INFO: iter: 20, lr: 0.000085, 'loss': 'nan', eta: 5 days, 18:42:12"])
    assert out[0] == (0, {"lr": 8.3e-05, "loss": 24.061707}) and out[1][0] == 20 and math.isnan(out[1][1]["loss"])


def test_mxnet_module_fit_lines_and_its_cross_entropy_metric():
    """MXNet's Speedometer and Module.fit: ``cross-entropy=`` is the loss they print; ``Train-``/``Validation-`` the split."""
    out, _ = ext([
        "INFO:root:Epoch[0] Batch [100]\tSpeed: 1234.56 samples/sec\taccuracy=0.120000\tcross-entropy=2.302585",
        "INFO:root:Epoch[0] Batch [200]\tSpeed: 1234.56 samples/sec\taccuracy=0.220000\tcross-entropy=nan",
        "INFO:root:Epoch[0] Time cost=12.3",
        "INFO:root:Epoch[0] Validation-accuracy=0.600000",
        "INFO:root:Epoch[0] Validation-cross-entropy=1.700000",
    ])
    assert out[0] == (100, {"acc": 0.12, "loss": 2.302585})
    assert out[1][0] == 200 and math.isnan(out[1][1]["loss"])
    assert out[2:] == [(200, {"val/acc": 0.6}), (200, {"val/loss": 1.7})]


def test_gluoncv_epoch_and_batch_in_brackets_with_cross_entropy():
    """``[Epoch 1][Batch 50]``: the batch counts within the epoch (both batch lines of an epoch are read)."""
    out, _ = ext([
        "INFO: [Epoch 0][Batch 0], Speed: 0.926 samples/sec, CrossEntropy=1.83e+00, SmoothL1=3.00e-03, val_AP=0.136",
        "INFO: [Epoch 0][Batch 50], Speed: 0.563 samples/sec, CrossEntropy=9.23e-01, SmoothL1=2.18e-03, val_AP=0.169",
        "INFO: [Epoch 1][Batch 0], Speed: 0.603 samples/sec, CrossEntropy=2.98e-02, SmoothL1=2.81e-03, val_AP=0.299",
    ])
    assert [(s, m["loss"]) for s, m in out] == [(0, 1.83), (50, 0.923), (51, 0.0298)]


@pytest.mark.parametrize(
    ("line", "loss"),
    [
        ("step 5 cross_entropy=2.1 loss=2.5 kl=0.4", 2.5),  # the line's loss wins over a cross-entropy before it
        ("step 5 loss=2.5 xent=2.1", 2.5),
        ("step 5 xent=2.1 acc=0.3", 2.1),
    ],
)
def test_a_cross_entropy_is_the_loss_only_where_no_loss_is_printed(line, loss):
    out, _ = ext([line])
    assert out[0][1]["loss"] == loss


def test_a_policy_entropy_is_not_a_loss():
    out, _ = ext(["step 5 entropy=1.2 loss=0.3", "step 6 entropy=1.1"])
    assert out[0] == (5, {"loss": 0.3})
    assert all("loss" not in m for s, m in out if s == 6)


def test_keras_2_verbose_2_epoch_lines_start_with_a_dash():
    """Keras 2.1-2.2 with verbose=2: " - 80s - loss: ..." under "Epoch 278/300" (and " - 12s 3ms/step - ..." in some)."""
    out, _ = ext([
        "Epoch 00277: val_acc did not improve from 0.10000",
        "Epoch 278/300",
        " - 80s - loss: 14.5063 - acc: 0.1000 - val_loss: 14.5063 - val_acc: 0.1000",
        "Epoch 00278: val_acc did not improve from 0.10000",
        "Epoch 279/300",
        " - 12s 3ms/step - loss: 0.5000 - acc: 0.8000 - val_loss: 0.6000 - val_acc: 0.7000",
    ])
    assert out == [(278, {"loss": 14.5063, "acc": 0.1, "val/loss": 14.5063, "val/acc": 0.1}),
                   (279, {"loss": 0.5, "acc": 0.8, "val/loss": 0.6, "val/acc": 0.7})]


def test_chainer_print_report_table():
    """Chainer's (and pytorch-pfn-extras') PrintReport: reporter names as runwatch's, ``elapsed_time`` skipped,
    an ``iteration`` column beside ``epoch`` as the step."""
    out, _ = ext([
        "epoch       main/loss   validation/main/loss  main/accuracy  validation/main/accuracy  elapsed_time",
        "1           2.46634     2.30259               0.0994882      0.10004                   61.067",
        "2           2.30347     2.30259               0.0998119      0.10004                   121.208",
    ])
    assert out == [
        (1, {"loss": 2.46634, "val/loss": 2.30259, "acc": 0.0994882, "val/acc": 0.10004}),
        (2, {"loss": 2.30347, "val/loss": 2.30259, "acc": 0.0998119, "val/acc": 0.10004}),
    ]
    out, _ = ext([
        "epoch       iteration   train/loss  lr          val/loss    elapsed_time",
        "1           600         0.512       0.1         0.431       30.1",
        "2           1200        0.388       0.1         0.402       60.4",
    ])
    assert out == [(600, {"loss": 0.512, "lr": 0.1, "val/loss": 0.431}), (1200, {"loss": 0.388, "lr": 0.1, "val/loss": 0.402})]


def test_yolov6_table_without_a_gpu_mem_column():
    out, _ = ext([
        "     Epoch  iou_loss  dfl_loss  cls_loss",
        "     43/99    0.5123    0.2011   0.01125: 100%|██████████| 106/106 [00:16<00:00,  6.50it/s]",
        "     Epoch  iou_loss  dfl_loss  cls_loss",
        "     44/99    0.5001    0.1998   0.01102: 100%|██████████| 106/106 [00:15<00:00,  6.71it/s]",
    ])
    assert [step for step, _ in out] == [43 * 106 + 106, 44 * 106 + 106]
    assert out[0][1] == {"iou_loss": 0.5123, "dfl_loss": 0.2011, "cls_loss": 0.01125, "loss": 0.72465}


def test_lightning_main_bar_during_validation_repeats_no_training_values():
    """Lightning's main bar counts validation batches too: while its validation bar runs, the training postfix
    it repeats is not a new training step (8 such repeats once read as a frozen loss)."""
    bar = "Epoch 0:  92%|█████████▏| {n}/1016 [00:33<00:03, 27.70it/s, loss={loss}, v_num=77]"
    out, _ = ext([
        bar.format(n=930, loss=0.231),
        bar.format(n=931, loss=0.223),
        "Validation DataLoader 0:  46%|████▌     | 73/157 [00:02<00:02, 37.48it/s]",
        *[bar.format(n=n, loss=0.223) for n in range(932, 940)],
        "Validation DataLoader 0:  50%|█████     | 78/157 [00:02<00:02, 38.79it/s]",
        bar.format(n=940, loss=0.223),
        "Epoch 1:   0%|          | 1/1016 [00:00<00:03, 27.70it/s, loss=0.219, v_num=77]",
    ])
    assert out == [(930, {"loss": 0.231}), (931, {"loss": 0.223}), (1017, {"loss": 0.219})]


def test_a_key_that_names_the_training_phase_keeps_it_on_an_eval_line():
    """An eval line's estimate of the training loss is the training loss, not the held-out one."""
    out, _ = ext(["[eval] iter 500: train 3.4484 val 3.4299 lr 3.00e-04"])
    assert out[0][0] == 500
    assert out[0][1]["loss"] == 3.4484 and out[0][1]["val/loss"] == 3.4299


def test_a_phase_word_after_a_bare_time_stamp_names_the_lines_phase():
    """Joey NMT's validation line (after the logging module's time stamp alone) reports held-out values."""
    out, _ = ext([
        "2020-05-12 16:48:35,873 Epoch   2 Step:      200 Batch Loss:     4.598033 Tokens per Sec:     8992, Lr: 0.000200",
        (
            "2020-05-12 17:07:12,782 Validation result (greedy) at epoch  26, step     4000: token_accuracy:   6.22, "
            "loss: 38782.6602, ppl:  22.9588, duration: 11.6068s"
        ),
    ])
    assert out[-1][0] == 4000 and out[-1][1]["val/loss"] == 38782.6602 and "loss" not in out[-1][1]


def test_mindspore_loss_monitor_lines():
    """MindSpore's LossMonitor prints 'loss is' and counts steps within the epoch."""
    out, _ = ext([
        "epoch: 1 step: 375, loss is 2.298612",
        "epoch: 1 step: 750, loss is 2.075152",
        "epoch: 2 step: 375, loss is 0.20582482",
        "Epoch is [1/600], mini-batch is [2/1600]",  # a key followed by no number is left alone
    ])
    assert [m for _, m in out] == [{"loss": 2.298612}, {"loss": 2.075152}, {"loss": 0.20582482}]
    assert out[0][0] < out[1][0] < out[2][0]
    # a sentence about a NaN is left to the signatures (the demo's stop message is a LOG_PATTERN alert)
    assert ext(["Epoch 0 step 210: loss is nan, stopping training"])[0] == []


def test_a_plural_iterations_counter_written_without_a_space():
    """A custom loop's ``iterations:57, train acc:0.440, train loss:616.408,`` (ESPnet used as a library)."""
    out, _ = ext(["iterations:57, train acc:0.440, train loss:616.408, train loss ctc:1156.613,",
                  "iterations:58, train acc:0.338, train loss:653.147, train loss ctc:1221.461,"])
    assert out == [(57, {"acc": 0.44, "loss": 616.408}), (58, {"acc": 0.338, "loss": 653.147})]


def test_step_less_loss_lines_after_a_logging_prefix_are_numbered_in_order():
    """``2018-03-23 15:29:33,355:INFO: train loss:1.10886``: no step anywhere, a NaN kept as one."""
    out, _ = ext(["2018-03-23 15:29:33,355:INFO: train loss:1.10886", "2018-03-23 15:31:41,870:INFO: train loss:1.53702",
                  "2018-03-23 15:40:22,720:INFO: train loss:nan"])
    assert [s for s, _ in out] == [0, 1, 2] and out[0][1] == {"loss": 1.10886} and math.isnan(out[2][1]["loss"])


def test_loguru_records_of_an_epoch_and_its_equals_pairs():
    """loguru's default format (``| INFO     | module:function:line - message``): an ``epoch=N`` record, then
    ``key=value`` records of that epoch."""
    out, _ = ext([
        "2019-11-22 15:36:56.690 | INFO     | bert_sentiment.train:train:86  - epoch=1",
        "2019-11-22 13:27:47.669 | INFO     | bert_sentiment.train:train:88 - train_loss=0.0481, val_loss=0.0378, test_loss=0.0370",
        "2019-11-22 15:36:56.690 | INFO     | bert_sentiment.train:train:86 - epoch=29",
        "2019-11-22 15:36:56.690 | INFO     | bert_sentiment.train:train:88 - train_loss=0.0010, val_loss=0.0916, test_loss=0.0854",
    ])
    assert out == [(1, {"loss": 0.0481, "val/loss": 0.0378, "test/loss": 0.037}),
                   (29, {"loss": 0.001, "val/loss": 0.0916, "test/loss": 0.0854})]


def test_char_rnn_iteration_of_the_total_with_a_fractional_epoch():
    """Torch7 char-rnn and the models built on it print the iteration of the run's total and a fractional epoch."""
    out, _ = ext(["100/21150 (epoch 0.236), train_loss = 1.98218364, grad/param norm = 8.9011e-02, time/batch = 0.14s",
                  "9500/31675 (epoch 7.50), train_loss = 170.8574"])
    assert out == [(100, {"loss": 1.98218364}), (9500, {"loss": 170.8574})]


def test_values_on_their_own_lines_under_an_iteration_counter():
    """``iteration: 5``, then ``learning rate: 0.1`` and ``loss = 0.113`` on lines of their own: at that step."""
    out, _ = ext(["iteration: 0", "learning rate: 0.1", "loss = 0.23123088479042053",
                  "iteration: 1", "learning rate: 0.1", "loss = 0.11247935891151428"])
    merged = {}
    for s, m in out:
        merged.setdefault(s, {}).update(m)
    assert merged == {0: {"lr": 0.1, "loss": 0.23123088479042053}, 1: {"lr": 0.1, "loss": 0.11247935891151428}}


def test_step_less_lines_behind_a_bracket_tag_and_a_single_bracketed_counter():
    """``[TRAIN(0,0,33)]: i: 0, train_loss: 1.386`` (a tag, then pairs; ``i`` is not a metric) and ``[3] loss: 0.309``."""
    out, _ = ext(["[(0,0,17)]: Epoch 1", "[TRAIN(0,0,33)]: i: 0, train_loss: 1.3863574266433716",
                  "[TRAIN(0,0,40)]: i: 1, train_loss: 1.3862749338150024"])
    assert out == [(0, {"loss": 1.3863574266433716}), (1, {"loss": 1.3862749338150024})]
    out, _ = ext(["epoch: 0 lr: 0.00016666666666666666", "[0] loss: 0.70587", "epoch: 1 lr: 0.0003333333333333333",
                  "[1] loss: 0.32097"])
    assert [(s, m.get("loss")) for s, m in out if "loss" in m] == [(0, 0.70587), (1, 0.32097)]


def test_a_count_before_the_word_epoch_and_a_phase_written_after_the_metric():
    """``1 epoch, loss: 0.0148,  loss_test: 0.0153, time: 0:11:54.55`` behind ``%(name)s - %(levelname)s``."""
    out, _ = ext(["2020-04-27 19:06:06,525 - root - INFO - 1 epoch, loss: 0.0148,  loss_test: 0.0153, time: 0:11:54.556227",
                  "2020-04-27 19:18:00,024 - root - INFO - 2 epoch, loss: 0.0119,  loss_test: 0.0129, time: 0:11:53.495814"])
    assert out == [(1, {"loss": 0.0148, "test/loss": 0.0153}), (2, {"loss": 0.0119, "test/loss": 0.0129})]
    assert metric_name("acc_val") == ("val/acc", 1.0) and metric_name("loss_train") == ("loss", 1.0)
    assert metric_name("best_val") == ("best_val", 1.0)  # the phase after a word that names no metric: left alone


def test_a_phase_word_right_after_the_level_is_the_messages_not_a_logger_name():
    out, _ = ext(["2026-04-25 02:24:58,390 - INFO - Validation - Loss: 1.3451, Dice: 0.0447"])
    assert out == [(0, {"val/loss": 1.3451, "val/dice": 0.0447})]


def test_a_score_printed_as_a_percentage_is_read_as_a_fraction():
    """``target_val_acc:  55.16%`` is 0.5516; a percentage of anything but a score (memory, progress) is not read."""
    out, _ = ext(["2024-04-18 09:18:19 | Epoch:  39/100, loss: 0.2717, source_train_acc: 100.00%, target_val_acc:  55.16%",
                  "Epoch 40 loss: 0.31 acc: 96 % mem: 45%"])
    assert out == [(39, {"loss": 0.2717, "source_train_acc": 1.0, "target_val_acc": 0.5516}),
                   (40, {"loss": 0.31, "acc": 0.96})]


def test_a_stage_line_whose_only_value_is_a_setting_in_parentheses_is_not_a_step():
    """``Step 4/6  Phase 1 -- layer4 only (6 epochs, LR=0.0001) ...`` announces a stage of a script; taken as step 4,
    it would drop the ``Ep 1/6`` to ``Ep 3/6`` lines after it as going back."""
    out, _ = ext(["Step 4/6  Phase 1 -- layer4 only (6 epochs, LR=0.0001) ...",
                  "  Ep  1/6  train_loss=0.5423  val_loss=0.4714  active_triplets=81166  [148s]",
                  "  Ep  2/6  train_loss=0.5350  val_loss=0.4708  active_triplets=81166  [134s]"])
    assert out == [(1, {"loss": 0.5423, "val/loss": 0.4714}), (2, {"loss": 0.535, "val/loss": 0.4708})]
    assert ext(["Step 100/1000 lr=0.001"])[0] == [(100, {"lr": 0.001})]  # a step's own learning rate is read


def test_a_line_of_epoch_and_batch_counters_gives_the_step_of_the_values_under_it():
    """``Epoch: 1<TAB>Batch: 50`` then ``Running Loss: 0.6866``: the batch counts within the epoch."""
    out, _ = ext(["Epoch: 1\tBatch: 50", "Running Loss: 0.6866", "Epoch: 1\tBatch: 100", "Running Loss: 0.6210",
                  "Epoch 1 Valid Loss: 0.3561", "Epoch: 2\tBatch: 50", "Running Loss: 0.5576"])
    assert out == [(50, {"loss": 0.6866}), (100, {"loss": 0.621}), (100, {"val/loss": 0.3561}), (151, {"loss": 0.5576})]
