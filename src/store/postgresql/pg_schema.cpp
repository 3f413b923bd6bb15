#include "store/postgresql/pg_schema.hpp"

namespace parley::store::pg {

// Integers are BIGINT (ids, seqs and milliseconds all fit in 63 bits: Snowflake ids have 63);
// client bytes (payloads, client_msg_ids, keys) are BYTEA; names the server validated are TEXT.
const char* const schema_sql = R"sql(
CREATE TABLE IF NOT EXISTS parley_meta (
  key   TEXT PRIMARY KEY,
  value BIGINT NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS parley_user_ids;
CREATE SEQUENCE IF NOT EXISTS parley_device_ids;
-- Receipts stamps (parley.v2.Receipts.stamp): one per request that returns receipts.
CREATE SEQUENCE IF NOT EXISTS parley_receipt_stamps;

-- Accounts. media_bytes: what the user's media records hold (the quota's count).
CREATE TABLE IF NOT EXISTS users (
  user_id        BIGINT PRIMARY KEY,
  username       TEXT NOT NULL UNIQUE,
  hide_last_seen BOOLEAN NOT NULL DEFAULT FALSE,
  media_bytes    BIGINT NOT NULL DEFAULT 0,
  created_ms     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
  device_id    BIGINT PRIMARY KEY,
  user_id      BIGINT NOT NULL,
  token_sha256 BYTEA NOT NULL,
  created_ms   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user_id, device_id);

-- The prekey service: a device's identity and signed prekey, and its one-time prekeys in the
-- order they arrived (position), the oldest taken first.
CREATE TABLE IF NOT EXISTS device_keys (
  device_id               BIGINT PRIMARY KEY,
  identity_key            BYTEA NOT NULL,
  registration_id         BIGINT NOT NULL,
  identity_since_ms       BIGINT NOT NULL,
  updated_ms              BIGINT NOT NULL,
  signed_prekey_id        BIGINT NOT NULL,
  signed_prekey           BYTEA NOT NULL,
  signed_prekey_signature BYTEA NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS parley_prekey_positions;
CREATE TABLE IF NOT EXISTS one_time_prekeys (
  device_id  BIGINT NOT NULL,
  key_id     BIGINT NOT NULL,
  public_key BYTEA NOT NULL,
  position   BIGINT NOT NULL,
  PRIMARY KEY (device_id, key_id)
);
CREATE INDEX IF NOT EXISTS one_time_prekeys_oldest ON one_time_prekeys (device_id, position);

-- Chats: head is the last seq of the chat's log, moved under the row's lock by every append.
-- pushed_marks: a group's merged watermarks as last pushed (six be64: delivered, its holder,
-- the next lowest; read, its holder, the next lowest), or NULL before the first push.
CREATE TABLE IF NOT EXISTS chats (
  chat_id      BIGINT PRIMARY KEY,
  is_group     BOOLEAN NOT NULL,
  head         BIGINT NOT NULL DEFAULT 0,
  name         TEXT NOT NULL DEFAULT '',
  created_ms   BIGINT NOT NULL,
  pushed_marks BYTEA
);
-- The groups, few among the chats: without it the planner takes "the user's groups" (a
-- login's merged watermarks) as a scan of every chat for the few groups (5 ms at 43,000
-- chats, measured), with it as a look at this index, or at the user's own chats once groups
-- are many.
CREATE INDEX IF NOT EXISTS chats_groups ON chats (chat_id) WHERE is_group;
-- The 1:1 chat of a pair of users (smaller id first).
CREATE TABLE IF NOT EXISTS direct_chats (
  user_lo BIGINT NOT NULL,
  user_hi BIGINT NOT NULL,
  chat_id BIGINT NOT NULL,
  PRIMARY KEY (user_lo, user_hi)
);
-- Members, current and former: until_seq is 0 for a member, else the seq of the event that
-- removed it (the last entry it may get). position orders them by joining; joined_seq is the
-- seq of the event that added it (1 for a 1:1 chat and a group's founders); read_seq is the
-- member's read mark.
CREATE TABLE IF NOT EXISTS chat_members (
  chat_id    BIGINT NOT NULL,
  user_id    BIGINT NOT NULL,
  position   BIGINT NOT NULL,
  admin      BOOLEAN NOT NULL DEFAULT FALSE,
  joined_seq BIGINT NOT NULL DEFAULT 1,
  until_seq  BIGINT NOT NULL DEFAULT 0,
  read_seq   BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX IF NOT EXISTS chat_members_by_user ON chat_members (user_id, chat_id);

-- The chat log: one row per message, appended once. event: a group's system message
-- (parley.store.v1.GroupEventRecord, serialized), NULL for a message.
CREATE TABLE IF NOT EXISTS messages (
  chat_id       BIGINT NOT NULL,
  seq           BIGINT NOT NULL,
  message_id    BIGINT NOT NULL,
  sender_user   BIGINT NOT NULL,
  sender_device BIGINT NOT NULL,
  sender_name   TEXT NOT NULL,
  sent_at_ms    BIGINT NOT NULL,
  payload       BYTEA NOT NULL,
  cipher_type   INTEGER NOT NULL,
  event         BYTEA,
  media_id      TEXT,
  PRIMARY KEY (chat_id, seq)
);
-- Delivery cursors: the device has the chat up to seq.
CREATE TABLE IF NOT EXISTS cursors (
  chat_id   BIGINT NOT NULL,
  user_id   BIGINT NOT NULL,
  device_id BIGINT NOT NULL,
  seq       BIGINT NOT NULL,
  PRIMARY KEY (chat_id, user_id, device_id)
);
-- A send's first result per (device, client_msg_id), for retries within the dedupe window.
CREATE TABLE IF NOT EXISTS dedupe (
  sender_device BIGINT NOT NULL,
  client_msg_id BYTEA NOT NULL,
  chat_id       BIGINT NOT NULL,
  seq           BIGINT NOT NULL,
  message_id    BIGINT NOT NULL,
  sent_at_ms    BIGINT NOT NULL,
  PRIMARY KEY (sender_device, client_msg_id)
);
CREATE INDEX IF NOT EXISTS dedupe_by_age ON dedupe (sent_at_ms);

-- Media records (docs/architecture.md, "Media"); the partial index is the sweep's.
CREATE TABLE IF NOT EXISTS media (
  media_id   TEXT PRIMARY KEY,
  owner      BIGINT NOT NULL,
  size       BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  refs       BIGINT NOT NULL DEFAULT 0,
  upload_id  TEXT
);
-- Schema 2 → 3: the slot's bound multipart upload (Store::bind_upload).
ALTER TABLE media ADD COLUMN IF NOT EXISTS upload_id TEXT;
CREATE INDEX IF NOT EXISTS media_unreferenced ON media (created_ms, media_id) WHERE refs = 0;

-- Each node's Snowflake high-water mark, so that a restarted node never reissues an id.
CREATE TABLE IF NOT EXISTS node_ids (
  node_id BIGINT PRIMARY KEY,
  last_id BIGINT NOT NULL
);
-- A send, whole, as one statement (docs/scaling.md, "One round trip per group"): the writer
-- sends every request of a group without waiting for any of them and reads the results after
-- the COMMIT, one round trip per group. Every check comes before the first write, so a refusal
-- (r_status > 1) leaves nothing behind and needs no savepoint; a retry (r_status 1) returns the
-- first result. r_status: 0 appended, 1 a retry, 2 no such chat or not a member, 3 unknown
-- user, 4 self message, 5 wrong cipher type for the chat (or the id of a group's creation),
-- 6 stale recipient keys, 7 not the sender's blob. r_recipients: every member's device but the sender's, in member order.
-- p_chat 0: the 1:1 chat with p_peer, created with the id p_new_chat by its first message.
CREATE OR REPLACE FUNCTION parley_send(
  p_device BIGINT, p_client_msg_id BYTEA, p_fresh_after BIGINT, p_peer TEXT, p_sender BIGINT,
  p_chat BIGINT, p_new_chat BIGINT, p_message_id BIGINT, p_sender_name TEXT, p_now BIGINT,
  p_payload BYTEA, p_cipher_type INTEGER, p_registration BIGINT, p_media TEXT,
  OUT r_status INTEGER, OUT r_chat BIGINT, OUT r_seq BIGINT, OUT r_id BIGINT, OUT r_at BIGINT,
  OUT r_recipients BIGINT[])
LANGUAGE plpgsql AS $fn$
DECLARE
  v_chat  BIGINT := p_chat;
  v_peer  BIGINT;
  v_group BOOLEAN := FALSE;
  v_head  BIGINT;
  v_dup   RECORD;
BEGIN
  SELECT x.chat_id, x.seq, x.message_id, x.sent_at_ms INTO v_dup FROM dedupe x
   WHERE x.sender_device = p_device AND x.client_msg_id = p_client_msg_id
     AND x.sent_at_ms >= p_fresh_after;
  IF FOUND THEN
    -- A group creation's record (seq 1 of a group is its CREATE): the id was used for another
    -- request, and there is no message to answer with.
    IF v_dup.seq = 1 AND EXISTS (SELECT 1 FROM chats c WHERE c.chat_id = v_dup.chat_id
                                 AND c.is_group) THEN
      r_status := 5; RETURN;
    END IF;
    r_status := 1;
    r_chat := v_dup.chat_id;
    r_seq := v_dup.seq;
    r_id := v_dup.message_id;
    r_at := v_dup.sent_at_ms;
    RETURN;
  END IF;
  IF v_chat = 0 THEN
    SELECT u.user_id INTO v_peer FROM users u WHERE u.username = p_peer;
    IF NOT FOUND THEN r_status := 3; RETURN; END IF;
    IF v_peer = p_sender THEN r_status := 4; RETURN; END IF;
    SELECT dc.chat_id INTO v_chat FROM direct_chats dc
     WHERE dc.user_lo = LEAST(p_sender, v_peer) AND dc.user_hi = GREATEST(p_sender, v_peer);
  END IF;
  IF v_chat IS NOT NULL THEN
    SELECT c.is_group INTO v_group FROM chats c WHERE c.chat_id = v_chat;
    IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM chat_members m WHERE m.chat_id = v_chat
                                AND m.user_id = p_sender AND m.until_seq = 0) THEN
      r_status := 2; RETURN;
    END IF;
  END IF;
  -- A group takes sender-key messages only (parley.v2.CIPHER_TYPE_SENDER_KEY_MESSAGE, 4), a
  -- 1:1 chat only pairwise ones.
  IF v_group <> (p_cipher_type = 4) THEN
    r_status := 5; RETURN;
  END IF;
  -- A 1:1 message is encrypted for one registration of the other member (0: keys never set).
  -- (Each statement here has a plain parameter for each value, so that PostgreSQL keeps one
  -- generic plan for it instead of planning it again at every call.)
  IF NOT v_group THEN
    IF v_peer IS NULL THEN
      SELECT m.user_id INTO v_peer FROM chat_members m
       WHERE m.chat_id = v_chat AND m.user_id <> p_sender AND m.until_seq = 0;
    END IF;
    IF EXISTS (SELECT 1 FROM devices d JOIN device_keys k ON k.device_id = d.device_id
                WHERE d.user_id = v_peer AND k.registration_id <> 0
                  AND k.registration_id <> p_registration) THEN
      r_status := 6; RETURN;
    END IF;
  END IF;
  -- The last check writes: one more reference to the sender's own blob (the sweep keeps it).
  IF p_media IS NOT NULL THEN
    UPDATE media SET refs = refs + 1 WHERE media_id = p_media AND owner = p_sender;
    IF NOT FOUND THEN r_status := 7; RETURN; END IF;
  END IF;
  IF v_chat IS NULL THEN
    -- The pair's first message. The pair's lock (the group's advisory locks) keeps another
    -- node from creating the same chat meanwhile; if one did all the same, that one is used.
    INSERT INTO direct_chats (user_lo, user_hi, chat_id)
    VALUES (LEAST(p_sender, v_peer), GREATEST(p_sender, v_peer), p_new_chat)
    ON CONFLICT (user_lo, user_hi) DO NOTHING;
    IF FOUND THEN
      v_chat := p_new_chat;
      INSERT INTO chats (chat_id, is_group, head, created_ms) VALUES (v_chat, FALSE, 1, p_now);
      INSERT INTO chat_members (chat_id, user_id, position)
      VALUES (v_chat, LEAST(p_sender, v_peer), 1), (v_chat, GREATEST(p_sender, v_peer), 2);
      v_head := 1;
    ELSE
      SELECT dc.chat_id INTO v_chat FROM direct_chats dc
       WHERE dc.user_lo = LEAST(p_sender, v_peer) AND dc.user_hi = GREATEST(p_sender, v_peer);
    END IF;
  END IF;
  IF v_head IS NULL THEN
    -- The seq, under the chat's row lock, held until the group commits.
    UPDATE chats SET head = head + 1 WHERE chat_id = v_chat RETURNING head INTO v_head;
  END IF;
  INSERT INTO messages (chat_id, seq, message_id, sender_user, sender_device, sender_name,
                        sent_at_ms, payload, cipher_type, media_id)
  VALUES (v_chat, v_head, p_message_id, p_sender, p_device, p_sender_name, p_now, p_payload,
          p_cipher_type, p_media);
  -- A record of the same id is an expired one (none live was found above): replaced.
  INSERT INTO dedupe (sender_device, client_msg_id, chat_id, seq, message_id, sent_at_ms)
  VALUES (p_device, p_client_msg_id, v_chat, v_head, p_message_id, p_now)
  ON CONFLICT (sender_device, client_msg_id) DO UPDATE SET chat_id = EXCLUDED.chat_id,
    seq = EXCLUDED.seq, message_id = EXCLUDED.message_id, sent_at_ms = EXCLUDED.sent_at_ms;
  r_status := 0;
  r_chat := v_chat;
  r_seq := v_head;
  r_id := p_message_id;
  r_at := p_now;
  r_recipients := ARRAY(SELECT d.device_id FROM chat_members m JOIN devices d
                         ON d.user_id = m.user_id
                         WHERE m.chat_id = v_chat AND m.until_seq = 0 AND d.device_id <> p_device
                         ORDER BY m.position, d.device_id);
END
$fn$;
-- An ack, whole, as one statement, for the same reason as parley_send: every chat is checked
-- before any cursor moves (r_status 2: not a member of one, 5: a seq above its head; nothing
-- written then). p_chats: distinct. Then each cursor moves up (never back); where the user's
-- delivered watermark (its highest cursor) moved, a group is listed in r_groups and a 1:1
-- chat gets a receipt for each of the other member's devices: r_chats[i], r_seqs[i] to
-- r_devices[i], all under one receipts stamp (r_stamp, 0 if none).
CREATE OR REPLACE FUNCTION parley_ack(
  p_device BIGINT, p_user BIGINT, p_chats BIGINT[], p_seqs BIGINT[],
  OUT r_status INTEGER, OUT r_groups BIGINT[], OUT r_chats BIGINT[], OUT r_seqs BIGINT[],
  OUT r_devices BIGINT[], OUT r_stamp BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
  n           INTEGER := COALESCE(array_length(p_chats, 1), 0);
  v_group     BOOLEAN[] := '{}';
  v_member    BOOLEAN[] := '{}';
  v_is_group  BOOLEAN;
  v_head      BIGINT;
  v_until     BIGINT;
  v_cursor    BIGINT;
  v_delivered BIGINT;
  v_other     BIGINT;
  v_device    BIGINT;
BEGIN
  r_status := 0;
  r_groups := '{}';
  r_chats := '{}';
  r_seqs := '{}';
  r_devices := '{}';
  r_stamp := 0;
  FOR i IN 1 .. n LOOP
    SELECT c.is_group, c.head, m.until_seq INTO v_is_group, v_head, v_until
      FROM chats c JOIN chat_members m ON m.chat_id = c.chat_id AND m.user_id = p_user
     WHERE c.chat_id = p_chats[i];
    -- A former member acks up to the event that removed it (which it was sent).
    IF NOT FOUND OR (v_until <> 0 AND (NOT v_is_group OR p_seqs[i] > v_until)) THEN
      r_status := 2;
      RETURN;
    END IF;
    IF p_seqs[i] > v_head THEN
      r_status := 5;
      RETURN;
    END IF;
    v_group := v_group || v_is_group;
    v_member := v_member || (v_until = 0);
  END LOOP;
  FOR i IN 1 .. n LOOP
    SELECT c.seq INTO v_cursor FROM cursors c
     WHERE c.chat_id = p_chats[i] AND c.user_id = p_user AND c.device_id = p_device;
    CONTINUE WHEN p_seqs[i] <= COALESCE(v_cursor, 0);  -- cursors never move back
    SELECT COALESCE(MAX(c.seq), 0) INTO v_delivered FROM cursors c
     WHERE c.chat_id = p_chats[i] AND c.user_id = p_user;
    INSERT INTO cursors (chat_id, user_id, device_id, seq)
    VALUES (p_chats[i], p_user, p_device, p_seqs[i])
    ON CONFLICT (chat_id, user_id, device_id) DO UPDATE SET seq = GREATEST(cursors.seq, EXCLUDED.seq);
    -- Another device of the user had it already.
    CONTINUE WHEN p_seqs[i] <= v_delivered OR NOT v_member[i];
    IF v_group[i] THEN
      r_groups := r_groups || p_chats[i];
      CONTINUE;
    END IF;
    SELECT m.user_id INTO v_other FROM chat_members m
     WHERE m.chat_id = p_chats[i] AND m.user_id <> p_user AND m.until_seq = 0;
    FOR v_device IN SELECT d.device_id FROM devices d WHERE d.user_id = v_other LOOP
      r_chats := r_chats || p_chats[i];
      r_seqs := r_seqs || p_seqs[i];
      r_devices := r_devices || v_device;
    END LOOP;
  END LOOP;
  IF array_length(r_devices, 1) > 0 THEN
    r_stamp := nextval('parley_receipt_stamps');
  END IF;
END
$fn$;
-- A read mark as one statement, as parley_send: r_status 2 if the reader is not a current
-- member, 5 if p_up_to is above the chat's head (nothing written then). The mark moves up
-- only (r_moved: whether it did). A group's merged marks are pushed by group_receipts
-- (r_group); a 1:1 chat's other member's devices get a receipt (r_devices) under one
-- receipts stamp (r_stamp, 0 if none).
CREATE OR REPLACE FUNCTION parley_read(
  p_chat BIGINT, p_reader BIGINT, p_up_to BIGINT,
  OUT r_status INTEGER, OUT r_moved BOOLEAN, OUT r_group BOOLEAN, OUT r_devices BIGINT[],
  OUT r_stamp BIGINT)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_group BOOLEAN;
  v_head  BIGINT;
  v_read  BIGINT;
BEGIN
  r_status := 0;
  r_moved := FALSE;
  r_group := FALSE;
  r_devices := '{}';
  r_stamp := 0;
  SELECT c.is_group, c.head, m.read_seq INTO v_group, v_head, v_read
    FROM chats c JOIN chat_members m ON m.chat_id = c.chat_id AND m.user_id = p_reader
                                     AND m.until_seq = 0
   WHERE c.chat_id = p_chat;
  IF NOT FOUND THEN
    r_status := 2;
    RETURN;
  END IF;
  IF p_up_to > v_head THEN
    r_status := 5;
    RETURN;
  END IF;
  IF p_up_to <= v_read THEN
    RETURN;
  END IF;
  UPDATE chat_members SET read_seq = GREATEST(read_seq, p_up_to)
   WHERE chat_id = p_chat AND user_id = p_reader;
  r_moved := TRUE;
  r_group := v_group;
  IF v_group THEN
    RETURN;
  END IF;
  r_devices := ARRAY(SELECT d.device_id FROM chat_members m JOIN devices d
                      ON d.user_id = m.user_id
                      WHERE m.chat_id = p_chat AND m.user_id <> p_reader AND m.until_seq = 0);
  IF array_length(r_devices, 1) > 0 THEN
    r_stamp := nextval('parley_receipt_stamps');
  END IF;
END
$fn$;
)sql";

}  // namespace parley::store::pg
