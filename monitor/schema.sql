-- tlog-monitor state, version 1.  Contract and crash ordering: monitor/state.py.
-- The database runs with journal_mode=WAL and synchronous=FULL: a write is durable once it returns.

CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per followed log.  The head only moves forward, by compare-and-swap on head_size
-- (UPDATE ... WHERE head_size IS old); served_size likewise.  A later witness mode keeps its latest
-- cosigned checkpoint per origin in the same way.
CREATE TABLE IF NOT EXISTS logs (
    origin           TEXT PRIMARY KEY,
    vkey             TEXT    NOT NULL,
    url              TEXT    NOT NULL,
    added_ms         INTEGER NOT NULL,
    head_size        INTEGER,          -- the largest verified checkpoint, from the log or a peer
    head_note        BLOB,
    served_size      INTEGER,          -- the largest checkpoint the log itself served this monitor
    served_note      BLOB,
    last_note        BLOB,             -- the note the log served on its last valid answer
    last_answer_ms   INTEGER NOT NULL, -- freshness (monitor/classify.py Freshness)
    last_change_ms   INTEGER NOT NULL,
    behind_since_ms  INTEGER
) WITHOUT ROWID;

-- Every checkpoint note that verified under the log's key, whatever its classification (forks too):
-- a later checkpoint of the same size with another root is a fork with self-contained evidence.
CREATE TABLE IF NOT EXISTS checkpoints (
    origin  TEXT    NOT NULL,
    size    INTEGER NOT NULL,
    root    BLOB    NOT NULL,
    note    BLOB    NOT NULL,
    source  TEXT    NOT NULL,          -- "log" or "peer <url>"
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, size, root)
) WITHOUT ROWID;

-- The alert outbox: one row per deduplication key.  A row is inserted (durably) before the alert is
-- written anywhere; delivered is set once it is on stdout and in the alerts file.
CREATE TABLE IF NOT EXISTS alerts (
    key              TEXT PRIMARY KEY,
    kind             TEXT    NOT NULL,
    severity         TEXT    NOT NULL,
    origin           TEXT    NOT NULL,
    time_ms          INTEGER NOT NULL,
    line             TEXT    NOT NULL,  -- the JSON line exactly as delivered
    delivered        INTEGER NOT NULL DEFAULT 0,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_done     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Evidence documents (tlog.evidence), by claim digest; proven ones are served to peers.
CREATE TABLE IF NOT EXISTS evidence (
    digest  TEXT PRIMARY KEY,
    origin  TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    proven  INTEGER NOT NULL,
    body    BLOB    NOT NULL,
    path    TEXT    NOT NULL,
    source  TEXT    NOT NULL,
    time_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS evidence_origin ON evidence (origin, proven);

-- --watch-entries: leaves [0, size) were downloaded, hashed into this compact range (concatenated
-- 32-byte subtree roots, tlog.tree.CompactRange) and checked against a signed root of that size.
CREATE TABLE IF NOT EXISTS watch (
    origin TEXT PRIMARY KEY,
    size   INTEGER NOT NULL,
    hashes BLOB    NOT NULL
) WITHOUT ROWID;

-- The operator entries (genesis, key events, erasures) among the watched leaves, to rebuild the key
-- registry at start-up without downloading the log again.
CREATE TABLE IF NOT EXISTS operator_leaves (
    origin TEXT    NOT NULL,
    idx    INTEGER NOT NULL,
    leaf   BLOB    NOT NULL,
    PRIMARY KEY (origin, idx)
) WITHOUT ROWID;

-- Witness mode (C2SP tlog-witness, monitor/witness.py, spec/witness.md): the latest checkpoint this
-- monitor cosigned per witnessed log.  size starts at 0 (nothing cosigned) and only moves forward, by one
-- compare-and-swap that also writes the cosigned note: UPDATE ... WHERE origin = O AND size = old.  The
-- row is written before the cosignature is returned, so a restart never cosigns a smaller tree.
CREATE TABLE IF NOT EXISTS witnessed (
    origin      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL DEFAULT 0,
    root        BLOB,                  -- NULL at size 0
    note        BLOB,                  -- the checkpoint as cosigned: the log's note and our cosignature
    cosigned_ms INTEGER
) WITHOUT ROWID;

-- Every add-checkpoint request that failed consistency (422, and 409 for a same-size fork), verbatim, with
-- the checkpoint this witness held at the time: possible evidence of a log's misbehaviour (tlog-witness:
-- "the witness MAY log the request").  The same document is written to evidence/witness-*.json.
CREATE TABLE IF NOT EXISTS witness_refusals (
    digest     TEXT PRIMARY KEY,       -- SHA-256 of the request body
    origin     TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    request    BLOB    NOT NULL,
    known_note BLOB,
    path       TEXT    NOT NULL,
    peer       TEXT    NOT NULL,
    time_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS witness_refusals_origin ON witness_refusals (origin, time_ms);
