-- Device changes are announced to every replica so that each can keep an exact in-process device
-- cache (src/store/device_cache.rs). A trigger rather than a NOTIFY in the store's own statements:
-- changes made by another tool or by hand (psql) invalidate the caches too, and the notification is
-- part of the changing transaction (sent at commit, dropped on rollback).
-- Payload: JSON array [tenant, id]. Ids are at most 200 bytes (src/api/validate.rs), far below the
-- 8000-byte NOTIFY payload limit.
CREATE FUNCTION dmpushd_device_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('dmpushd_devices', json_build_array(OLD.tenant, OLD.id)::text);
    ELSE
        PERFORM pg_notify('dmpushd_devices', json_build_array(NEW.tenant, NEW.id)::text);
        IF TG_OP = 'UPDATE' AND (OLD.tenant, OLD.id) IS DISTINCT FROM (NEW.tenant, NEW.id) THEN
            PERFORM pg_notify('dmpushd_devices', json_build_array(OLD.tenant, OLD.id)::text);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_changed AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION dmpushd_device_changed();

-- TRUNCATE has no rows: tell every replica to forget all devices.
CREATE FUNCTION dmpushd_devices_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dmpushd_devices', '*');
    RETURN NULL;
END
$$;

CREATE TRIGGER devices_truncated AFTER TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION dmpushd_devices_truncated();
