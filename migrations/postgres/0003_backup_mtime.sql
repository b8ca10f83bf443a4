-- The file's modification time when it was verified: a later write shows the backup as changed.
ALTER TABLE backups ADD COLUMN file_mtime_ms BIGINT;
