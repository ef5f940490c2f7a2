-- The tables of sqlite/0002_run_summaries.sql; rowid is the order runs were stored in, which refits follow.
CREATE TABLE run_summaries (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    saved DOUBLE PRECISION NOT NULL,
    n_rows INTEGER NOT NULL,
    n_cols INTEGER NOT NULL,
    summaries BYTEA NOT NULL
);
CREATE INDEX run_summaries_by_project ON run_summaries (project, rowid);
