-- pg_eventstore 0.2.0 -> 0.3.0.
\echo Use "ALTER EXTENSION pg_eventstore UPDATE TO '0.3.0'" to load this file. \quit

-- PostgreSQL 17 and later record a dependency of a role on an object whose initial privileges
-- (pg_init_privs) name it. The 0.1.0 -> 0.2.0 script removed such roles from pg_init_privs
-- directly, which left those dependency entries behind, so DROP ROLE refused the roles it had
-- migrated. Remove the entries, for any role, whose object belongs to the extension (or is its
-- schema) while its initial privileges no longer mention the role. Nothing else is touched; on
-- earlier majors there are no such entries.
DELETE FROM pg_catalog.pg_shdepend s
USING (SELECT d.classid, d.objid
       FROM pg_catalog.pg_depend d, pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'
         AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
         AND d.refobjid OPERATOR(pg_catalog.=) x.oid
         AND d.deptype OPERATOR(pg_catalog.=) 'e'
       UNION ALL
       SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, x.extnamespace
       FROM pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore') o
WHERE s.deptype OPERATOR(pg_catalog.=) 'i'
  AND s.dbid OPERATOR(pg_catalog.=) (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND s.classid OPERATOR(pg_catalog.=) o.classid
  AND s.objid OPERATOR(pg_catalog.=) o.objid
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_init_privs i, pg_catalog.aclexplode(i.initprivs) e
                  WHERE i.classoid OPERATOR(pg_catalog.=) s.classid
                    AND i.objoid OPERATOR(pg_catalog.=) s.objid
                    AND e.grantee OPERATOR(pg_catalog.=) s.refobjid);

-- Two columns every event has from 0.3.0 on: the version of its payload's shape (the events
-- already stored are version 1) and its consistency-boundary tags (none). Constant defaults:
-- the table is not rewritten.
ALTER TABLE eventstore.events
    ADD COLUMN schema_version integer NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
