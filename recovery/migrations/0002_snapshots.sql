-- Snapshots of the agents' state (see pipeline/snapshots and recovery/snapshot_store.py): each row is one
-- unit's state (match's engine, or a group of changelog tables) with the stream positions it reflects.
CREATE TABLE snapshots (
    id          bigserial PRIMARY KEY,
    agent       text NOT NULL,              -- the unit: match, validate, risk+settle, publish
    partition   integer NOT NULL,
    taken_at    timestamptz NOT NULL DEFAULT now(),
    offsets     jsonb NOT NULL,             -- {"inputs": {stream: entry id}, "changelogs": {stream: entry id}}
    state_hash  text NOT NULL,              -- the state's hash (match: MatchingEngine.state_hash())
    size        bigint NOT NULL,            -- payload bytes (compressed)
    raw_size    bigint NOT NULL,            -- payload bytes before compression
    format      text NOT NULL,              -- engine/1, tables/1
    codec       text NOT NULL,              -- zstd
    reason      text NOT NULL,              -- timer, request, shutdown
    request_id  bigint,                     -- the `exchange snapshot now` request it answers
    summary     jsonb NOT NULL,             -- counts: orders, levels, balances, holds...
    capture_ms  double precision NOT NULL,  -- how long the agent paused to capture it
    encode_ms   double precision NOT NULL,  -- serialising + compressing, off the hot path
    payload     bytea NOT NULL
);
CREATE INDEX snapshots_unit ON snapshots (agent, partition, id DESC);
CREATE INDEX snapshots_request ON snapshots (request_id) WHERE request_id IS NOT NULL;
