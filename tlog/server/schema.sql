-- tlog SQLite schema, version 1.  See tlog/server/storage.py for the contract and the life of an entry.
-- The database runs with journal_mode=WAL and synchronous=FULL (checked at start-up).

CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;

-- One row per leaf, in tree order: the RFC 6962 leaf bytes (tlog.entry.Leaf encoding).
-- ident and lhash are integer keys of the entry identity (tlog.entry.Leaf.identity, excludes the
-- signature) and of the RFC 6962 leaf hash, built so that inserts touch few index pages
-- (tlog.server.sqlite.ident_key: the writer's timestamp in milliseconds in the high bits; lhash_key:
-- the index's part of 65,536 leaves in the high bits; meta index_scheme "3" — older databases: "2",
-- the timestamp in 4,096-ms buckets, or none, the first 8 bytes of each hash).  Non-unique integer
-- keys are far cheaper than a UNIQUE index on a 32-byte blob; a hit is confirmed by re-reading the leaf.
CREATE TABLE IF NOT EXISTS leaves (
    idx           INTEGER PRIMARY KEY,
    leaf          BLOB    NOT NULL,
    ident         INTEGER NOT NULL,
    lhash         INTEGER NOT NULL,
    key_id        BLOB,              -- provisioning key of an event entry; NULL for operator entries
    integrated_ms INTEGER NOT NULL
);
-- Deduplication looks up every entry's identity, so its index is written with the batch.
CREATE INDEX IF NOT EXISTS leaves_ident ON leaves (ident);
-- The first index at or after a time (search, retention; integration times never decrease along the
-- tree): appends land on the index's right edge.
CREATE INDEX IF NOT EXISTS leaves_time ON leaves (integrated_ms);

-- Lookup by leaf hash (GET /v1/proofs/inclusion?hash=…) and a key's entries in index order (search, key
-- timelines), for the leaves below the *indexed size*: the head's size rounded down to a whole chunk
-- of 4,096 leaves (tlog.server.sqlite.INDEX_CHUNK_BITS).  The batch that completes a chunk inserts
-- the chunk's rows, sorted, in its own transaction, so each index page is written about once per
-- chunk instead of once per batch (a batch's 30-60 entries hit as many different pages of a
-- hash-keyed or key-keyed index: two thirds of the pages a batch wrote).  The at most 4,095 leaves
-- above the indexed size are found by a range scan of ``leaves`` in the same statement, hence in the
-- same snapshot of the head.  Databases from before these tables had the indexes leaves_lhash and
-- leaves_key; opening one moves them here once (sqlite.open_storage).
CREATE TABLE IF NOT EXISTS lhash_index (
    lhash INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    PRIMARY KEY (lhash, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_index (
    key_id BLOB    NOT NULL,
    idx    INTEGER NOT NULL,
    PRIMARY KEY (key_id, idx)
) WITHOUT ROWID;

-- Operator entries (genesis, key events, erasures) by index, so the key registry is replayed at
-- start-up without reading every event entry.
CREATE TABLE IF NOT EXISTS operator_entries (
    idx INTEGER PRIMARY KEY
);

-- Payloads and salts live beside the tree, never in it (the leaf holds only their commitment).
-- Erasure deletes the row in the same transaction as the Erasure leaf (secure_delete zeroes the bytes;
-- the WAL is checkpointed and truncated afterwards): see spec/privacy.md.
CREATE TABLE IF NOT EXISTS payloads (
    idx     INTEGER PRIMARY KEY,
    salt    BLOB NOT NULL,
    payload BLOB NOT NULL
);

-- C2SP tlog-tiles hash tiles: tile-level L holds the hashes of tree level 8L.  A full tile
-- (256 hashes) is immutable; the right-most tile of each level grows in place.
CREATE TABLE IF NOT EXISTS tiles (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    data  BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Each full hash tile with its interior: the tile's 256 hashes followed by levels 1-7 of its little
-- tree (254 hashes), 16,320 bytes, so that a proof reads node hashes instead of recomputing them and
-- finds them with one rowid lookup (id = level * 2**48 + tile index): a rowid table's search stays a
-- few pages deep, where (level, idx) WITHOUT ROWID with 8 KB rows is many pages deep at 10,000,000
-- entries.  Written in the batch that fills the tile; a tile without a row (a database from before
-- this table) is read from ``tiles`` and its interior recomputed.
CREATE TABLE IF NOT EXISTS tile_trees (
    id   INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);

-- The inclusion paths of each full level-0 tile (tlog/server/treereader.tile_paths): row
-- tile_index * 16 + g holds the 34 node hashes a proof of any of the leaves 16g .. 16g+15 of the tile
-- needs below the tile's root (1,088 bytes: one page read per proof instead of the 16 KB tile tree).
CREATE TABLE IF NOT EXISTS tile_paths (
    id   INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);

-- Every checkpoint the log ever signed and published, by tree size.
CREATE TABLE IF NOT EXISTS checkpoints (
    size         INTEGER PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    note         BLOB    NOT NULL
);

-- The head: exactly one row.  It only moves forward, by compare-and-swap on size.
CREATE TABLE IF NOT EXISTS head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    size         INTEGER NOT NULL,
    root         BLOB    NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    note         BLOB    NOT NULL
);

-- Reader tokens (tlog/server/tokens.py): only the SHA-256 of a token is stored.  Managed by the local
-- `tlog tokens` commands (another process: SQLite WAL lets them write while the server runs), read by
-- the server on every request that asks for payloads, so a new or revoked token counts at once.
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT    PRIMARY KEY,   -- public id (16 hex digits), also the token's prefix
    hash         BLOB    NOT NULL UNIQUE,
    role         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER,               -- NULL: never
    revoked_ms   INTEGER,               -- NULL: not revoked
    reads        INTEGER NOT NULL DEFAULT 0,
    last_read_ms INTEGER
) WITHOUT ROWID;
