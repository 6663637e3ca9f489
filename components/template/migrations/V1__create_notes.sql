-- The template's one table. Migrations run at start, and again before a swap: add, never drop.
CREATE TABLE notes (
    id         uuid        PRIMARY KEY,
    text       text        NOT NULL CHECK (length(text) BETWEEN 1 AND 1000),
    created_at timestamptz NOT NULL DEFAULT now()
);
