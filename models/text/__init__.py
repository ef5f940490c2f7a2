"""Text logs: template mining, metric extraction, failure signatures and sequence models.

:class:`~runwatch.models.text.monitor.TextMonitor` is the per-run entry point
the service feeds raw log lines to; the other modules each do one job.
"""
