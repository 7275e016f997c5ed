-- A reading's identity is (device, boot, seq), whatever its ts: a device re-timed after a
-- clock sync may send a stored reading again with another ts. The unique index on readings
-- must hold the partition key ts, so it cannot say that. Each high-water-mark row (locked by
-- every batch writing that device and boot) therefore also keeps the set of seqs stored, as
-- a multirange (a run of consecutive seqs is one range), and the number of rows stored,
-- which serves the device list and the stats without counting the readings table.
ALTER TABLE readings_hwm
    ADD COLUMN seqs   int8multirange NOT NULL DEFAULT '{}',
    ADD COLUMN n_rows bigint NOT NULL DEFAULT 0;

UPDATE readings_hwm h SET seqs = s.seqs, n_rows = s.n
FROM (SELECT device_id, boot_id, range_agg(int8range(seq, seq, '[]')) AS seqs, count(*) AS n
      FROM readings GROUP BY 1, 2) s
WHERE h.device_id = s.device_id AND h.boot_id = s.boot_id;
