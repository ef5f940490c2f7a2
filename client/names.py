"""Metric-name mapping for the importers and integrations: :mod:`runwatch.models.metric_names`.

The rules live with the detectors, which apply them to every run's names as they arrive
(:class:`~runwatch.models.metric_names.DetectorNames`); importers and integrations also apply
them before sending, so what is stored is already spelled the runwatch way.
"""

from runwatch.models.metric_names import canonical_name, rename_map, safe_name

__all__ = ["canonical_name", "rename_map", "safe_name"]
