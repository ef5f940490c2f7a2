"""Kafka transport: ingest topic in, anomaly topic out, dead letters, run-state checkpoints.

Only :mod:`runwatch.service.kafka.config` is imported without the ``kafka`` extra
(kafka-python); everything else loads when ``--kafka-bootstrap`` is set.
"""
