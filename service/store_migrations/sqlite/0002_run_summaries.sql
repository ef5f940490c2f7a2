-- The learned run-outlier reference rows of each project's healthy finished runs (runwatch.models.learned.project_refit):
-- one row per run, its prefix summaries as little-endian float64 bytes of shape [n_rows, n_cols].
CREATE TABLE run_summaries (
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    saved REAL NOT NULL,
    n_rows INTEGER NOT NULL,
    n_cols INTEGER NOT NULL,
    summaries BLOB NOT NULL
);
-- An index's entries of one project are in rowid order (SQLite appends the rowid to every index key).
CREATE INDEX run_summaries_by_project ON run_summaries (project);
