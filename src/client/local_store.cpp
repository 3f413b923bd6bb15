#include "client/local_store.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace parley::client {

namespace {

// The tables, as a new database gets them (CREATE ... IF NOT EXISTS: also run on an older one
// before it is migrated).
constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS prekeys (id INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed_prekeys (
  id INTEGER PRIMARY KEY, record BLOB NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  peer TEXT NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL,
  PRIMARY KEY (peer, device));
CREATE TABLE IF NOT EXISTS identities (
  peer TEXT PRIMARY KEY, key BLOB NOT NULL, first_seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS identity_changes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, old_key BLOB NOT NULL,
  new_key BLOB NOT NULL, at_ms INTEGER NOT NULL, seen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (
  id INTEGER PRIMARY KEY AUTOINCREMENT, server_id INTEGER, peer TEXT NOT NULL,
  outgoing INTEGER NOT NULL, sent_at_ms INTEGER NOT NULL, text TEXT NOT NULL,
  problem TEXT NOT NULL DEFAULT '', chat_id INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL DEFAULT 0, kind INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS chats (chat_id INTEGER PRIMARY KEY, peer TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS watermarks (
  chat_id INTEGER NOT NULL, peer TEXT NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0,
  read_seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (chat_id, peer));
CREATE TABLE IF NOT EXISTS receipts_stamps (device_id INTEGER PRIMARY KEY, stamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sender_keys (
  group_id TEXT NOT NULL, sender TEXT NOT NULL, device INTEGER NOT NULL, record BLOB NOT NULL,
  PRIMARY KEY (group_id, sender, device));
CREATE TABLE IF NOT EXISTS chat_groups (
  chat_id INTEGER PRIMARY KEY, name TEXT NOT NULL DEFAULT '', member INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS sender_key_holders (
  chat_id INTEGER NOT NULL, member TEXT NOT NULL, key_id INTEGER NOT NULL,
  joined_seq INTEGER NOT NULL, delivered INTEGER NOT NULL, PRIMARY KEY (chat_id, member));
CREATE TABLE IF NOT EXISTS media (
  server_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, seq INTEGER NOT NULL,
  content BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (
  source TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS group_events (server_id INTEGER PRIMARY KEY, event BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending_group_messages (
  server_id INTEGER PRIMARY KEY, chat_id INTEGER NOT NULL, seq INTEGER NOT NULL,
  sender TEXT NOT NULL, device INTEGER NOT NULL, sent_at_ms INTEGER NOT NULL,
  payload BLOB NOT NULL);
)sql";

// Indexes, made once the messages table has every column (after a migration).
constexpr const char* indexes = R"sql(
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_server_id ON messages (server_id)
  WHERE server_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_peer ON messages (peer, id);
CREATE INDEX IF NOT EXISTS messages_by_chat ON messages (chat_id, seq);
CREATE INDEX IF NOT EXISTS pending_by_sender ON pending_group_messages (chat_id, sender, device, seq);
)sql";

// A query of message rows with the watermarks their status derives from, as read_message
// below reads them: in a 1:1 chat the peer's, in a group those of all the other members
// (peer "").
std::string message_query(std::string_view where) {
  return std::string(
             "SELECT m.server_id, m.outgoing, m.sent_at_ms, m.text, m.problem, m.chat_id, m.seq, "
             "m.peer, coalesce(w.delivered_seq, 0), coalesce(w.read_seq, 0), m.kind "
             "FROM messages m LEFT JOIN chat_groups g ON g.chat_id = m.chat_id "
             "LEFT JOIN watermarks w ON w.chat_id = m.chat_id "
             "AND w.peer = CASE WHEN g.chat_id IS NULL THEN m.peer ELSE '' END ") +
         std::string(where);
}

message_status derived_status(bool outgoing, std::uint64_t seq, const watermarks& w) {
  if (!outgoing || seq == 0) return message_status::unknown;
  if (w.read_seq >= seq) return message_status::read;  // read implies delivered
  if (w.delivered_seq >= seq) return message_status::delivered;
  return message_status::sent;
}

}  // namespace

// One use of a prepared statement from the store's cache: reset (and its bindings cleared) on
// destruction, ready for the next use. Binds are 1-based as in SQLite.
class local_store::statement {
 public:
  statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  ~statement() {
    if (stmt_) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }
  statement(statement&& o) noexcept : db_(o.db_), stmt_(o.stmt_) { o.stmt_ = nullptr; }

  statement& bind(int i, std::string_view v) {
    // SQLite binds a null pointer as NULL: an empty value is bound as "" (an empty blob).
    check(sqlite3_bind_blob(stmt_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  statement& text(int i, std::string_view v) {
    check(sqlite3_bind_text(stmt_, i, v.empty() ? "" : v.data(), static_cast<int>(v.size()),
                            SQLITE_TRANSIENT));
    return *this;
  }
  statement& bind(int i, std::int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  statement& null(int i) {
    check(sqlite3_bind_null(stmt_, i));
    return *this;
  }
  // True while there is a row.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
  }
  void run() {
    while (step()) {
    }
  }
  std::string blob(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p),
                           static_cast<std::size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  int changes() const { return sqlite3_changes(db_); }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail("bind");
  }
  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("local store: ") + what + ": " + sqlite3_errmsg(db_));
  }
  sqlite3* db_;
  sqlite3_stmt* stmt_;
};

local_store::local_store(const std::filesystem::path& file) : file_(file) {
  std::filesystem::create_directories(file.parent_path());
  ::chmod(file.parent_path().c_str(), 0700);
  // Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
  const int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + file.string());
  ::fchmod(fd, 0600);  // an existing file made by something else is tightened too
  ::close(fd);
  if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    const std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw std::runtime_error("cannot open " + file.string() + ": " + why);
  }
  sqlite3_busy_timeout(db_, 5000);  // another parley process on the same profile
  try {
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");
    migrate();
  } catch (...) {
    // No destructor runs for a constructor that throws: close the database here (a refused
    // newer file was left open, which LeakSanitizer reported as a leak at exit).
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    statements_.clear();
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

// Brings the database to schema_version in one transaction (another parley process opening
// the same profile waits, then finds it done). Version 0 is a new file or one of the first
// format, whose messages table lacks chat_id and seq: added, with 0 (unknown) in every old row.
// Version 2 lacks receipts_stamps, which `schema` creates (empty: no stamp kept yet). Versions
// 2 and 3 lack the group tables (created empty by `schema`) and messages.kind (added: 0, text,
// in every old row). Versions 2 to 4 lack the media and uploads tables (created empty).
// Versions 2 to 5 lack group_events (created empty: the events received before show their
// description only).
void local_store::migrate() {
  exec("BEGIN IMMEDIATE");
  try {
    std::int64_t version = 0;
    {
      auto s = prepare("PRAGMA user_version");
      if (s.step()) version = s.integer(0);
    }
    if (version > schema_version) {
      throw std::runtime_error("local store " + file_.string() + " has format version " +
                               std::to_string(version) + ", newer than this parley knows (" +
                               std::to_string(schema_version) +
                               "): use the parley that wrote it, or a newer one");
    }
    if (version < schema_version) {
      exec(schema);
      bool has_chat_id = false;
      {
        auto s = prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'chat_id'");
        has_chat_id = s.step();
      }
      if (!has_chat_id) {
        exec(
            "ALTER TABLE messages ADD COLUMN chat_id INTEGER NOT NULL DEFAULT 0;"
            "ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;");
      }
      bool has_kind = false;
      {
        auto s = prepare("SELECT 1 FROM pragma_table_info('messages') WHERE name = 'kind'");
        has_kind = s.step();
      }
      if (!has_kind) exec("ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;");
      exec(indexes);
      exec(("PRAGMA user_version = " + std::to_string(schema_version)).c_str());
    }
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

local_store::~local_store() {
  for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

void local_store::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    const std::string why = error ? error : "unknown error";
    sqlite3_free(error);
    throw std::runtime_error("local store " + file_.string() + ": " + why);
  }
}

// Statements are prepared once per store: parsing SQL was a third of a message's cost.
local_store::statement local_store::prepare(const char* sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("local store: prepare: ") + sqlite3_errmsg(db_));
    }
    it = statements_.emplace(sql, stmt).first;
  }
  return statement(db_, it->second);
}

local_store::transaction::transaction(local_store& store) : store_(store) {
  store_.prepare("BEGIN IMMEDIATE").run();
}

local_store::transaction::~transaction() {
  if (done_) return;
  try {
    store_.prepare("ROLLBACK").run();
  } catch (const std::exception&) {
    // Nothing more to undo: SQLite rolls back a failed transaction itself.
  }
}

void local_store::transaction::commit() {
  store_.prepare("COMMIT").run();
  done_ = true;
}

// --- key_store -----------------------------------------------------------------------------------

std::optional<std::string> local_store::meta(std::string_view key) {
  auto s = prepare("SELECT value FROM meta WHERE key = ?");
  s.text(1, key);
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::set_meta(std::string_view key, std::string_view value) {
  prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)")
      .text(1, key)
      .bind(2, value)
      .run();
}

std::optional<std::string> local_store::prekey(std::uint32_t id) {
  auto s = prepare("SELECT record FROM prekeys WHERE id = ?");
  s.bind(1, static_cast<std::int64_t>(id));
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_prekey(std::uint32_t id, std::string_view record) {
  prepare("INSERT OR REPLACE INTO prekeys (id, record) VALUES (?, ?)")
      .bind(1, static_cast<std::int64_t>(id))
      .bind(2, record)
      .run();
}

void local_store::remove_all_prekeys() { prepare("DELETE FROM prekeys").run(); }

void local_store::remove_prekey(std::uint32_t id) {
  prepare("DELETE FROM prekeys WHERE id = ?").bind(1, static_cast<std::int64_t>(id)).run();
}

std::size_t local_store::prekey_count() {
  auto s = prepare("SELECT count(*) FROM prekeys");
  s.step();
  return static_cast<std::size_t>(s.integer(0));
}

std::optional<std::string> local_store::signed_prekey(std::uint32_t id) {
  auto s = prepare("SELECT record FROM signed_prekeys WHERE id = ?");
  s.bind(1, static_cast<std::int64_t>(id));
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_signed_prekey(std::uint32_t id, std::string_view record,
                                    std::uint64_t created_ms) {
  // A re-store by the library (created_ms 0) keeps the creation time.
  prepare(
      "INSERT INTO signed_prekeys (id, record, created_ms) VALUES (?1, ?2, ?3) "
      "ON CONFLICT (id) DO UPDATE SET record = ?2, "
      "created_ms = CASE WHEN ?3 = 0 THEN created_ms ELSE ?3 END")
      .bind(1, static_cast<std::int64_t>(id))
      .bind(2, record)
      .bind(3, static_cast<std::int64_t>(created_ms))
      .run();
}

void local_store::remove_signed_prekey(std::uint32_t id) {
  prepare("DELETE FROM signed_prekeys WHERE id = ?").bind(1, static_cast<std::int64_t>(id)).run();
}

std::vector<std::pair<std::uint32_t, std::uint64_t>> local_store::signed_prekeys() {
  std::vector<std::pair<std::uint32_t, std::uint64_t>> out;
  auto s = prepare("SELECT id, created_ms FROM signed_prekeys ORDER BY created_ms, rowid");
  while (s.step()) {
    out.emplace_back(static_cast<std::uint32_t>(s.integer(0)),
                     static_cast<std::uint64_t>(s.integer(1)));
  }
  return out;
}

std::optional<std::string> local_store::session(std::string_view peer, std::int32_t device) {
  auto s = prepare("SELECT record FROM sessions WHERE peer = ? AND device = ?");
  s.text(1, peer).bind(2, std::int64_t{device});
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_session(std::string_view peer, std::int32_t device, std::string_view record) {
  prepare("INSERT OR REPLACE INTO sessions (peer, device, record) VALUES (?, ?, ?)")
      .text(1, peer)
      .bind(2, std::int64_t{device})
      .bind(3, record)
      .run();
}

void local_store::remove_session(std::string_view peer, std::int32_t device) {
  prepare("DELETE FROM sessions WHERE peer = ? AND device = ?")
      .text(1, peer)
      .bind(2, std::int64_t{device})
      .run();
}

std::size_t local_store::remove_sessions(std::string_view peer) {
  auto s = prepare("DELETE FROM sessions WHERE peer = ?");
  s.text(1, peer).run();
  return static_cast<std::size_t>(s.changes());
}

std::vector<std::int32_t> local_store::session_devices(std::string_view peer) {
  std::vector<std::int32_t> out;
  auto s = prepare("SELECT device FROM sessions WHERE peer = ? ORDER BY device");
  s.text(1, peer);
  while (s.step()) out.push_back(static_cast<std::int32_t>(s.integer(0)));
  return out;
}

std::optional<std::string> local_store::identity(std::string_view peer) {
  auto s = prepare("SELECT key FROM identities WHERE peer = ?");
  s.text(1, peer);
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_identity(std::string_view peer, std::string_view key, std::uint64_t now_ms) {
  auto old = identity(peer);
  if (old && *old == key) return;
  if (old) {
    prepare("INSERT INTO identity_changes (peer, old_key, new_key, at_ms) VALUES (?, ?, ?, ?)")
        .text(1, peer)
        .bind(2, *old)
        .bind(3, key)
        .bind(4, static_cast<std::int64_t>(now_ms))
        .run();
  }
  prepare("INSERT OR REPLACE INTO identities (peer, key, first_seen_ms) VALUES (?, ?, ?)")
      .text(1, peer)
      .bind(2, key)
      .bind(3, static_cast<std::int64_t>(now_ms))
      .run();
}

namespace {
template <class Statement>
std::vector<e2ee::identity_change> read_changes(Statement& s) {
  std::vector<e2ee::identity_change> out;
  while (s.step()) {
    out.push_back({s.blob(0), s.blob(1), s.blob(2), static_cast<std::uint64_t>(s.integer(3))});
  }
  return out;
}
}  // namespace

std::vector<e2ee::identity_change> local_store::take_unseen_identity_changes() {
  auto s = prepare(
      "SELECT peer, old_key, new_key, at_ms, id FROM identity_changes WHERE seen = 0 ORDER BY id");
  std::vector<e2ee::identity_change> out;
  std::int64_t last = 0;
  while (s.step()) {
    out.push_back({s.blob(0), s.blob(1), s.blob(2), static_cast<std::uint64_t>(s.integer(3))});
    last = s.integer(4);
  }
  // Only what was read is marked: a change recorded meanwhile by another process on the same
  // profile is shown by the next call.
  if (!out.empty())
    prepare("UPDATE identity_changes SET seen = 1 WHERE id <= ?").bind(1, last).run();
  return out;
}

std::vector<e2ee::identity_change> local_store::identity_changes(std::string_view peer) {
  auto s = prepare(
      "SELECT peer, old_key, new_key, at_ms FROM identity_changes WHERE peer = ? ORDER BY id");
  s.text(1, peer);
  return read_changes(s);
}

std::optional<std::string> local_store::sender_key(std::string_view group,
                                                   std::string_view sender, std::int32_t device) {
  auto s = prepare("SELECT record FROM sender_keys WHERE group_id = ? AND sender = ? AND device = ?");
  s.text(1, group).text(2, sender).bind(3, std::int64_t{device});
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_sender_key(std::string_view group, std::string_view sender,
                                 std::int32_t device, std::string_view record) {
  prepare(
      "INSERT OR REPLACE INTO sender_keys (group_id, sender, device, record) VALUES (?, ?, ?, ?)")
      .text(1, group)
      .text(2, sender)
      .bind(3, std::int64_t{device})
      .bind(4, record)
      .run();
}

void local_store::remove_sender_key(std::string_view group, std::string_view sender,
                                    std::int32_t device) {
  prepare("DELETE FROM sender_keys WHERE group_id = ? AND sender = ? AND device = ?")
      .text(1, group)
      .text(2, sender)
      .bind(3, std::int64_t{device})
      .run();
}

std::size_t local_store::remove_sender_keys(std::string_view group) {
  auto s = prepare("DELETE FROM sender_keys WHERE group_id = ?");
  s.text(1, group).run();
  return static_cast<std::size_t>(s.changes());
}

// --- history ---------------------------------------------------------------------------------

namespace {
// A row of message_query().
template <class Statement>
local_message read_message(const Statement& s) {
  local_message m;
  m.server_id = static_cast<std::uint64_t>(s.integer(0));
  m.direction = s.integer(1) ? message_direction::outgoing : message_direction::incoming;
  m.sent_at_ms = static_cast<std::uint64_t>(s.integer(2));
  m.text = s.blob(3);
  m.problem = s.blob(4);
  m.chat_id = static_cast<std::uint64_t>(s.integer(5));
  m.seq = static_cast<std::uint64_t>(s.integer(6));
  m.peer = s.blob(7);
  const watermarks w{static_cast<std::uint64_t>(s.integer(8)),
                     static_cast<std::uint64_t>(s.integer(9))};
  m.kind = static_cast<message_kind>(s.integer(10));
  m.status = derived_status(
      m.direction == message_direction::outgoing && m.kind == message_kind::text, m.seq, w);
  return m;
}
}  // namespace

bool local_store::add_message(const local_message& m) {
  auto s = prepare(
      "INSERT OR IGNORE INTO messages (server_id, peer, outgoing, sent_at_ms, text, problem, "
      "chat_id, seq, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (m.server_id != 0) {
    s.bind(1, static_cast<std::int64_t>(m.server_id));
  } else {
    s.null(1);
  }
  s.text(2, m.peer)
      .bind(3, std::int64_t{m.direction == message_direction::outgoing ? 1 : 0})
      .bind(4, static_cast<std::int64_t>(m.sent_at_ms))
      .text(5, m.text)
      .text(6, m.problem)
      .bind(7, static_cast<std::int64_t>(m.chat_id))
      .bind(8, static_cast<std::int64_t>(m.seq))
      .bind(9, static_cast<std::int64_t>(m.kind))
      .run();
  const bool added = s.changes() == 1;
  if (m.chat_id != 0 && !is_group(m.chat_id)) set_chat(m.peer, m.chat_id);
  return added;
}

void local_store::put_media(std::uint64_t server_id, std::uint64_t chat_id, std::uint64_t seq,
                            std::string_view content) {
  prepare("INSERT OR REPLACE INTO media (server_id, chat_id, seq, content) VALUES (?, ?, ?, ?)")
      .bind(1, static_cast<std::int64_t>(server_id))
      .bind(2, static_cast<std::int64_t>(chat_id))
      .bind(3, static_cast<std::int64_t>(seq))
      .bind(4, content)
      .run();
}

std::optional<local_media> local_store::media(std::uint64_t server_id) {
  auto s = prepare("SELECT chat_id, seq, content FROM media WHERE server_id = ?");
  s.bind(1, static_cast<std::int64_t>(server_id));
  if (!s.step()) return std::nullopt;
  return local_media{server_id, static_cast<std::uint64_t>(s.integer(0)),
                     static_cast<std::uint64_t>(s.integer(1)), s.blob(2)};
}

void local_store::put_group_event(std::uint64_t server_id, std::string_view event) {
  prepare("INSERT OR REPLACE INTO group_events (server_id, event) VALUES (?, ?)")
      .bind(1, static_cast<std::int64_t>(server_id))
      .bind(2, event)
      .run();
}

std::optional<std::string> local_store::group_event(std::uint64_t server_id) {
  auto s = prepare("SELECT event FROM group_events WHERE server_id = ?");
  s.bind(1, static_cast<std::int64_t>(server_id));
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::put_upload(const std::string& source, std::uint64_t size,
                             std::int64_t mtime_ns, std::string_view state) {
  prepare("INSERT OR REPLACE INTO uploads (source, size, mtime_ns, state) VALUES (?, ?, ?, ?)")
      .text(1, source)
      .bind(2, static_cast<std::int64_t>(size))
      .bind(3, mtime_ns)
      .bind(4, state)
      .run();
}

std::optional<std::string> local_store::upload(const std::string& source, std::uint64_t size,
                                               std::int64_t mtime_ns) {
  auto s = prepare("SELECT state FROM uploads WHERE source = ? AND size = ? AND mtime_ns = ?");
  s.text(1, source).bind(2, static_cast<std::int64_t>(size)).bind(3, mtime_ns);
  if (!s.step()) return std::nullopt;
  return s.blob(0);
}

void local_store::forget_upload(const std::string& source) {
  prepare("DELETE FROM uploads WHERE source = ?").text(1, source).run();
}

bool local_store::has_message(std::uint64_t server_id) {
  auto s = prepare("SELECT 1 FROM messages WHERE server_id = ?");
  s.bind(1, static_cast<std::int64_t>(server_id));
  return s.step();
}

std::optional<local_message> local_store::message(std::uint64_t server_id) {
  static const std::string sql = message_query("WHERE m.server_id = ?");
  auto s = prepare(sql.c_str());
  s.bind(1, static_cast<std::int64_t>(server_id));
  if (!s.step()) return std::nullopt;
  return read_message(s);
}

std::vector<local_message> local_store::history(std::string_view peer, std::size_t limit) {
  // By the server's time, then by the chat's order for messages of the same millisecond.
  static const std::string sql = message_query(
      "WHERE m.peer = ? AND m.kind = 0 AND g.chat_id IS NULL "
      "ORDER BY m.sent_at_ms DESC, m.seq DESC, m.id DESC LIMIT ?");
  auto s = prepare(sql.c_str());
  s.text(1, peer).bind(2, static_cast<std::int64_t>(limit));
  std::vector<local_message> out;
  while (s.step()) out.push_back(read_message(s));
  return {out.rbegin(), out.rend()};
}

std::vector<local_message> local_store::chat_history(std::uint64_t chat_id, std::size_t limit) {
  // Every entry of a chat has its seq (from its Envelope or SendResult): the chat's order.
  static const std::string sql = message_query(
      "WHERE m.chat_id = ? AND m.kind != 2 ORDER BY m.seq DESC, m.id DESC LIMIT ?");
  auto s = prepare(sql.c_str());
  s.bind(1, static_cast<std::int64_t>(chat_id)).bind(2, static_cast<std::int64_t>(limit));
  std::vector<local_message> out;
  while (s.step()) out.push_back(read_message(s));
  return {out.rbegin(), out.rend()};
}

std::optional<local_message> local_store::last_received_in(std::uint64_t chat_id) {
  static const std::string sql = message_query(
      "WHERE m.chat_id = ? AND m.outgoing = 0 AND m.kind != 2 ORDER BY m.seq DESC LIMIT 1");
  auto s = prepare(sql.c_str());
  s.bind(1, static_cast<std::int64_t>(chat_id));
  if (!s.step()) return std::nullopt;
  return read_message(s);
}

std::optional<local_message> local_store::last_received(std::string_view peer) {
  static const std::string sql = message_query(
      "WHERE m.chat_id = (SELECT chat_id FROM chats WHERE peer = ?1) AND m.peer = ?1 "
      "AND m.outgoing = 0 AND m.kind = 0 ORDER BY m.seq DESC LIMIT 1");
  auto s = prepare(sql.c_str());
  s.text(1, peer);
  if (!s.step()) return std::nullopt;
  return read_message(s);
}

std::optional<local_message> local_store::last_sent_up_to(std::uint64_t chat_id,
                                                          std::uint64_t up_to_seq) {
  static const std::string sql = message_query(
      "WHERE m.chat_id = ? AND m.outgoing = 1 AND m.kind = 0 AND m.seq <= ? "
      "ORDER BY m.seq DESC LIMIT 1");
  auto s = prepare(sql.c_str());
  s.bind(1, static_cast<std::int64_t>(chat_id)).bind(2, static_cast<std::int64_t>(up_to_seq));
  if (!s.step()) return std::nullopt;
  return read_message(s);
}

// --- chats and watermarks ----------------------------------------------------------------------

void local_store::set_chat(std::string_view peer, std::uint64_t chat_id) {
  if (chat_of(peer) == chat_id) return;  // the usual case: known, nothing written
  // REPLACE drops a row conflicting on either the chat or the peer: one pairing each.
  prepare("INSERT OR REPLACE INTO chats (chat_id, peer) VALUES (?, ?)")
      .bind(1, static_cast<std::int64_t>(chat_id))
      .text(2, peer)
      .run();
}

std::optional<std::uint64_t> local_store::chat_of(std::string_view peer) {
  auto s = prepare("SELECT chat_id FROM chats WHERE peer = ?");
  s.text(1, peer);
  if (!s.step()) return std::nullopt;
  return static_cast<std::uint64_t>(s.integer(0));
}

bool local_store::raise_watermark(std::uint64_t chat_id, std::string_view peer,
                                  message_status status, std::uint64_t up_to_seq) {
  if (up_to_seq == 0) return false;
  std::uint64_t delivered = 0;
  std::uint64_t read = 0;
  if (status == message_status::delivered) {
    delivered = up_to_seq;
  } else if (status == message_status::read) {
    read = up_to_seq;
  } else {
    return false;
  }
  // Updated only where it moves up: changes() then says whether it did.
  auto s = prepare(
      "INSERT INTO watermarks (chat_id, peer, delivered_seq, read_seq) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (chat_id, peer) DO UPDATE SET delivered_seq = max(delivered_seq, ?3), "
      "read_seq = max(read_seq, ?4) WHERE ?3 > delivered_seq OR ?4 > read_seq");
  s.bind(1, static_cast<std::int64_t>(chat_id))
      .text(2, peer)
      .bind(3, static_cast<std::int64_t>(delivered))
      .bind(4, static_cast<std::int64_t>(read))
      .run();
  return s.changes() == 1;
}

watermarks local_store::watermarks_of(std::uint64_t chat_id, std::string_view peer) {
  auto s = prepare("SELECT delivered_seq, read_seq FROM watermarks WHERE chat_id = ? AND peer = ?");
  s.bind(1, static_cast<std::int64_t>(chat_id)).text(2, peer);
  if (!s.step()) return {};
  return {static_cast<std::uint64_t>(s.integer(0)), static_cast<std::uint64_t>(s.integer(1))};
}

// --- groups ------------------------------------------------------------------------------------

void local_store::set_group(std::uint64_t chat_id, std::string_view name) {
  prepare(
      "INSERT INTO chat_groups (chat_id, name) VALUES (?1, ?2) "
      "ON CONFLICT (chat_id) DO UPDATE SET name = ?2 WHERE ?2 != '' AND ?2 != name")
      .bind(1, static_cast<std::int64_t>(chat_id))
      .text(2, name)
      .run();
}

void local_store::set_group_member(std::uint64_t chat_id, bool member) {
  prepare(
      "INSERT INTO chat_groups (chat_id, member) VALUES (?1, ?2) "
      "ON CONFLICT (chat_id) DO UPDATE SET member = ?2")
      .bind(1, static_cast<std::int64_t>(chat_id))
      .bind(2, std::int64_t{member ? 1 : 0})
      .run();
}

namespace {
template <class Statement>
local_group read_group(const Statement& s) {
  return {static_cast<std::uint64_t>(s.integer(0)), s.blob(1), s.integer(2) != 0};
}
}  // namespace

std::optional<local_group> local_store::group(std::uint64_t chat_id) {
  auto s = prepare("SELECT chat_id, name, member FROM chat_groups WHERE chat_id = ?");
  s.bind(1, static_cast<std::int64_t>(chat_id));
  if (!s.step()) return std::nullopt;
  return read_group(s);
}

bool local_store::is_group(std::uint64_t chat_id) {
  auto s = prepare("SELECT 1 FROM chat_groups WHERE chat_id = ?");
  s.bind(1, static_cast<std::int64_t>(chat_id));
  return s.step();
}

std::vector<local_group> local_store::groups_named(std::string_view name) {
  auto s = prepare("SELECT chat_id, name, member FROM chat_groups WHERE name = ? ORDER BY chat_id");
  s.text(1, name);
  std::vector<local_group> out;
  while (s.step()) out.push_back(read_group(s));
  return out;
}

std::vector<local_group> local_store::groups() {
  auto s = prepare("SELECT chat_id, name, member FROM chat_groups ORDER BY chat_id");
  std::vector<local_group> out;
  while (s.step()) out.push_back(read_group(s));
  return out;
}

std::map<std::string, key_holder> local_store::sender_key_holders(std::uint64_t chat_id) {
  auto s = prepare(
      "SELECT member, key_id, joined_seq, delivered FROM sender_key_holders WHERE chat_id = ?");
  s.bind(1, static_cast<std::int64_t>(chat_id));
  std::map<std::string, key_holder> out;
  while (s.step()) {
    out[s.blob(0)] = {static_cast<std::uint32_t>(s.integer(1)),
                      static_cast<std::uint64_t>(s.integer(2)), s.integer(3) != 0};
  }
  return out;
}

void local_store::add_sender_key_holder(std::uint64_t chat_id, std::string_view member,
                                        const key_holder& holder) {
  prepare(
      "INSERT OR REPLACE INTO sender_key_holders (chat_id, member, key_id, joined_seq, "
      "delivered) VALUES (?, ?, ?, ?, ?)")
      .bind(1, static_cast<std::int64_t>(chat_id))
      .text(2, member)
      .bind(3, static_cast<std::int64_t>(holder.key_id))
      .bind(4, static_cast<std::int64_t>(holder.joined_seq))
      .bind(5, std::int64_t{holder.delivered ? 1 : 0})
      .run();
}

void local_store::forget_sender_key_holders(std::uint64_t chat_id) {
  prepare("DELETE FROM sender_key_holders WHERE chat_id = ?")
      .bind(1, static_cast<std::int64_t>(chat_id))
      .run();
}

bool local_store::add_pending(const pending_group_message& m) {
  auto s = prepare(
      "INSERT OR IGNORE INTO pending_group_messages (server_id, chat_id, seq, sender, device, "
      "sent_at_ms, payload) VALUES (?, ?, ?, ?, ?, ?, ?)");
  s.bind(1, static_cast<std::int64_t>(m.server_id))
      .bind(2, static_cast<std::int64_t>(m.chat_id))
      .bind(3, static_cast<std::int64_t>(m.seq))
      .text(4, m.sender)
      .bind(5, std::int64_t{m.device})
      .bind(6, static_cast<std::int64_t>(m.sent_at_ms))
      .bind(7, m.payload)
      .run();
  return s.changes() == 1;
}

bool local_store::has_pending(std::uint64_t server_id) {
  auto s = prepare("SELECT 1 FROM pending_group_messages WHERE server_id = ?");
  s.bind(1, static_cast<std::int64_t>(server_id));
  return s.step();
}

namespace {
template <class Statement>
std::vector<pending_group_message> read_pending(Statement& s) {
  std::vector<pending_group_message> out;
  while (s.step()) {
    out.push_back({static_cast<std::uint64_t>(s.integer(0)),
                   static_cast<std::uint64_t>(s.integer(1)),
                   static_cast<std::uint64_t>(s.integer(2)), s.blob(3),
                   static_cast<std::int32_t>(s.integer(4)),
                   static_cast<std::uint64_t>(s.integer(5)), s.blob(6)});
  }
  return out;
}
}  // namespace

std::vector<pending_group_message> local_store::pending_from(std::uint64_t chat_id,
                                                             std::string_view sender,
                                                             std::int32_t device) {
  auto s = prepare(
      "SELECT server_id, chat_id, seq, sender, device, sent_at_ms, payload "
      "FROM pending_group_messages WHERE chat_id = ? AND sender = ? AND device = ? ORDER BY seq");
  s.bind(1, static_cast<std::int64_t>(chat_id)).text(2, sender).bind(3, std::int64_t{device});
  return read_pending(s);
}

std::vector<pending_group_message> local_store::pending_in(std::uint64_t chat_id) {
  auto s = prepare(
      "SELECT server_id, chat_id, seq, sender, device, sent_at_ms, payload "
      "FROM pending_group_messages WHERE chat_id = ? ORDER BY seq");
  s.bind(1, static_cast<std::int64_t>(chat_id));
  return read_pending(s);
}

void local_store::remove_pending(std::uint64_t server_id) {
  prepare("DELETE FROM pending_group_messages WHERE server_id = ?")
      .bind(1, static_cast<std::int64_t>(server_id))
      .run();
}

// --- receipts stamp ----------------------------------------------------------------------------

std::uint64_t local_store::receipts_stamp(std::uint64_t device_id) {
  auto s = prepare("SELECT stamp FROM receipts_stamps WHERE device_id = ?");
  s.bind(1, static_cast<std::int64_t>(device_id));
  if (!s.step()) return 0;
  return static_cast<std::uint64_t>(s.integer(0));
}

bool local_store::raise_receipts_stamp(std::uint64_t device_id, std::uint64_t stamp) {
  if (stamp == 0) return false;
  // SQLite's integers are signed: a stamp is stored as its 64 bits, and ?2 > stamp is decided
  // as unsigned (a negative value is one of 2^63 and above). Updated only where it moves up:
  // changes() then says whether it did.
  auto s = prepare(
      "INSERT INTO receipts_stamps (device_id, stamp) VALUES (?1, ?2) "
      "ON CONFLICT (device_id) DO UPDATE SET stamp = ?2 "
      "WHERE CASE WHEN (?2 < 0) = (stamp < 0) THEN ?2 > stamp ELSE ?2 < 0 END");
  s.bind(1, static_cast<std::int64_t>(device_id)).bind(2, static_cast<std::int64_t>(stamp)).run();
  return s.changes() == 1;
}

}  // namespace parley::client
