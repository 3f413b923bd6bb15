// The PostgreSQL schema of the chat log (docs/scaling.md has the table-by-table plan for Citus
// and YugabyteDB). Every table is keyed so that a chat's rows share its chat_id (the
// distribution column for Citus) and nothing needs a trigger or a foreign key across tables:
// plain tables, secondary indexes, sequences, ON CONFLICT, RETURNING, and three PL/pgSQL
// functions (parley_send, parley_ack, parley_read: the message path's requests as one
// statement each, so that a group of them needs one round trip).
#pragma once

namespace parley::store::pg {

// The version this build writes; a database with another is refused at open. schema_sql runs
// only on a database without a version or with an older one (a database of this version is
// taken as it is): a change to a table, an index or a function (its body or its parameters)
// must come with a new version, or nodes would never create it on an existing database.
inline constexpr int schema_version = 3;
// The oldest version this build upgrades in place: schema_sql alone brings a database of any
// version from it on to schema_version (the history below), and the record is rewritten, so
// that a node of an older build refuses the database from then on rather than putting its
// functions back.
//   1 → 2: parley_send refuses the client_msg_id of a group's creation (r_status 5) instead
//          of answering it as a retry; functions only.
//   2 → 3: media.upload_id, the multipart upload bound to a slot (ALTER TABLE ... ADD COLUMN
//          IF NOT EXISTS).
inline constexpr int oldest_upgradable_version = 1;

// Idempotent DDL (CREATE ... IF NOT EXISTS), run under an advisory lock by the opening node
// of a new or older database.
extern const char* const schema_sql;

}  // namespace parley::store::pg
