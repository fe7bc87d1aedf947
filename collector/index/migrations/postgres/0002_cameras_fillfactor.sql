-- Every status report rewrites its camera's row. With room left in each page, PostgreSQL updates a row in
-- place of the page (a HOT update) without touching the indexes when state is unchanged, which keeps the
-- table and its indexes from bloating between vacuums. Applies to pages written from now on.
ALTER TABLE cameras SET (fillfactor = 70);
