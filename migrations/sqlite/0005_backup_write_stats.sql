-- The target's per-table write counters (pg_stat_user_tables, with the stats reset and server
-- start times) read just before the dump started, as JSON; NULL when they could not be read and
-- for backups taken before dualkey recorded them. Restoring plans estimate the rows written since.
ALTER TABLE backups ADD COLUMN write_stats_json TEXT NULL;
