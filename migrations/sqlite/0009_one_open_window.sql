-- One open monitoring window per environment. Opening a window closes the older one in the same
-- transaction, but two transactions opening at the same moment (two replicas on PostgreSQL) both
-- saw the older window and both inserted. The partial unique index makes the second insert wait
-- for the first to commit and then insert nothing (`ON CONFLICT ... DO NOTHING`); the opener then
-- closes the window it found as superseded and inserts again. Windows left open twice by that race
-- before this migration keep the newest open; the others are closed as superseded.
UPDATE monitor_windows
SET state = 'closed',
    closed_at = (
        SELECT MAX(n.opened_at) FROM monitor_windows n
        WHERE n.env = monitor_windows.env AND n.state = 'open'
    ),
    closed_by = 'system',
    close_reason = 'superseded (a newer window was open at the same time)'
WHERE state = 'open'
  AND EXISTS (
    SELECT 1 FROM monitor_windows n
    WHERE n.env = monitor_windows.env
      AND n.state = 'open'
      AND (n.opened_at > monitor_windows.opened_at
           OR (n.opened_at = monitor_windows.opened_at AND n.id > monitor_windows.id))
  );
CREATE UNIQUE INDEX monitor_windows_one_open ON monitor_windows (env) WHERE state = 'open';
