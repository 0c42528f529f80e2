-- The latest value polled per target and OID, written from the values chunks of snmp.get and
-- snmp.walk runs. `type` is the SNMP type as faro names it (integer, string, hex, oid,
-- ip_address, counter32, gauge32, timeticks, counter64, opaque, null, no_such_object,
-- no_such_instance, end_of_mib_view); `value` is its text (decimal numbers, the string, or
-- lowercase hex). An update changes no indexed column, and pages keep free space, so it is HOT.
CREATE TABLE target_values (
    target    text NOT NULL,
    oid       text NOT NULL,
    type      text NOT NULL,
    value     text NOT NULL,
    polled_at timestamptz NOT NULL,
    run_id    uuid NOT NULL,
    PRIMARY KEY (target, oid)
) WITH (fillfactor = 70);
