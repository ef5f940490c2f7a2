-- runwatch store, SQLite: the schema before versioned migrations (IF NOT EXISTS: such files keep their tables).
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    kind INTEGER NOT NULL,
    status INTEGER NOT NULL,
    start_time REAL NOT NULL,
    end_time REAL NOT NULL DEFAULT 0,
    end_reason TEXT NOT NULL DEFAULT '',
    last_step INTEGER NOT NULL DEFAULT -1,
    last_event_time REAL NOT NULL DEFAULT 0,
    event_count INTEGER NOT NULL DEFAULT 0,
    start_record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project, start_time);
CREATE TABLE IF NOT EXISTS event_chunks (
    run_id TEXT NOT NULL,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n_events INTEGER NOT NULL,
    events BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS event_chunks_by_run ON event_chunks (run_id, first_step);
CREATE TABLE IF NOT EXISTS log_lines (
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    level INTEGER NOT NULL,
    step INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_lines_by_run ON log_lines (run_id, time);
CREATE TABLE IF NOT EXISTS anomalies (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    project TEXT NOT NULL,
    detector TEXT NOT NULL,
    kind INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    first_step INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    detected_time REAL NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS anomalies_by_run ON anomalies (run_id, first_step);
CREATE INDEX IF NOT EXISTS anomalies_by_time ON anomalies (detected_time);
CREATE TABLE IF NOT EXISTS text_templates (
    project TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_checkpoints (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    saved REAL NOT NULL
);
