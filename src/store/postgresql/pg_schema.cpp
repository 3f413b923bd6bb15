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
  refs       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS media_unreferenced ON media (created_ms, media_id) WHERE refs = 0;

-- Each node's Snowflake high-water mark, so that a restarted node never reissues an id.
CREATE TABLE IF NOT EXISTS node_ids (
  node_id BIGINT PRIMARY KEY,
  last_id BIGINT NOT NULL
);
)sql";

}  // namespace parley::store::pg
