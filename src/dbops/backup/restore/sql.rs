//! The SQL dualkey adds around a restore: emptying the app's schema, the commit guard that
//! refuses any COMMIT but dualkey's, and dualkey's own COMMIT with its marker.

/// A `DO` block that drops every table, view, materialized view, sequence, foreign table, type,
/// domain, function, procedure and aggregate of `schema` that is not part of an extension.
pub(super) fn empty_schema_sql(schema: &str) -> String {
    // A random dollar-quote tag: no schema name can end the block early.
    let tag = format!("$dk{}$", uuid::Uuid::new_v4().simple());
    let lit = format!("'{}'", schema.replace('\'', "''"));
    format!(
        "DO {tag}
DECLARE r record;
BEGIN
  FOR r IN
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
             CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
               WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
             n.nspname, c.relname) AS stmt
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = {lit} AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
             CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, t.typname)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE n.nspname = {lit} AND t.typtype IN ('e', 'd', 'r', 'c')
      AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT format('DROP %s IF EXISTS %s CASCADE',
             CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE'
               ELSE 'FUNCTION' END,
             p.oid::regprocedure)
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = {lit}
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
  LOOP
    EXECUTE r.stmt;
  END LOOP;
END
{tag}"
    )
}

/// The name of the setting dualkey sets (to the commit key) just before its own `COMMIT`.
const COMMIT_SETTING: &str = "dualkey.restore_commit";

/// The name of the setting the guard sets (to the commit key) in the committing transaction.
const COMMITTED_SETTING: &str = "dualkey.restore_committed";

/// What psql prints, after the commit, when the guard saw dualkey's own `COMMIT` succeed.
pub(super) const COMMITTED_MARKER: &str = "dualkey-restore-committed:";

/// The commit guard, run right after `BEGIN`: a deferred constraint trigger on a temporary
/// table fires at `COMMIT` (or `PREPARE TRANSACTION`, or `SET CONSTRAINTS ALL IMMEDIATE`) and
/// raises unless `dualkey.restore_commit` holds `key`, which only dualkey's final SQL sets. When
/// it lets the commit through, it records `key` in `dualkey.restore_committed` (a session
/// setting, kept because its transaction commits), which the final marker query prints.
pub(super) fn commit_guard_sql(key: &str) -> String {
    let tag = format!("$dk{key}$");
    format!(
        "CREATE TEMPORARY TABLE dualkey_restore_guard (x int) ON COMMIT DROP;
CREATE FUNCTION pg_temp.dualkey_restore_guard() RETURNS trigger LANGUAGE plpgsql AS {tag}
BEGIN
  IF current_setting('{COMMIT_SETTING}', true) IS DISTINCT FROM '{key}' THEN
    RAISE EXCEPTION 'dualkey: the backup ends the restore''s transaction itself (COMMIT or END inside the file); dualkey commits a restore only after reading and checking the whole file, so nothing was committed';
  END IF;
  PERFORM set_config('{COMMITTED_SETTING}', '{key}', false);
  RETURN NULL;
END
{tag};
CREATE CONSTRAINT TRIGGER dualkey_restore_guard AFTER INSERT ON dualkey_restore_guard
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pg_temp.dualkey_restore_guard();
INSERT INTO dualkey_restore_guard VALUES (1);"
    )
}

/// What dualkey sends after the stream when, and only when, everything checked out. The
/// leading newline ends a last line without one; if the stream stopped inside a statement or a
/// `COPY` block, this text becomes part of it and never commits.
pub(super) fn commit_sql(key: &str) -> String {
    format!(
        "\nSET LOCAL {COMMIT_SETTING} = '{key}';\nCOMMIT;\nSELECT '{COMMITTED_MARKER}' || coalesce(current_setting('{COMMITTED_SETTING}', true), 'none');\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_commit_key_opens_the_guard() {
        let key = "0123abcd";
        let guard = commit_guard_sql(key);
        let commit = commit_sql(key);
        assert!(
            guard.contains(&format!("IS DISTINCT FROM '{key}'")),
            "{guard}"
        );
        assert!(guard.contains("DEFERRABLE INITIALLY DEFERRED"), "{guard}");
        assert!(
            commit.starts_with('\n'),
            "a last line without newline is ended first"
        );
        let set = commit
            .find(&format!("SET LOCAL {COMMIT_SETTING} = '{key}'"))
            .unwrap();
        let commit_at = commit.find("COMMIT;").unwrap();
        let marker = commit.find(COMMITTED_MARKER).unwrap();
        assert!(set < commit_at && commit_at < marker, "{commit}");
    }
}
