-- Nobody but its owner writes usage_counter_write_grants, whatever default privileges gave others when
-- it was created (manage.py db_roles revokes them too, for databases migrated before this).
DO $revoke$
DECLARE
    r record;
BEGIN
    REVOKE ALL ON usage_counter_write_grants FROM PUBLIC;
    FOR r IN
        SELECT DISTINCT a.grantee::regrole AS grantee
        FROM pg_class c, aclexplode(c.relacl) a
        WHERE c.oid = 'usage_counter_write_grants'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE ALL ON usage_counter_write_grants FROM %s', r.grantee);
    END LOOP;
END
$revoke$;
