-- The log server's witness cosignatures (tlog/server/witnessing.py, spec/witness.md §3), in DIR/witness.db.
-- Only the sequencer process writes; HTTP worker processes read.  WAL, synchronous=FULL.

-- The size each witness (name and key) last cosigned for this log, or told us in a 409 answer: the `old`
-- of the next add-checkpoint request.  Losing it costs one 409 round trip, never a wrong answer.
CREATE TABLE IF NOT EXISTS witness_sizes (
    name TEXT    NOT NULL,
    vkey TEXT    NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (name, vkey)
) WITHOUT ROWID;

-- The log-signed notes that received at least one cosignature.
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    note BLOB NOT NULL
);

-- One verified cosignature line per (checkpoint size, witness name, witness key).  Rows below the newest
-- checkpoint that met the quorum are pruned: that checkpoint covers every smaller index.
CREATE TABLE IF NOT EXISTS cosignatures (
    size        INTEGER NOT NULL,
    name        TEXT    NOT NULL,
    vkey        TEXT    NOT NULL,
    line        TEXT    NOT NULL,
    timestamp   INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (size, name, vkey)
) WITHOUT ROWID;
