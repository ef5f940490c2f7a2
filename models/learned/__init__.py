"""Learned detectors: run features, a run-outlier forest, a sequence autoencoder and a divergence forecaster.

They share one feature stream (:mod:`.features`), load from one artifact
(:mod:`.artifacts`: a JSON config plus safetensors weights, no pickle) and
serve through one diagnostic (:mod:`.detector`) on the same
:class:`~runwatch.models.block.MetricBlock` path as the rule diagnostics.
Fitting needs torch and PyOD (:mod:`.training`); serving needs numpy, PyOD and
safetensors only.
"""
