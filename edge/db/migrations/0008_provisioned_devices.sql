-- Devices given broker credentials on this gateway (`smaint provision device`). The password
-- itself is only in the broker's password file (hashed) and in the device's provisioning file;
-- this table says who was provisioned when, and who was revoked.
CREATE TABLE provisioned_devices (
    device_id       TEXT PRIMARY KEY,
    provisioned_ms  INTEGER NOT NULL,
    revoked_ms      INTEGER
);
