-- The balancer: its decisions with their reasons, its latest view of each queue, and the
-- mapping of external demand names to queues.

-- Every change of a worker's queue, and every new reason a queue is held short of its demand.
-- `queue` is the queue the row is about: the one a worker joined, or left, or that is held.
CREATE TABLE balancer_decisions (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    queue      text,
    worker_id  text,
    pool       text,
    from_queue text,
    to_queue   text,
    reason     text NOT NULL
);
CREATE INDEX balancer_decisions_by_queue ON balancer_decisions (queue, at DESC);
CREATE INDEX balancer_decisions_by_from ON balancer_decisions (from_queue, at DESC);
CREATE INDEX balancer_decisions_by_pool ON balancer_decisions (pool, at DESC);

-- The balancer's view of each queue after its latest cycle.
CREATE TABLE queue_balance (
    queue      text PRIMARY KEY,
    workers    integer NOT NULL,
    capacity   bigint NOT NULL,
    pending    bigint NOT NULL,
    stale      boolean NOT NULL,
    -- why it has fewer workers than its demand or minimum asks for; NULL when it has enough
    hold       text,
    updated_at timestamptz NOT NULL
);

-- The cooling of each pool as the balancer last decided it (the state itself is in the
-- faro_cooling bucket; this copy answers `faro explain pool`).
CREATE TABLE pool_balance (
    pool          text PRIMARY KEY,
    workers       integer NOT NULL,
    cooling_until timestamptz,
    updated_at    timestamptz NOT NULL
);

-- External demand names (a ticket type, a work-queue row) to the queue that serves them.
CREATE TABLE demand_mappings (
    external_name text PRIMARY KEY,
    queue         text NOT NULL REFERENCES queues (name) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
