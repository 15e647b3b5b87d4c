-- DM bootstrap over WAP push (issue 13 item 4, DESIGN §10.4): `SEC:MAC` computed at submit time
-- (codec::bootstrap::Signature::to_stored). The IMSI/PIN the MAC is keyed with are never stored.
ALTER TABLE pushes ADD COLUMN bootstrap TEXT;
