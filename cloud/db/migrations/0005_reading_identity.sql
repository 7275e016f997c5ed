-- A reading's identity is (device, boot, seq), whatever its ts: a device re-timed after a
-- clock sync may send a stored reading again with another ts. The unique index on readings
-- must hold the partition key ts, so it cannot say that. Per (device, boot), the seqs stored
-- are now exactly 0..max_seq except the gaps listed here (readings lost before the cloud, or
-- not uploaded yet): a row at or below the mark is new only if a gap holds its seq. Gaps
-- appear only when readings are missing, so the common batch (consecutive seqs above the
-- mark) writes none, and each batch touches only the gaps of the seqs it carries.
-- Writers hold the (device, boot) row of readings_hwm locked while they read or change its
-- gaps. n_rows counts the rows stored, for the device list and the stats without count(*).
CREATE TABLE readings_seq_gaps (
    device_id text NOT NULL,
    boot_id   text NOT NULL,
    lo        bigint NOT NULL,
    hi        bigint NOT NULL CHECK (hi >= lo),
    PRIMARY KEY (device_id, boot_id, lo)
);

ALTER TABLE readings_hwm ADD COLUMN n_rows bigint NOT NULL DEFAULT 0;

WITH s AS (
    SELECT device_id, boot_id, range_agg(int8range(seq, seq, '[]')) AS seqs, count(*) AS n
    FROM readings GROUP BY 1, 2
), g AS (
    UPDATE readings_hwm h SET n_rows = s.n FROM s
    WHERE h.device_id = s.device_id AND h.boot_id = s.boot_id
    RETURNING h.device_id, h.boot_id, h.max_seq, s.seqs
)
INSERT INTO readings_seq_gaps (device_id, boot_id, lo, hi)
SELECT device_id, boot_id, lower(r), upper(r) - 1
FROM g, unnest(int8multirange(int8range(0, g.max_seq, '[]')) - g.seqs) AS r;
