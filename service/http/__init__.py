"""The dashboard and Prometheus ``/metrics`` of ``runwatch serve --http-port``.

``app`` (routes, access, lifecycle), ``series`` (curves read from the store and
downsampled per pixel), ``stream`` (server-sent events), ``payloads`` (JSON),
``access`` (tokens over HTTP); ``static/`` holds the page, its script and the
vendored chart library, ``frontend/`` the lock file it is vendored from.
"""
