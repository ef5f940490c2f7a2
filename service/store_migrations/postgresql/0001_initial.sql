-- runwatch store, PostgreSQL: the tables of sqlite/0001_initial.sql. Each table the store reads in
-- insertion order has an identity column named rowid, so the same queries serve both databases.
CREATE TABLE runs (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    run_id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    kind INTEGER NOT NULL,
    status INTEGER NOT NULL,
    start_time DOUBLE PRECISION NOT NULL,
    end_time DOUBLE PRECISION NOT NULL DEFAULT 0,
    end_reason TEXT NOT NULL DEFAULT '',
    last_step BIGINT NOT NULL DEFAULT -1,
    last_event_time DOUBLE PRECISION NOT NULL DEFAULT 0,
    event_count BIGINT NOT NULL DEFAULT 0,
    start_record BYTEA NOT NULL
);
CREATE INDEX runs_by_project ON runs (project, start_time);
CREATE INDEX runs_by_start ON runs (start_time, rowid);
CREATE TABLE event_chunks (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL,
    first_step BIGINT NOT NULL,
    last_step BIGINT NOT NULL,
    n_events INTEGER NOT NULL,
    events BYTEA NOT NULL
);
CREATE INDEX event_chunks_by_run ON event_chunks (run_id, first_step);
CREATE INDEX event_chunks_by_run_rowid ON event_chunks (run_id, rowid);
CREATE TABLE log_lines (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    level INTEGER NOT NULL,
    step BIGINT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX log_lines_by_run ON log_lines (run_id, time);
CREATE TABLE anomalies (
    rowid BIGINT GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    project TEXT NOT NULL,
    detector TEXT NOT NULL,
    kind INTEGER NOT NULL,
    severity INTEGER NOT NULL,
    first_step BIGINT NOT NULL,
    revision INTEGER NOT NULL,
    detected_time DOUBLE PRECISION NOT NULL,
    record BYTEA NOT NULL
);
CREATE INDEX anomalies_by_run ON anomalies (run_id, first_step);
CREATE INDEX anomalies_by_time ON anomalies (detected_time);
CREATE TABLE text_templates (
    project TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated DOUBLE PRECISION NOT NULL
);
CREATE TABLE run_checkpoints (
    run_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    saved DOUBLE PRECISION NOT NULL
);

-- Live fan-out to every instance's WatchAnomalies: a notification per stored anomaly revision, which
-- PostgreSQL delivers only when (and if) the writing transaction commits. The payload is
-- "revision id" (a record may exceed NOTIFY's 8000 bytes; listeners read it from the table).
CREATE FUNCTION runwatch_anomaly_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('runwatch_anomalies', NEW.revision::text || ' ' || NEW.id);
    RETURN NULL;
END
$$;
CREATE TRIGGER anomalies_notify AFTER INSERT OR UPDATE ON anomalies
    FOR EACH ROW EXECUTE FUNCTION runwatch_anomaly_notify();
