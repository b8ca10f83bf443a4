-- Delivery lanes (issue 19): each channel is a lane, delivered in (priority, id) order.
--   priority: 0 cards, their edits and ephemeral answers; 1 other messages (alerts, notices);
--             2 audit lines and reports, which wait behind the others in the same lane.
--   kind: `card`, `ephemeral`, `text`, `report` or `audit` (audit lines and chain head lines).
--   audit_seq: for an audit line, the event it carries (NULL for a head line).
--   carried_by / carrier_message: the outbox row whose message carried this row (a digest of
--   audit lines carries several; a row sent alone carries itself) and that message's id.
-- card_messages.post_error: why the copy of a card could not be posted in that channel (the bot
-- is not in it); later edits of that copy are not posted as new messages.
ALTER TABLE outbox ADD COLUMN priority BIGINT NOT NULL DEFAULT 1;
ALTER TABLE outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
ALTER TABLE outbox ADD COLUMN audit_seq BIGINT;
ALTER TABLE outbox ADD COLUMN carried_by BIGINT;
ALTER TABLE outbox ADD COLUMN carrier_message TEXT;
-- Rows still waiting get their kind; delivered history is left as it was. Queued chain head
-- lines are audit rows too, so they keep their place after the lines they close.
UPDATE outbox SET priority = 0, kind = 'card' WHERE card_key IS NOT NULL AND delivered_at IS NULL;
UPDATE outbox SET priority = 2, kind = 'audit'
  WHERE card_key IS NULL AND delivered_at IS NULL
    AND (payload LIKE '%"Text":"#%' OR payload LIKE '%"Text":"audit head seq=%');
ALTER TABLE card_messages ADD COLUMN post_error TEXT;
CREATE INDEX outbox_lane ON outbox (platform, channel, delivered_at, priority, id);
-- Which lanes have something due, read from the index alone (it replaces `outbox_due`).
CREATE INDEX outbox_due_lanes ON outbox (platform, delivered_at, next_attempt_at, channel);
DROP INDEX outbox_due;
