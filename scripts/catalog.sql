-- The extension's catalog as one sorted listing: what an upgraded install must share with a
-- fresh one (scripts/upgrade_test.sh). Functions with their attributes and definitions, grants,
-- tables, columns, constraints, indexes, triggers and their enabled state, sequences, comments,
-- the extension's members and its config-dump registrations. Object names only, never OIDs.
WITH ext AS (SELECT oid, extname, extversion, extconfig, extcondition FROM pg_extension
             WHERE extname = 'pg_eventstore'),
-- Effective privileges: a NULL ACL is the object kind's default.
acl(kind, object, acl) AS (
    SELECT 'function', p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner))
    FROM pg_proc p WHERE p.pronamespace = 'eventstore'::regnamespace
    UNION ALL
    SELECT 'relation', c.oid::regclass::text,
           coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                         c.relowner))
    FROM pg_class c WHERE c.relnamespace = 'eventstore'::regnamespace
    UNION ALL
    SELECT 'schema', n.nspname::text, coalesce(n.nspacl, acldefault('n', n.nspowner))
    FROM pg_namespace n WHERE n.nspname = 'eventstore'
)
SELECT line FROM (
    SELECT 'extension ' || extname || ' ' || extversion AS line FROM ext
    UNION ALL
    SELECT 'config dump ' || c::regclass::text || ' where ' || coalesce(w, '')
    FROM ext, unnest(extconfig, extcondition) AS u(c, w)
    UNION ALL
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    FROM pg_depend d, ext WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
      AND d.deptype = 'e'
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || E'\n' || pg_get_functiondef(p.oid)
    FROM pg_proc p WHERE p.pronamespace = 'eventstore'::regnamespace AND p.prokind = 'f'
    UNION ALL
    SELECT 'grant on ' || a.kind || ' ' || a.object || ': '
           || coalesce((SELECT string_agg(CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                               ELSE x.grantee::regrole::text END
                                          || ' ' || x.privilege_type
                                          || CASE WHEN x.is_grantable THEN ' WITH GRANT' ELSE '' END,
                                          ', ' ORDER BY 1)
                        FROM aclexplode(a.acl) x
                        WHERE x.grantee NOT IN (SELECT e.extowner FROM pg_extension e
                                                WHERE e.extname = 'pg_eventstore')),
                       'none')
    FROM acl a
    UNION ALL
    -- pg_dump dumps the difference between these and the objects' privileges.
    SELECT 'initial privileges of ' || pg_describe_object(i.classoid, i.objoid, i.objsubid) || ': '
           || coalesce((SELECT string_agg(CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                               ELSE x.grantee::regrole::text END
                                          || ' ' || x.privilege_type, ', ' ORDER BY 1)
                        FROM aclexplode(i.initprivs) x), 'none')
    FROM pg_init_privs i, ext
    WHERE EXISTS (SELECT FROM pg_depend d
                  WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid
                    AND d.deptype = 'e' AND d.classid = i.classoid AND d.objid = i.objoid)
    UNION ALL
    SELECT 'relation ' || c.oid::regclass::text || ' kind ' || c.relkind::text
           || ' persistence ' || c.relpersistence::text
    FROM pg_class c WHERE c.relnamespace = 'eventstore'::regnamespace
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' #'
           || row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) || ' '
           || format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind IN ('r', 'v', 'c')
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'eventstore'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' '
           || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'eventstore'::regnamespace
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid)
    FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class
                                     WHERE relnamespace = 'eventstore'::regnamespace)
    UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled ' || t.tgenabled::text
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'eventstore'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass::text || ' ' || format_type(s.seqtypid, NULL)
           || ' start ' || s.seqstart || ' increment ' || s.seqincrement || ' min ' || s.seqmin
           || ' max ' || s.seqmax || ' cache ' || s.seqcache || ' cycle ' || s.seqcycle
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
    WHERE c.relnamespace = 'eventstore'::regnamespace
    UNION ALL
    SELECT 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': '
           || d.description
    FROM pg_description d
    WHERE (d.classoid = 'pg_proc'::regclass
           AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'eventstore'::regnamespace))
       OR (d.classoid = 'pg_class'::regclass
           AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = 'eventstore'::regnamespace))
) listing
ORDER BY line COLLATE "C";
