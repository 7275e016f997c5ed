-- Where a reading came from (shared.schemas.Origin): a device's sensor, a technician's manual
-- entry on a gateway panel (with an optional inspection note, or only a note: then metrics is
-- '{}'), or a device while a SIMULATED fault was injected into it. An alert opened on a
-- simulated reading is marked simulated. Constant defaults: no table rewrite.
ALTER TABLE readings
    ADD COLUMN origin text NOT NULL DEFAULT 'sensor'
        CHECK (origin IN ('sensor', 'manual', 'simulated')),
    ADD COLUMN note text;
ALTER TABLE alerts ADD COLUMN simulated boolean NOT NULL DEFAULT false;

-- A device's manual entries in a range (the console lists their notes beside any chart, of
-- raw readings or of rollup buckets): a small index, not a walk of the device's readings.
CREATE INDEX readings_manual ON readings (device_id, ts) WHERE origin = 'manual';
