-- Named leases: with several replicas on one store, only the holder of a lease does the job
-- (outbox delivery today; scheduled jobs later). A lease not renewed by its `until` is free.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until BIGINT NOT NULL
);
