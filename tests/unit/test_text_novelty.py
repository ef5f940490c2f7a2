"""New-template findings once a project is past its warm-up: a new shape is context (INFO, one incident per run),
an error-level record of a new shape a WARNING, and a line a signature or the metric reader explains gets none."""

from __future__ import annotations

from runwatch.models.findings import Severity
from runwatch.models.registry import DiagnosticSuite, SuiteConfig
from runwatch.models.text.monitor import TextMonitor, TextMonitorConfig
from runwatch.models.text.signatures import SignatureConfig
from runwatch.models.text.templates import TemplateMiner

# A healthy run's start-up in frameworks the project has not run before, written here in their formats: the
# Trainer's preamble, Lightning's model summary, uvicorn's start-up, a config print.
HEALTHY_START = [
    "***** Running training *****",
    "  Num examples = 25,000",
    "  Num Epochs = 3",
    "  Instantaneous batch size per device = 8",
    "  Total optimization steps = 9,375",
    "  | Name    | Type             | Params",
    "0 | model   | ResNet           | 11.2 M",
    "11.2 M    Trainable params",
    "44.696    Total estimated model params size (MB)",
    "INFO:     Started server process [4242]",
    "INFO:     Waiting for application startup.",
    "INFO:     Application startup complete.",
    "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)",
    "error_analysis: enabled=False, max_examples=100, output_dir=/tmp/analysis",
]


def warmed_project(config: TextMonitorConfig) -> TemplateMiner:
    """A project past its warm-up: earlier runs printed 2,100 iteration lines."""
    miner = TemplateMiner(config.templates)
    past = [f" iteration {it:8d}/{5000:8d} | lm loss: {3.0 - it / 5000:.6E} | grad norm: 1.234 |"
            for it in range(1, 2101)]
    TextMonitor("earlier", config, miner=miner).observe_lines(past)
    return miner


def new_templates(findings):
    return [f for f in findings if f.key.startswith("new_template:")]


def test_healthy_start_up_lines_are_one_info_incident():
    config = TextMonitorConfig()
    tm = TextMonitor("r", config, miner=warmed_project(config))
    _, findings = tm.observe_lines(HEALTHY_START)
    novel = new_templates(findings)
    assert novel and {f.severity for f in novel} == {Severity.INFO}  # the config print's "error" is a value's word
    alerts = DiagnosticSuite(SuiteConfig(enabled=["nonfinite"])).monitor("r").report(findings, 0.0)
    assert [a.finding.key for a in alerts] == ["new_template:context"]


def test_a_line_a_signature_explains_gets_no_second_incident():
    config = TextMonitorConfig()
    tm = TextMonitor("r", config, miner=warmed_project(config))
    _, findings = tm.observe_lines([
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB",
        "BrokenPipeError: [Errno 32] Broken pipe",
        "2024-05-01 12:00:01,234 ERROR worker.py:88 lost the connection to the parameter server",
    ])
    assert [(f.key, f.severity) for f in findings] == [
        ("cuda_oom", Severity.CRITICAL), ("python_exception", Severity.ERROR), ("error_line", Severity.WARNING),
    ]


def test_an_iteration_line_of_a_new_shape_is_left_to_the_metric_detectors():
    config = TextMonitorConfig()
    tm = TextMonitor("r", config, miner=warmed_project(config))
    events, findings = tm.observe_lines(["{'loss': 0.41, 'grad_norm': 1.2, 'learning_rate': 5e-05, 'epoch': 0.5}"])
    assert events and new_templates(findings) == []


def test_an_error_record_of_a_new_shape_is_a_warning_of_its_own():
    """With the generic error-line signature off, a new error-level record is the novelty check's to raise."""
    config = TextMonitorConfig(signatures=SignatureConfig(error_lines=False))
    tm = TextMonitor("r", config, miner=warmed_project(config))
    _, findings = tm.observe_lines([
        "2024-05-01 12:00:01,234 ERROR worker.py:88 lost the connection to the parameter server",
        "2024-05-01 12:00:02,001 INFO data.py:12 shard 3 of 8 opened",
    ])
    error, healthy = findings
    assert error.key.startswith("new_template:") and error.key != "new_template:context"
    assert error.severity == Severity.WARNING
    assert (healthy.key, healthy.severity) == ("new_template:context", Severity.INFO)
