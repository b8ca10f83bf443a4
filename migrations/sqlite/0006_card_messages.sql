-- Cards posted to several channels and edited in place: an outbox row may name the card it
-- posts or edits (`card_key`, `request:<id>` or `operation:<id>`), and `card_messages` records
-- where each copy of a card went and, once posted, its platform message id. An edit row names
-- only the card; delivery looks up the message id and skips an edit that a newer edit of the
-- same card in the same channel supersedes (edits collapse to the newest).
ALTER TABLE outbox ADD COLUMN card_key TEXT;
CREATE TABLE card_messages (
    card_key TEXT NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    message_id TEXT,
    PRIMARY KEY (card_key, platform, channel)
);
CREATE INDEX outbox_card ON outbox (card_key, platform, channel, delivered_at);
