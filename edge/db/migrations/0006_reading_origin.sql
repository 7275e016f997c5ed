-- Where a reading came from (shared.schemas.Origin): a device's sensor, a technician's manual
-- entry on the panel (edge/manual.py; its measurement and/or inspection note), or a device
-- while a SIMULATED fault was injected into it (Telemetry.sim). An alert opened on a
-- simulated reading is marked simulated, everywhere it shows.
ALTER TABLE readings ADD COLUMN origin TEXT NOT NULL DEFAULT 'sensor';
ALTER TABLE readings ADD COLUMN note TEXT;
ALTER TABLE alerts ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;

-- The next seq of each device's manual entries (they form the boot shared.schemas.MANUAL_BOOT):
-- a counter, not max(seq) of the rows, because retention deletes synced rows and a reused seq
-- would be dropped by the cloud as a duplicate.
CREATE TABLE manual_seqs (
    device   TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
