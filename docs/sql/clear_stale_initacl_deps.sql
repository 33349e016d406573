-- PostgreSQL 17 and later: after ALTER EXTENSION pg_eventstore UPDATE from 0.1.0 to 0.2.0, the
-- roles whose grants the update migrated keep a dependency on the extension's objects
-- ("initial privileges for ..."), and DROP ROLE refuses to drop them. Run this in the database
-- of the store, as a superuser, before dropping such roles:
--
--   psql -d app -v roles='{orders_app,orders_auditor}' -f clear_stale_initacl_deps.sql
--
-- It removes only the entries that name one of the given roles for an object of the extension
-- while the object's initial privileges (pg_init_privs) no longer mention that role.
DELETE FROM pg_catalog.pg_shdepend s
USING (SELECT d.classid, d.objid
       FROM pg_catalog.pg_depend d, pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore'
         AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
         AND d.refobjid OPERATOR(pg_catalog.=) x.oid
         AND d.deptype OPERATOR(pg_catalog.=) 'e'
       UNION ALL  -- the schema: created for the extension, not one of its members
       SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, x.extnamespace
       FROM pg_catalog.pg_extension x
       WHERE x.extname OPERATOR(pg_catalog.=) 'pg_eventstore') o
WHERE s.deptype OPERATOR(pg_catalog.=) 'i'
  AND s.dbid OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database
                                     WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database())
  AND s.refobjid OPERATOR(pg_catalog.=) ANY (:'roles'::pg_catalog.regrole[]::pg_catalog.oid[])
  AND s.classid OPERATOR(pg_catalog.=) o.classid
  AND s.objid OPERATOR(pg_catalog.=) o.objid
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_init_privs i, pg_catalog.aclexplode(i.initprivs) e
                  WHERE i.classoid OPERATOR(pg_catalog.=) s.classid
                    AND i.objoid OPERATOR(pg_catalog.=) s.objid
                    AND e.grantee OPERATOR(pg_catalog.=) s.refobjid);
