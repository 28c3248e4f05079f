-- One outbox row per commit, not per event (issues 12 and 16: measured on a copy of a bulk run's database,
-- one event as a row of its own cost about 6 µs to insert — a heap tuple and three index entries — and
-- 9–12 µs to mark published — a new tuple and two more index entries, the column being in the partial
-- index's predicate —: more than half again the guarded UPDATE and ledger INSERT of the debit it reports.
-- The same events as one JSON array per commit cost about 0.3 µs each).
--
-- A row now has one of two forms:
--   * one event, as before (`event_id`, `event_type`, `routing_key`, `aggregate_id`, `payload`): rows written
--     before this migration, and by an instance of the previous release during a rolling deploy;
--   * a commit's events (`events`: a JSON array of {"id", "type", "key", "aggregate", "body"} in the order
--     they are published, `event_count` of them), which is what the service writes now.
-- The relay publishes both in `seq` order, a row's events in array order, and marks a row published once
-- every event of it is confirmed (a row confirmed in part is sent again whole: at-least-once, consumers
-- dedup by `message_id` = the event's id). Event ids are UUIDv7s made by the service; the UNIQUE index
-- still guards the one-event form, and `outbox_events` below lists both forms as one event per row.

ALTER TABLE outbox
    ADD COLUMN events json,
    ADD COLUMN event_count INT NOT NULL DEFAULT 1,
    ALTER COLUMN event_id DROP NOT NULL,
    ALTER COLUMN event_type DROP NOT NULL,
    ALTER COLUMN routing_key DROP NOT NULL,
    ALTER COLUMN payload DROP NOT NULL,
    ADD CONSTRAINT outbox_one_form CHECK (
        CASE WHEN events IS NULL
             THEN event_id IS NOT NULL AND event_type IS NOT NULL AND routing_key IS NOT NULL
                  AND payload IS NOT NULL AND event_count = 1
             ELSE event_id IS NULL AND event_type IS NULL AND routing_key IS NULL AND payload IS NULL
                  AND event_count > 0 AND json_typeof(events) = 'array'
        END);

-- Every event in the outbox, one row each, whichever form carries it: for operators ("what is still
-- unpublished?") and for tests. `pos` is the event's place in its row (1 for the one-event form).
CREATE VIEW outbox_events AS
    SELECT seq, 1::bigint AS pos, event_id, event_type, routing_key, aggregate_id, payload, created_at, published_at
      FROM outbox
     WHERE events IS NULL
    UNION ALL
    SELECT o.seq, e.pos, (e.ev->>'id')::uuid, (e.ev->>'type')::varchar(50), (e.ev->>'key')::varchar(100),
           (e.ev->>'aggregate')::uuid, e.ev->'body', o.created_at, o.published_at
      FROM outbox o, json_array_elements(o.events) WITH ORDINALITY AS e(ev, pos)
     WHERE o.events IS NOT NULL;
