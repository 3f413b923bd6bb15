#include "store/postgresql/postgresql_store.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/big_endian.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/snowflake.hpp"
#include "common/thread_name.hpp"
#include "parley/store/v1/records.pb.h"
#include "store/postgresql/pg_connection.hpp"
#include "store/postgresql/pg_schema.hpp"
#include "store/write_health.hpp"
#include "store/write_queue.hpp"
#include "store/watermarks.hpp"

namespace parley::store {
namespace {

namespace pb = parley::store::v1;
using pg::connection;
using pg::params;
using pg::rows;

// Every BIGINT column holds at most 2^63 - 1: an unbounded seq (UINT64_MAX) is clamped to it.
std::uint64_t clamp63(std::uint64_t v) {
  return std::min<std::uint64_t>(v, std::numeric_limits<std::int64_t>::max());
}
// An id the client names fits a BIGINT (else no row has it: chat ids are Snowflake ids).
bool fits_bigint(std::uint64_t v) {
  return v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
}

// A TEXT[] or BIGINT[] parameter in the array's text form ({"a","b"} / {1,2}).
std::string text_array(const std::vector<std::string>& values) {
  std::string out = "{";
  for (const auto& v : values) {
    if (out.size() > 1) out.push_back(',');
    out.push_back('"');
    for (char c : v) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}
std::string bigint_array(const std::vector<std::uint64_t>& values) {
  std::string out = "{";
  for (auto v : values) {
    if (out.size() > 1) out.push_back(',');
    out.append(std::to_string(v));
  }
  out.push_back('}');
  return out;
}

// A group's merged marks as stored in chats.pushed_marks: six be64.
std::string marks_bytes(const group_marks& m) {
  std::string out;
  for (std::uint64_t v : {m.delivered, m.delivered_holder, m.delivered_next, m.read,
                          m.read_holder, m.read_next})
    append_be64(out, v);
  return out;
}
std::optional<group_marks> parse_marks(std::string_view b) {
  if (b.size() != 48) return std::nullopt;
  group_marks m;
  std::uint64_t* fields[] = {&m.delivered, &m.delivered_holder, &m.delivered_next,
                             &m.read,      &m.read_holder,      &m.read_next};
  for (std::size_t i = 0; i < 6; ++i) *fields[i] = read_be64(b, i * 8);
  return m;
}

// Receipts returned by a write carry their request's stamp.
void stamp_all(std::vector<receipt_delivery>& receipts, std::uint64_t stamp) {
  for (auto& r : receipts) r.mark.stamp = stamp;
}

// Keys of PostgreSQL advisory locks (63 bits: BIGINT), one per thing two nodes may write at
// once. A chat by its id (Snowflake ids have 63 bits); a 1:1 chat named by its members'
// names, a user, a name being registered: FNV-1a of a tag and the text. Two things that share
// a key only wait for each other.
std::uint64_t fnv1a(std::string_view tag, std::string_view a, std::string_view b = {}) {
  std::uint64_t h = 14695981039346656037ull;
  for (auto part : {tag, std::string_view("\0", 1), a, std::string_view("\0", 1), b}) {
    for (unsigned char c : part) {
      h ^= c;
      h *= 1099511628211ull;
    }
  }
  return h & 0x7fffffffffffffffull;
}
std::uint64_t chat_lock(std::uint64_t chat) { return chat & 0x7fffffffffffffffull; }
std::uint64_t pair_lock(const std::string& a, const std::string& b) {
  return fnv1a("pair", std::min(a, b), std::max(a, b));
}
std::uint64_t user_lock(std::uint64_t user) { return fnv1a("user", std::to_string(user)); }
std::uint64_t device_lock(std::uint64_t device) {
  return fnv1a("device", std::to_string(device));
}
std::uint64_t name_lock(const std::string& name) { return fnv1a("name", name); }

// --- statements ------------------------------------------------------------------------------

// Keeps a request's first result for retries: an INSERT into dedupe of `values` (sender_device,
// client_msg_id, chat_id, seq, message_id, sent_at_ms, as parameters). A record of the same id
// is an expired one (the caller found no live one, under the device's lock), and is replaced.
std::string dedupe_insert_sql(const std::string& values) {
  return "INSERT INTO dedupe (sender_device, client_msg_id, chat_id, seq, message_id, "
         "sent_at_ms) VALUES (" + values + ") "
         "ON CONFLICT (sender_device, client_msg_id) DO UPDATE SET chat_id = EXCLUDED.chat_id, "
         "seq = EXCLUDED.seq, message_id = EXCLUDED.message_id, "
         "sent_at_ms = EXCLUDED.sent_at_ms";
}

constexpr const char* message_columns =
    "seq, message_id, sender_user, sender_device, sender_name, sent_at_ms, payload, cipher_type, "
    "event, media_id";

// A log entry from a row of `message_columns` starting at column 0.
result<chat_message> message_of(std::uint64_t chat, const rows& r, int i) {
  chat_message m;
  m.chat = chat;
  m.seq = r.u64(i, 0);
  m.id = r.u64(i, 1);
  m.sender = r.u64(i, 2);
  m.sender_device = r.u64(i, 3);
  m.sender_name = std::string(r.text(i, 4));
  m.sent_at_ms = r.u64(i, 5);
  m.payload = r.bytes(i, 6);
  m.cipher_type = static_cast<std::uint32_t>(r.u64(i, 7));
  if (!r.is_null(i, 8)) {
    pb::GroupEventRecord e;
    const std::string b = r.bytes(i, 8);
    if (!e.ParseFromString(b) || e.change() < 1 || e.change() > 7) return errc::corrupt;
    m.event = std::make_shared<const group_event>(
        group_event{static_cast<group_change>(e.change()), e.user(), e.name(),
                    {e.members().begin(), e.members().end()}});
  }
  if (!r.is_null(i, 9)) m.media = std::string(r.text(i, 9));
  return m;
}

// parley_send's, parley_ack's and parley_read's r_status (pg_schema.cpp): errc{} for 0 (done),
// else the refusal it stands for (a send's 1, a retry, is the caller's to take first).
errc refusal_of(std::uint64_t status) {
  switch (status) {
    case 0:
      return errc{};
    case 2:
      return errc::not_found;  // no such chat, or not a (current) member
    case 3:
      return errc::unknown_user;
    case 4:
      return errc::self_message;
    case 5:
      return errc::invalid_argument;  // a cipher type or seq the chat does not take, an id reused
    case 6:
      return errc::stale_keys;
    case 7:
      return errc::media_not_found;
    default:
      return errc::corrupt;
  }
}

// A send's outcome from parley_send's row (pg_schema.cpp has the statuses).
result<send_outcome> send_outcome_of(const rows& row, const send_request& request) {
  if (row.size() != 1) return errc::io_error;
  const std::uint64_t status = row.u64(0, 0);
  if (const errc refused = refusal_of(status); status != 1 && refused != errc{}) return refused;
  send_outcome out;
  out.chat = row.u64(0, 1);
  out.seq = row.u64(0, 2);
  out.id = row.u64(0, 3);
  out.sent_at_ms = row.u64(0, 4);
  if (status == 1) {
    out.duplicate = true;
    return out;
  }
  out.recipients = row.bigints(0, 5);
  out.message = std::make_shared<const chat_message>(chat_message{
      out.chat, out.seq, out.id, request.sender, request.sender_device, request.sender_name,
      out.sent_at_ms, request.payload, request.cipher_type, nullptr, request.media});
  return out;
}

// An ack's outcome from parley_ack's row: `name` is the acking user's, `now` the time its
// watermarks carry.
result<watermark_moves> ack_outcome_of(const rows& row, const std::string& name,
                                       std::uint64_t now) {
  if (row.size() != 1) return errc::io_error;
  if (const errc refused = refusal_of(row.u64(0, 0)); refused != errc{}) return refused;
  watermark_moves out;
  out.groups = row.bigints(0, 1);  // merged: group_receipts
  const auto chats = row.bigints(0, 2);
  const auto seqs = row.bigints(0, 3);
  const auto devices = row.bigints(0, 4);
  if (chats.size() != seqs.size() || chats.size() != devices.size()) return errc::corrupt;
  const std::uint64_t stamp = row.u64(0, 5);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    out.receipts.push_back(
        {devices[i], watermark{chats[i], name, message_status::delivered, seqs[i], now, stamp}});
  }
  return out;
}

// A read mark's outcome from parley_read's row (`name`, `now`: as for an ack).
result<watermark_moves> read_outcome_of(const rows& row, std::uint64_t chat, std::uint64_t up_to,
                                        const std::string& name, std::uint64_t now) {
  if (row.size() != 1) return errc::io_error;
  if (const errc refused = refusal_of(row.u64(0, 0)); refused != errc{}) return refused;
  watermark_moves out;
  if (!row.boolean(0, 1)) return out;  // the mark was there already
  if (row.boolean(0, 2)) {
    out.groups.push_back(chat);  // merged: group_receipts
    return out;
  }
  const std::uint64_t stamp = row.u64(0, 4);
  for (std::uint64_t device : row.bigints(0, 3)) {
    out.receipts.push_back(
        {device, watermark{chat, name, message_status::read, up_to, now, stamp}});
  }
  return out;
}

// --- the writers -----------------------------------------------------------------------------
// A queued write: `apply` runs the request inside the group's transaction (and savepoint)
// and returns whether it succeeded and how to complete it once the group's fate is known
// (errc{} when committed). `apply` may run more than once: a group that meets a deadlock
// with another node or writer is rolled back and applied again.
struct finisher {
  bool ok = false;
  std::function<void(errc)> finish;
};
struct command {
  std::function<finisher(connection&)> apply;
  std::function<void(errc)> refuse;
  std::vector<std::uint64_t> locks;  // lock_key()s of what it writes that others write too
  // The request is one statement that writes nothing unless it succeeds (parley_send,
  // parley_ack, parley_read, pass_own_entries' upsert): it needs no savepoint of its own,
  // and its result is read after the group's COMMIT. A refusal comes back as a row; an error
  // fails the transaction, and the group is applied again request by request, each inside a
  // savepoint.
  bool one_statement = false;
};

// One writer: a thread with a connection of its own (in pipeline mode) and a queue. A node's
// requests are spread over its writers by a route key (the sending device, the chat, the
// user): one device's sends and acks stay in order on one writer, and the writers' groups run
// side by side in the database, which orders them as it orders two nodes' groups (each
// group's advisory locks, taken sorted). One connection can only do one statement at a time:
// with one writer, a node's writes were bound by the database's time per statement plus the
// writer's own, one after the other.
struct writer_lane {
  std::size_t index = 0;
  write_queue<command> queue;
  std::thread thread;
  connection db;
  // This group's highest Snowflake id, written to node_ids with it.
  std::uint64_t last_id = 0;
  bool ids_issued = false;
  std::string last_failure;  // why the last group failed
  // Usernames by user id: they never change, so a cache needs no invalidation; cleared when
  // it passes max_cached_names.
  std::unordered_map<std::uint64_t, std::string> names;
  std::chrono::steady_clock::time_point last_connect_attempt{};
};
constexpr std::size_t max_cached_names = 1u << 18;
// The writer whose thread this is (null on any other thread).
thread_local writer_lane* this_writer = nullptr;

}  // namespace

struct postgresql_store::impl {
  explicit impl(postgresql_options o) : options(std::move(o)), ids(options.node_id) {
    const std::size_t n = std::max<std::size_t>(1, options.writers);
    for (std::size_t i = 0; i < n; ++i) {
      lanes.push_back(std::make_unique<writer_lane>());
      lanes.back()->index = i;
    }
  }

  postgresql_options options;

  std::vector<std::unique_ptr<writer_lane>> lanes;
  std::atomic<std::uint64_t> pending_count{0};  // over every writer
  std::atomic<bool> stopping{false};
  std::mutex ids_mutex;
  snowflake ids;
  // The id high-water mark node_ids holds for this node (committed). A group whose ids pass
  // it writes a new one, a lease of id_lease ahead of its last id, so that node_ids (one row
  // per node, which every writer's group would otherwise update and wait for) is written
  // about once per lease instead of per group. A restarted node starts past it.
  std::atomic<std::uint64_t> recorded_ids{0};
  static constexpr std::uint64_t id_lease_ms = 10'000;

  // On a writer's thread.
  result<std::string> cached_username(connection& db, std::uint64_t user) {
    auto& names = this_writer->names;
    if (auto it = names.find(user); it != names.end()) return it->second;
    auto name = username_of(db, user);
    if (!name) return name;
    if (names.size() >= max_cached_names) names.clear();
    names.emplace(user, *name);
    return name;
  }
  std::chrono::steady_clock::time_point last_dedupe_purge = std::chrono::steady_clock::now();

  // --- readers -----------------------------------------------------------------------------
  using read_task = std::function<void(connection&)>;
  std::mutex read_mutex;
  std::condition_variable read_wake;
  std::deque<read_task> reads;
  bool readers_stopping = false;
  std::vector<std::thread> reader_threads;
  std::atomic<bool> stopped{false};

  // --- health ------------------------------------------------------------------------------
  write_health health{"store: database reachable again, writes resumed"};
  void set_health(bool ok, std::string reason) { health.set(ok, std::move(reason)); }

  // Opens `db` with the session settings the store needs (the writer's in pipeline mode,
  // once `pipeline`). False if it cannot.
  bool connect(connection& db, bool writer_session, std::string& error, bool pipeline = true) {
    db.set_answer_timeout(options.answer_timeout);
    if (!db.open(options.conninfo, error)) return false;
    // Statements that wait on a lock held by a stalled node give up (their requests are
    // refused BUSY, for the client to send again) instead of stalling this node's writer.
    // Notices (CREATE ... IF NOT EXISTS's "already exists, skipping") would go to stderr.
    // What the code relies on, whatever a database's or role's defaults say: bytea read back
    // as hex (rows::bytes), and READ COMMITTED (each statement sees what committed before
    // it, which the advisory locks' waits count on).
    std::string settings = "SET lock_timeout = " + std::to_string(options.lock_timeout.count()) +
                           "; SET statement_timeout = '30s'; "
                           "SET client_min_messages = warning; SET bytea_output = hex; "
                           "SET default_transaction_isolation = 'read committed'";
    // Durable before a completion runs, whatever the server's default says (off only when
    // the node runs with --no-fsync).
    if (writer_session)
      settings += options.sync ? "; SET synchronous_commit = on" : "; SET synchronous_commit = off";
    if (!db.run(settings) || (writer_session && pipeline && !db.enter_pipeline())) {
      error = db.error_message();
      db.close();
      return false;
    }
    return true;
  }

  // Writer thread: whether the writer has a connection, opening one at most every
  // reconnect_interval.
  bool writer_connected(writer_lane& w) {
    if (w.db.ok()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now - w.last_connect_attempt < options.reconnect_interval && !health.writable())
      return false;
    w.last_connect_attempt = now;
    std::string error;
    if (!connect(w.db, true, error)) {
      set_health(false, "database unreachable: " + error);
      return false;
    }
    set_health(true, {});
    return true;
  }

  // On a writer's thread: a fresh Snowflake id, recorded as its group's high-water mark.
  std::uint64_t next_id() {
    std::uint64_t id = 0;
    {
      std::lock_guard lock(ids_mutex);
      id = ids.next(now_ms());
    }
    if (this_writer != nullptr) {
      this_writer->ids_issued = true;
      this_writer->last_id = std::max(this_writer->last_id, id);
    }
    return id;
  }

  // `locks`: the lock_key()s of the rows the request writes that another node's requests may
  // write too (a chat's row and its members', a user's row, a pair's first chat): the group
  // takes them all, sorted, before it applies anything (commit_group).
  // `route` picks the writer (default: the first lock, else writer 0): requests whose order
  // matters give the same one.
  template <class T, class Apply>
  void write(completion<T> done, Apply apply, std::vector<std::uint64_t> locks = {},
             std::optional<std::uint64_t> route = std::nullopt) {
    auto shared_done = std::make_shared<completion<T>>(std::move(done));
    command c;
    c.locks = std::move(locks);
    c.apply = [shared_done, apply = std::move(apply)](connection& db) mutable -> finisher {
      auto r = std::make_shared<result<T>>(apply(db));
      const bool ok = r->has_value();
      return {ok, [shared_done, r](errc commit) {
                if (commit != errc{} && r->has_value()) {
                  (*shared_done)(commit);
                  return;
                }
                (*shared_done)(std::move(*r));
              }};
    };
    c.refuse = [shared_done](errc e) { (*shared_done)(e); };
    const std::uint64_t key = route ? *route : c.locks.empty() ? 0 : c.locks.front();
    push(std::move(c), key);
  }

  // A request that is one statement (command::one_statement): `apply` sends it with
  // connection::collect and returns how to read the outcome from its rows, which runs once the
  // group has committed. Its failures before that: the statement's own, or one that `apply`
  // waited for (a user's name), after which the group is applied again request by request;
  // and a lost connection.
  template <class T, class Apply>
  void write_one_statement(completion<T> done, Apply apply, std::vector<std::uint64_t> locks,
                           std::uint64_t route) {
    auto shared_done = std::make_shared<completion<T>>(std::move(done));
    command c;
    c.locks = std::move(locks);
    c.one_statement = true;
    c.apply = [shared_done, apply = std::move(apply)](connection& db) mutable -> finisher {
      auto outcome = apply(db);  // result<std::function<result<T>()>>
      if (!outcome) {
        return {false, [shared_done, e = outcome.error()](errc) { (*shared_done)(e); }};
      }
      return {true, [shared_done, read = std::move(*outcome)](errc commit) {
                if (commit != errc{}) {
                  (*shared_done)(commit);
                  return;
                }
                (*shared_done)(read());
              }};
    };
    c.refuse = [shared_done](errc e) { (*shared_done)(e); };
    push(std::move(c), route);
  }

  void push(command c, std::uint64_t route) {
    writer_lane& w = *lanes[route % lanes.size()];
    switch (w.queue.push(c, pending_count, options.max_pending)) {
      case write_queue<command>::pushed::queued:
        return;
      case write_queue<command>::pushed::busy:
        // A completion never runs on the caller's thread: the refusal goes through a reader.
        post_read([refuse = std::move(c.refuse)](connection&) { refuse(errc::busy); });
        return;
      case write_queue<command>::pushed::stopping:
        c.refuse(errc::shutting_down);
        return;
    }
  }

  template <class T, class Read>
  void read(completion<T> done, Read fn) {
    if (stopped.load()) {
      done(errc::shutting_down);
      return;
    }
    post_read([this, done = std::move(done), fn = std::move(fn)](connection& db) mutable {
      const bool fresh = !db.ok();
      std::string error;
      if (fresh && !connect(db, false, error)) {
        done(errc::unavailable);
        return;
      }
      auto r = fn(db);
      // A connection that died while it was idle (the database restarted meanwhile) shows
      // only now. A read changes nothing: it is made once more, on a new connection.
      if (!fresh && !r && r.error() == errc::unavailable && !db.ok() && connect(db, false, error)) {
        r = fn(db);
      }
      done(std::move(r));
    });
  }

  void post_read(read_task task) {
    {
      std::lock_guard lock(read_mutex);
      reads.push_back(std::move(task));
    }
    read_wake.notify_one();
  }

  void run_reader() {
    connection db;
    for (;;) {
      read_task task;
      {
        std::unique_lock lock(read_mutex);
        read_wake.wait(lock, [&] { return readers_stopping || !reads.empty(); });
        if (reads.empty()) return;  // stopping, and everything posted is done
        task = std::move(reads.front());
        reads.pop_front();
      }
      task(db);
    }
  }

  void open();
  void run_writer(writer_lane& w);
  // Applies and commits one group. errc{} if committed; errc::unavailable / io_error if it
  // failed (nothing committed, or for a lost COMMIT: unknown). `retry` says whether it may
  // be applied again: pipelined after a deadlock or serialization failure, strict (every
  // statement waited for, so that a failing request fails alone) after a deferred
  // statement failed.
  enum class retry_as { no, pipelined, strict };
  errc commit_group(writer_lane& w, std::vector<command>& work,
                    std::vector<finisher>& finishers, bool strict, retry_as& retry);
  void purge_dedupe(writer_lane& w);

  // --- request helpers (on the connection of the calling thread) -----------------------------

  static result<std::optional<std::uint64_t>> user_by_name(connection& db,
                                                           const std::string& name) {
    auto r = db.exec("SELECT user_id FROM users WHERE username = $1", params().text(name));
    if (!r) return r.error();
    if (r->empty()) return std::optional<std::uint64_t>();
    return std::optional<std::uint64_t>(r->u64(0, 0));
  }

  static result<std::string> username_of(connection& db, std::uint64_t user) {
    auto r = db.exec("SELECT username FROM users WHERE user_id = $1", params().add(user));
    if (!r) return r.error();
    if (r->empty()) return errc::unknown_user;
    return std::string(r->text(0, 0));
  }

  static result<std::uint64_t> direct_chat(connection& db, std::uint64_t a, std::uint64_t b) {
    auto r = db.exec("SELECT chat_id FROM direct_chats WHERE user_lo = $1 AND user_hi = $2",
                     params().add(std::min(a, b)).add(std::max(a, b)));
    if (!r) return r.error();
    return r->empty() ? 0 : r->u64(0, 0);
  }

  // Every device of the chat's current members but `except`.
  static result<std::vector<std::uint64_t>> member_devices(connection& db, std::uint64_t chat,
                                                           std::uint64_t except) {
    auto r = db.exec(
        "SELECT d.device_id FROM chat_members m JOIN devices d ON d.user_id = m.user_id "
        "WHERE m.chat_id = $1 AND m.until_seq = 0 AND d.device_id <> $2 "
        "ORDER BY m.position, d.device_id",
        params().add(chat).add(except));
    if (!r) return r.error();
    std::vector<std::uint64_t> out;
    out.reserve(static_cast<std::size_t>(r->size()));
    for (int i = 0; i < r->size(); ++i) out.push_back(r->u64(i, 0));
    return out;
  }

  static result<std::uint64_t> next_stamp(connection& db) {
    auto r = db.exec("SELECT nextval('parley_receipt_stamps')");
    if (!r) return r.error();
    return r->u64(0, 0);
  }

  // Appends a group's system message at the chat's next seq (the chat row is locked by it).
  result<shared_message> append_event(connection& db, std::uint64_t chat, std::uint64_t sender,
                                      std::uint64_t sender_device, const std::string& sender_name,
                                      group_event event, std::uint64_t now) {
    auto head = db.exec("UPDATE chats SET head = head + 1 WHERE chat_id = $1 RETURNING head",
                        params().add(chat));
    if (!head) return head.error();
    if (head->empty()) return errc::not_found;
    const std::uint64_t seq = head->u64(0, 0);
    const std::uint64_t id = next_id();
    pb::GroupEventRecord e;
    e.set_change(static_cast<std::uint32_t>(event.change));
    e.set_user(event.user);
    e.set_name(event.name);
    for (const auto& m : event.members) e.add_members(m);
    auto ins = db.exec(
        "INSERT INTO messages (chat_id, seq, message_id, sender_user, sender_device, "
        "sender_name, sent_at_ms, payload, cipher_type, event) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, ''::bytea, 0, $8)",
        params()
            .add(chat)
            .add(seq)
            .add(id)
            .add(sender)
            .add(sender_device)
            .text(sender_name)
            .add(now)
            .bytes(e.SerializeAsString()));
    if (!ins) return ins.error();
    auto m = std::make_shared<chat_message>();
    m->chat = chat;
    m->seq = seq;
    m->id = id;
    m->sender = sender;
    m->sender_device = sender_device;
    m->sender_name = sender_name;
    m->sent_at_ms = now;
    m->event = std::make_shared<const group_event>(std::move(event));
    return shared_message(std::move(m));
  }

  // A group as its members see it.
  static result<group_info> info_of(connection& db, std::uint64_t chat) {
    auto c = db.exec("SELECT name FROM chats WHERE chat_id = $1", params().add(chat));
    if (!c) return c.error();
    if (c->empty()) return errc::not_found;
    auto m = db.exec(
        "SELECT m.user_id, u.username, m.admin, m.joined_seq FROM chat_members m "
        "JOIN users u ON u.user_id = m.user_id WHERE m.chat_id = $1 AND m.until_seq = 0 "
        "ORDER BY m.position",
        params().add(chat));
    if (!m) return m.error();
    group_info info;
    info.chat = chat;
    info.name = std::string(c->text(0, 0));
    for (int i = 0; i < m->size(); ++i) {
      info.members.push_back(
          {m->u64(i, 0), std::string(m->text(i, 1)), m->boolean(i, 2), m->u64(i, 3)});
    }
    return info;
  }

  // The chat a read names, checked for membership: 0 for a 1:1 chat named by a peer that has
  // none yet. `first_seq` gets the first seq the requester may read (a group: the event that
  // added it).
  static result<std::uint64_t> resolve_for_read(connection& db, std::uint64_t requester,
                                                 const chat_ref& ref, std::uint64_t& first_seq) {
    first_seq = 1;
    if (!fits_bigint(ref.chat)) return errc::not_found;
    if (ref.chat == 0) {
      auto peer = user_by_name(db, ref.peer);
      if (!peer) return peer.error();
      if (!*peer) return errc::unknown_user;
      if (**peer == requester) return std::uint64_t{0};
      return direct_chat(db, requester, **peer);
    }
    auto r = db.exec(
        "SELECT joined_seq FROM chat_members WHERE chat_id = $1 AND user_id = $2 AND "
        "until_seq = 0",
        params().add(ref.chat).add(requester));
    if (!r) return r.error();
    if (r->empty()) return errc::not_found;
    first_seq = std::max<std::uint64_t>(1, r->u64(0, 0));
    return ref.chat;
  }
};

// --- opening, the writer ---------------------------------------------------------------------

void postgresql_store::impl::open() {
  std::string error;
  // The schema's statements run one by one first, on the first writer's connection; its
  // pipeline starts after them. The other writers connect from their threads.
  connection& writer_db = lanes.front()->db;
  if (!connect(writer_db, true, error, false))
    throw std::runtime_error("cannot connect to the store's database: " + error);
  // One node creates the schema at a time (CREATE ... IF NOT EXISTS races with itself).
  auto fail = [&](const std::string& what) {
    throw std::runtime_error("store: " + what + ": " + writer_db.error_message());
  };
  if (!writer_db.run("SELECT pg_advisory_lock(7336284)")) fail("cannot take the schema lock");
  // The version first, before any DDL: a build that refuses the database must not have put its
  // own functions back on the way (CREATE OR REPLACE commits), under the nodes that run the
  // newer ones. (The lock is a session's: a throw below closes the connection and frees it.)
  auto meta = writer_db.exec("SELECT to_regclass('parley_meta') IS NOT NULL");
  if (!meta || meta->size() != 1) fail("cannot look for the schema version");
  std::optional<std::uint64_t> found;
  if (meta->boolean(0, 0)) {
    auto version = writer_db.exec("SELECT value FROM parley_meta WHERE key = 'schema_version'");
    if (!version) fail("cannot read the schema version");
    if (!version->empty()) found = version->u64(0, 0);
  }
  const auto ours = static_cast<std::uint64_t>(pg::schema_version);
  const bool upgrade = found && *found != ours &&
                       *found >= static_cast<std::uint64_t>(pg::oldest_upgradable_version) &&
                       *found < ours;
  if (found && *found != ours && !upgrade) {
    throw std::runtime_error("store: the database has schema version " + std::to_string(*found) +
                             ", this parleyd writes " + std::to_string(ours) +
                             " (there is no migration)");
  }
  // A database of this version already has every table, index and function of this build
  // (a change to any comes with a new version): no DDL then. Run anyway, its IF NOT EXISTS
  // statements still lock what they name (CREATE INDEX takes a SHARE lock on its table, ALTER
  // TABLE an ACCESS EXCLUSIVE one) until the script's transaction ends, so a node's start
  // would wait behind the other nodes' open write transactions, and queue their next writes
  // (and reads, for ALTER TABLE) behind itself.
  if ((!found || upgrade) && !writer_db.run(pg::schema_sql)) fail("cannot create the schema");
  if (!found) {
    if (!writer_db.exec("INSERT INTO parley_meta (key, value) VALUES ('schema_version', $1)",
                        params().add(ours)))
      fail("cannot write the schema version");
  } else if (upgrade) {
    if (!writer_db.exec("UPDATE parley_meta SET value = $1 WHERE key = 'schema_version'",
                        params().add(ours)))
      fail("cannot write the schema version");
    log_info() << "store: schema upgraded from version " << *found << " to " << ours;
  }
  if (!writer_db.run("SELECT pg_advisory_unlock(7336284)")) fail("cannot release the schema lock");
  auto high = writer_db.exec("SELECT last_id FROM node_ids WHERE node_id = $1",
                             params().add(options.node_id));
  if (!high) fail("cannot read the node's id high-water mark");
  if (!high->empty()) {
    ids.advance_past(high->u64(0, 0));
    recorded_ids.store(high->u64(0, 0));
  }
  if (!writer_db.enter_pipeline()) fail("cannot enter pipeline mode");

  for (std::size_t i = 0; i < options.reader_threads; ++i) {
    reader_threads.emplace_back([this] { run_reader(); });
    name_thread(reader_threads.back(), "store-reader-" + std::to_string(i));
  }
  for (auto& lane : lanes) {
    writer_lane& w = *lane;
    w.thread = std::thread([this, &w] { run_writer(w); });
    name_thread(w.thread, "store-writer");
  }
}

void postgresql_store::impl::purge_dedupe(writer_lane& w) {
  connection& writer_db = w.db;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_dedupe_purge < std::chrono::minutes(10)) return;
  last_dedupe_purge = now;
  const std::uint64_t window = static_cast<std::uint64_t>(options.dedupe_window.count());
  const std::uint64_t t = now_ms();
  if (t <= window) return;
  // Expired records are ignored by reads already; this only gives the space back. Outside a
  // transaction block the pipeline's sync commits it.
  if (!writer_db.defer("DELETE FROM dedupe WHERE sent_at_ms < $1", params().add(t - window)) ||
      !writer_db.sync())
    log_warn() << "store: dedupe purge failed: " << writer_db.error_message();
}

errc postgresql_store::impl::commit_group(writer_lane& w, std::vector<command>& work,
                                          std::vector<finisher>& finishers, bool strict,
                                          retry_as& retry) {
  connection& writer_db = w.db;
  std::string& last_failure = w.last_failure;
  retry = retry_as::no;
  finishers.clear();
  writer_db.reset_failures();
  writer_db.set_deferring(!strict);
  // A statement that a request without a savepoint waited for failed: nothing can undo that
  // request alone in this transaction.
  bool unguarded_failure = false;
  // The transaction's failure: roll back what is left of it and say why.
  auto abort = [&](errc fallback) {
    const bool lost = !writer_db.ok();
    const std::string state = writer_db.sqlstate();  // ROLLBACK below clears it
    last_failure = (state.empty() ? "" : "SQLSTATE " + state + ": ") + writer_db.error_message();
    const bool timed_out = state == pg::lock_not_available || state == pg::query_canceled;
    if (!lost && writer_db.must_retry()) {
      retry = retry_as::pipelined;
    } else if (!lost && !timed_out && (writer_db.deferred_failed() || unguarded_failure) &&
               !strict) {
      // A statement sent without waiting failed, and its request has already been answered
      // "applied": only applying the group again request by request can tell whose it was.
      // Or a request without a savepoint failed: applied again inside one, it fails alone.
      retry = retry_as::strict;
    }
    if (!lost) writer_db.run("ROLLBACK");
    if (lost) {
      set_health(false, "database connection lost: " + writer_db.error_message());
      return errc::unavailable;
    }
    // A lock held too long by another node (lock_timeout) or a statement past
    // statement_timeout: nothing was applied, and a retry shortly may well pass.
    if (timed_out) return errc::busy;
    return fallback;
  };

  // Pipelined: BEGIN and the locks go out with the first request's first statement; each
  // request's trailing writes and its savepoint's release with the next one's; COMMIT waits
  // once at the end. A group of one-statement requests (sends, acks, read marks) is not
  // waited for before it. A lock or statement timeout in one of those fails the whole group
  // with BUSY (retryable): it shows only at the COMMIT, past any savepoint.
  if (!writer_db.defer("BEGIN")) return abort(errc::io_error);
  // Every lock the group's requests need, in one order for every node: two nodes' groups then
  // never wait for each other in a cycle (a deadlock, which would cost both a rollback).
  std::vector<std::uint64_t> locks;
  for (const auto& c : work) locks.insert(locks.end(), c.locks.begin(), c.locks.end());
  if (!locks.empty()) {
    std::sort(locks.begin(), locks.end());
    locks.erase(std::unique(locks.begin(), locks.end()), locks.end());
    std::string array = "{";
    for (auto k : locks) array += (array.size() > 1 ? "," : "") + std::to_string(k);
    array += "}";
    // unnest yields the array's order, and the function runs per row in that order.
    if (!writer_db.defer("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k",
                         params().text(array)))
      return abort(errc::io_error);
  }
  w.ids_issued = false;
  w.last_id = 0;
  for (auto& c : work) {
    // A request of several statements gets a savepoint, so that its failure undoes what it
    // wrote; so does every request when the group is applied one by one (strict), to refuse
    // the one whose statement fails and keep the rest.
    const bool savepoint = strict || !c.one_statement;
    if (savepoint && !writer_db.defer("SAVEPOINT r")) return abort(errc::io_error);
    finisher f = c.apply(writer_db);
    if (!writer_db.ok() || writer_db.must_retry() || writer_db.deferred_failed())
      return abort(errc::io_error);
    if (!savepoint && !f.ok && writer_db.pipeline_aborted()) {
      unguarded_failure = true;
      return abort(errc::io_error);
    }
    if (savepoint && f.ok) {
      if (!writer_db.defer("RELEASE SAVEPOINT r")) return abort(errc::io_error);
    } else if (savepoint) {
      // run() reads what is queued first (and ends the pipeline's aborted state, if this
      // request's own statement failed); the savepoint then undoes what the request wrote.
      if (!writer_db.run("ROLLBACK TO SAVEPOINT r") || !writer_db.defer("RELEASE SAVEPOINT r"))
        return abort(errc::io_error);
      // An earlier request's statement that was not waited for and failed shows here if this
      // request read nothing; that request counts as applied, so the group must go again.
      if (writer_db.deferred_failed()) return abort(errc::io_error);
    }
    finishers.push_back(std::move(f));
  }
  std::uint64_t lease = 0;
  if (w.ids_issued && w.last_id > recorded_ids.load()) {
    lease = snowflake::max_id_at(snowflake::time_ms_of(w.last_id) + id_lease_ms, options.node_id);
    if (!writer_db.defer("INSERT INTO node_ids (node_id, last_id) VALUES ($1, $2) "
                         "ON CONFLICT (node_id) DO UPDATE SET last_id = "
                         "GREATEST(node_ids.last_id, EXCLUDED.last_id)",
                         params().add(options.node_id).add(lease)))
      return abort(errc::io_error);
  }
  if (!writer_db.defer("COMMIT") || !writer_db.sync()) return abort(errc::io_error);
  // Only a committed mark counts: another writer's group may pass it from now on.
  for (auto seen = recorded_ids.load(); lease > seen;) {
    if (recorded_ids.compare_exchange_weak(seen, lease)) break;
  }
  return errc{};
}

void postgresql_store::impl::run_writer(writer_lane& w) {
  this_writer = &w;
  std::vector<command> work;
  std::vector<finisher> finishers;
  for (;;) {
    const auto t = w.queue.take(work, options.max_group, options.reconnect_interval, pending_count);
    if (t == write_queue<command>::taken::done) return;
    if (t == write_queue<command>::taken::idle) {
      // Idle, the writer still checks its connection (a database that went away shows only
      // when a statement fails: this one, cheap) and reconnects, so that /healthz and
      // parley_store_writable tell the truth when nobody writes, and the first write after a
      // restart of the database does not meet a dead connection.
      if (w.db.ok()) (void)w.db.run("SELECT 1");
      writer_connected(w);
      continue;
    }
    if (!writer_connected(w)) {
      for (auto& c : work) c.refuse(errc::unavailable);
      work.clear();
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    errc outcome{};
    bool strict = false;
    for (int attempt = 0;; ++attempt) {
      retry_as retry = retry_as::no;
      outcome = commit_group(w, work, finishers, strict, retry);
      if (outcome == errc{} || retry == retry_as::no || attempt == 4) break;
      if (retry == retry_as::strict) {
        strict = true;
        log_warn() << "store: a statement of a group of " << work.size() << " failed ("
                   << w.last_failure << "), applying it again request by request";
      } else {
        log_warn() << "store: group of " << work.size() << " met another writer's lock ("
                   << w.last_failure << "), applying it again";
      }
    }
    if (options.on_commit)
      options.on_commit(std::chrono::steady_clock::now() - start, work.size());
    if (outcome == errc{}) {
      for (auto& f : finishers) f.finish(errc{});
    } else {
      if (w.db.ok()) log_error() << "store: group commit failed: " << w.last_failure;
      for (auto& c : work) c.refuse(outcome);
    }
    finishers.clear();
    work.clear();
    if (w.index == 0 && w.db.ok()) purge_dedupe(w);
  }
}

postgresql_store::postgresql_store(postgresql_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {
  impl_->open();
}

postgresql_store::~postgresql_store() { stop(); }

void postgresql_store::stop() {
  if (impl_->stopping.exchange(true)) return;
  // Each writer takes what was queued before its queue stopped, then ends.
  for (auto& w : impl_->lanes) w->queue.stop();
  for (auto& w : impl_->lanes) {
    if (w->thread.joinable()) w->thread.join();
  }
  impl_->stopped = true;
  {
    std::lock_guard lock(impl_->read_mutex);
    impl_->readers_stopping = true;
  }
  impl_->read_wake.notify_all();
  for (auto& t : impl_->reader_threads) {
    if (t.joinable()) t.join();
  }
  for (auto& w : impl_->lanes) w->db.close();
}

store_health postgresql_store::health() { return impl_->health.get(); }

std::uint64_t postgresql_store::pending_writes() {
  return impl_->pending_count.load(std::memory_order_relaxed);
}

// --- accounts, devices, keys -----------------------------------------------------------------

void postgresql_store::register_account(registration_request request,
                                        completion<registration> done) {
  std::vector<std::uint64_t> locks{name_lock(request.username)};
  impl_->write<registration>(
      std::move(done), [request = std::move(request)](connection& db) -> result<registration> {
        auto ids = db.exec("SELECT nextval('parley_user_ids'), nextval('parley_device_ids')");
        if (!ids) return ids.error();
        registration r{ids->u64(0, 0), ids->u64(0, 1)};
        const std::uint64_t now = now_ms();
        // Another node registering the same name at once waits here for it, then finds it.
        auto user = db.exec(
            "INSERT INTO users (user_id, username, created_ms) VALUES ($1, $2, $3) "
            "ON CONFLICT (username) DO NOTHING",
            params().add(r.user).text(request.username).add(now));
        if (!user) return user.error();
        if (user->affected() == 0) return errc::username_taken;
        const std::string_view token(reinterpret_cast<const char*>(request.token_hash.data()),
                                     request.token_hash.size());
        auto device = db.exec(
            "INSERT INTO devices (device_id, user_id, token_sha256, created_ms) "
            "VALUES ($1, $2, $3, $4)",
            params().add(r.device).add(r.user).bytes(token).add(now));
        if (!device) return device.error();
        return r;
      }, std::move(locks));
}

void postgresql_store::find_device(device_id id, completion<device> done) {
  impl_->read<device>(std::move(done), [id](connection& db) -> result<device> {
    // An id no BIGINT holds (a client's Authenticate) is no device's, not a failed statement.
    if (!fits_bigint(id)) return errc::not_found;
    auto r = db.exec(
        "SELECT d.user_id, d.token_sha256, u.username, u.hide_last_seen, "
        "k.device_id IS NOT NULL, k.registration_id, "
        "(SELECT count(*) FROM one_time_prekeys o WHERE o.device_id = d.device_id) "
        "FROM devices d JOIN users u ON u.user_id = d.user_id "
        "LEFT JOIN device_keys k ON k.device_id = d.device_id WHERE d.device_id = $1",
        params().add(id));
    if (!r) return r.error();
    if (r->empty()) return errc::not_found;
    const std::string token = r->bytes(0, 1);
    if (token.size() != 32) return errc::corrupt;
    device d{id, r->u64(0, 0), std::string(r->text(0, 2)), {}, {}, r->boolean(0, 3)};
    std::copy(token.begin(), token.end(), d.token_hash.begin());
    if (r->boolean(0, 4)) {
      d.keys = {true, static_cast<std::uint32_t>(r->u64(0, 6)),
                static_cast<std::uint32_t>(r->u64(0, 5))};
    }
    return d;
  });
}

void postgresql_store::find_account(std::string username, completion<account> done) {
  impl_->read<account>(std::move(done),
                       [username = std::move(username)](connection& db) -> result<account> {
                         auto user = impl::user_by_name(db, username);
                         if (!user) return user.error();
                         if (!*user) return errc::not_found;
                         auto r = db.exec(
                             "SELECT device_id FROM devices WHERE user_id = $1 "
                             "ORDER BY device_id",
                             params().add(**user));
                         if (!r) return r.error();
                         account a{**user, username, {}};
                         for (int i = 0; i < r->size(); ++i) a.devices.push_back(r->u64(i, 0));
                         return a;
                       });
}

void postgresql_store::first_unknown_user(std::vector<std::string> usernames,
                                          completion<std::string> done) {
  impl_->read<std::string>(
      std::move(done), [usernames = std::move(usernames)](connection& db) -> result<std::string> {
        auto r = db.exec(
            "SELECT t.name FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) "
            "WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.username = t.name) "
            "ORDER BY t.i LIMIT 1",
            params().text(text_array(usernames)));
        if (!r) return r.error();
        return r->empty() ? std::string() : std::string(r->text(0, 0));
      });
}

void postgresql_store::set_privacy(user_id user, bool hide_last_seen, completion<void> done) {
  std::vector<std::uint64_t> locks{user_lock(user)};
  impl_->write<void>(std::move(done), [user, hide_last_seen](connection& db) -> result<void> {
    auto r = db.exec("UPDATE users SET hide_last_seen = $2 WHERE user_id = $1",
                     params().add(user).add(hide_last_seen));
    if (!r) return r.error();
    if (r->affected() == 0) return errc::unknown_user;
    return {};
  }, std::move(locks));
}

void postgresql_store::upload_keys(key_upload upload, std::size_t max_held,
                                   completion<key_stock> done) {
  impl_->write<key_stock>(
      std::move(done),
      [upload = std::move(upload), max_held](connection& db) -> result<key_stock> {
        auto existing = db.exec(
            "SELECT identity_key FROM device_keys WHERE device_id = $1 FOR UPDATE",
            params().add(upload.device));
        if (!existing) return existing.error();
        const bool had = !existing->empty();
        const bool replaced = had && existing->bytes(0, 0) != upload.identity_key;
        if ((!had || replaced) && !upload.signed_prekey) return errc::missing_signed_prekey;
        const std::uint64_t now = now_ms();
        if (!had || replaced) {
          // A new identity drops every old key.
          const auto& spk = *upload.signed_prekey;
          auto w = db.exec(
              "INSERT INTO device_keys (device_id, identity_key, registration_id, "
              "identity_since_ms, updated_ms, signed_prekey_id, signed_prekey, "
              "signed_prekey_signature) VALUES ($1, $2, $3, $4, $4, $5, $6, $7) "
              "ON CONFLICT (device_id) DO UPDATE SET identity_key = EXCLUDED.identity_key, "
              "registration_id = EXCLUDED.registration_id, "
              "identity_since_ms = EXCLUDED.identity_since_ms, updated_ms = EXCLUDED.updated_ms, "
              "signed_prekey_id = EXCLUDED.signed_prekey_id, "
              "signed_prekey = EXCLUDED.signed_prekey, "
              "signed_prekey_signature = EXCLUDED.signed_prekey_signature",
              params()
                  .add(upload.device)
                  .bytes(upload.identity_key)
                  .add(static_cast<std::uint64_t>(upload.registration_id))
                  .add(now)
                  .add(static_cast<std::uint64_t>(spk.id))
                  .bytes(spk.public_key)
                  .bytes(spk.signature));
          if (!w) return w.error();
          if (replaced) {
            auto d = db.exec("DELETE FROM one_time_prekeys WHERE device_id = $1",
                             params().add(upload.device));
            if (!d) return d.error();
          }
        } else {
          auto w = db.exec(
              "UPDATE device_keys SET registration_id = $2, updated_ms = $3 WHERE device_id = $1",
              params()
                  .add(upload.device)
                  .add(static_cast<std::uint64_t>(upload.registration_id))
                  .add(now));
          if (!w) return w.error();
          if (upload.signed_prekey) {
            const auto& spk = *upload.signed_prekey;
            auto s = db.exec(
                "UPDATE device_keys SET signed_prekey_id = $2, signed_prekey = $3, "
                "signed_prekey_signature = $4 WHERE device_id = $1",
                params()
                    .add(upload.device)
                    .add(static_cast<std::uint64_t>(spk.id))
                    .bytes(spk.public_key)
                    .bytes(spk.signature));
            if (!s) return s.error();
          }
        }
        // Ids already held keep their place in line (the oldest is taken first).
        for (const auto& k : upload.one_time_prekeys) {
          auto w = db.exec(
              "INSERT INTO one_time_prekeys (device_id, key_id, public_key, position) "
              "VALUES ($1, $2, $3, nextval('parley_prekey_positions')) "
              "ON CONFLICT (device_id, key_id) DO UPDATE SET public_key = EXCLUDED.public_key",
              params().add(upload.device).add(static_cast<std::uint64_t>(k.id)).bytes(k.public_key));
          if (!w) return w.error();
        }
        auto held = db.exec("SELECT count(*) FROM one_time_prekeys WHERE device_id = $1",
                            params().add(upload.device));
        if (!held) return held.error();
        const std::uint64_t count = held->u64(0, 0);
        if (count > max_held) return errc::too_many_prekeys;
        return key_stock{static_cast<std::uint32_t>(count), replaced};
      });
}

void postgresql_store::take_key_bundles(std::string username, bool take_one_time,
                                        completion<std::vector<key_bundle>> done) {
  impl_->write<std::vector<key_bundle>>(
      std::move(done), [username = std::move(username),
                        take_one_time](connection& db) -> result<std::vector<key_bundle>> {
        auto user = impl::user_by_name(db, username);
        if (!user) return user.error();
        if (!*user) return errc::unknown_user;
        // FOR SHARE: an upload of new keys (which locks the row FOR UPDATE, then replaces the
        // one-time prekeys) is either wholly before this take or wholly after it, so that a
        // bundle never pairs an identity with a one-time prekey of another.
        auto k = db.exec(
            "SELECT d.device_id, k.registration_id, k.identity_key, k.signed_prekey_id, "
            "k.signed_prekey, k.signed_prekey_signature FROM devices d "
            "JOIN device_keys k ON k.device_id = d.device_id WHERE d.user_id = $1 "
            "ORDER BY d.device_id FOR SHARE OF k",
            params().add(**user));
        if (!k) return k.error();
        std::vector<key_bundle> out;
        for (int i = 0; i < k->size(); ++i) {
          key_bundle b;
          b.device = k->u64(i, 0);
          b.registration_id = static_cast<std::uint32_t>(k->u64(i, 1));
          b.identity_key = k->bytes(i, 2);
          b.signed_prekey = {static_cast<std::uint32_t>(k->u64(i, 3)), k->bytes(i, 4),
                             k->bytes(i, 5)};
          // The oldest one-time prekey; one that another node's fetch holds is skipped, so
          // that two fetches never hand out the same key.
          if (take_one_time) {
            auto taken = db.exec(
                "DELETE FROM one_time_prekeys WHERE (device_id, key_id) IN ("
                "SELECT device_id, key_id FROM one_time_prekeys WHERE device_id = $1 "
                "ORDER BY position LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING key_id, public_key",
                params().add(b.device));
            if (!taken) return taken.error();
            if (!taken->empty()) {
              b.one_time_prekey =
                  prekey{static_cast<std::uint32_t>(taken->u64(0, 0)), taken->bytes(0, 1), {}};
            }
          }
          auto left = db.exec("SELECT count(*) FROM one_time_prekeys WHERE device_id = $1",
                              params().add(b.device));
          if (!left) return left.error();
          b.remaining = static_cast<std::uint32_t>(left->u64(0, 0));
          out.push_back(std::move(b));
        }
        if (out.empty()) return errc::no_keys;
        return out;
      });
}

void postgresql_store::shared_chats(user_id requester, std::vector<std::string> usernames,
                                    completion<std::vector<bool>> done) {
  impl_->read<std::vector<bool>>(
      std::move(done), [requester, usernames = std::move(usernames)](
                           connection& db) -> result<std::vector<bool>> {
        std::vector<bool> out;
        out.reserve(usernames.size());
        for (const auto& name : usernames) {
          auto peer = impl::user_by_name(db, name);
          if (!peer) return peer.error();
          if (!*peer || **peer == requester) {
            out.push_back(false);
            continue;
          }
          auto chat = impl::direct_chat(db, requester, **peer);
          if (!chat) return chat.error();
          out.push_back(*chat != 0);
        }
        return out;
      });
}

// --- the chat log ----------------------------------------------------------------------------

void postgresql_store::send(send_request request, completion<send_outcome> done) {
  // One device's sends on one writer, in the order they came.
  const std::uint64_t device = request.sender_device;
  // The sender's device too: a retry of the same message through another node at the same
  // moment waits for this one and then finds its dedupe record.
  std::vector<std::uint64_t> locks{
      request.to.chat != 0 ? chat_lock(request.to.chat)
                           : pair_lock(request.sender_name, request.to.peer),
      device_lock(request.sender_device)};
  // One statement (parley_send, pg_schema.cpp), sent without waiting; its row is read after
  // the group's COMMIT.
  impl_->write_one_statement<send_outcome>(
      std::move(done),
      [this, request = std::make_shared<const send_request>(std::move(request))](
          connection& db) -> result<std::function<result<send_outcome>()>> {
        auto& d = *impl_;
        if (!fits_bigint(request->to.chat)) return errc::not_found;
        const std::uint64_t window = static_cast<std::uint64_t>(d.options.dedupe_window.count());
        const std::uint64_t now = now_ms();
        const std::uint64_t fresh_after = now > window ? now - window : 0;
        const std::uint64_t id = d.next_id();
        // The id a pair's first message gives its chat (unused if the chat exists).
        const std::uint64_t new_chat = request->to.chat == 0 ? d.next_id() : 0;
        params p;
        p.add(request->sender_device)
            .bytes(request->client_msg_id)
            .add(fresh_after)
            .text(request->to.chat == 0 ? request->to.peer : std::string())
            .add(request->sender)
            .add(request->to.chat)
            .add(new_chat)
            .add(id)
            .text(request->sender_name)
            .add(now)
            .bytes(request->payload)
            .add(static_cast<std::uint64_t>(request->cipher_type))
            .add(static_cast<std::uint64_t>(request->recipient_registration_id));
        if (request->media.empty()) {
          p.null();
        } else {
          p.text(request->media);
        }
        auto row = std::make_shared<rows>();
        static const std::string sql =
            "SELECT r_status, r_chat, r_seq, r_id, r_at, r_recipients FROM parley_send($1, $2, "
            "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12::integer, $13, $14)";
        if (auto sent = db.collect(sql, p, row); !sent) return sent.error();
        return std::function<result<send_outcome>()>(
            [row, request]() { return send_outcome_of(*row, *request); });
      },
      std::move(locks), device);
}

namespace {

// Cursors as the two bigint[] parameters of parley_ack and pass_own_entries (chats, seqs):
// one per chat, at its highest seq. errc::not_found if a chat id cannot be a chat's.
result<std::pair<std::string, std::string>> cursor_arrays(std::vector<cursor_update>& cursors) {
  one_cursor_per_chat(cursors);
  std::vector<std::uint64_t> chats, seqs;
  for (const auto& c : cursors) {
    if (!fits_bigint(c.chat)) return errc::not_found;
    chats.push_back(c.chat);
    seqs.push_back(clamp63(c.seq));
  }
  return std::pair{bigint_array(chats), bigint_array(seqs)};
}

}  // namespace

void postgresql_store::ack(device_id device, user_id user, std::vector<cursor_update> cursors,
                           completion<watermark_moves> done) {
  // One statement (parley_ack, pg_schema.cpp), sent without waiting, read after the COMMIT.
  impl_->write_one_statement<watermark_moves>(
      std::move(done),
      [this, device, user, cursors = std::move(cursors)](
          connection& db) mutable -> result<std::function<result<watermark_moves>()>> {
        auto arrays = cursor_arrays(cursors);
        if (!arrays) return arrays.error();
        auto me = impl_->cached_username(db, user);
        if (!me) return me.error();
        auto row = std::make_shared<rows>();
        static const std::string sql =
            "SELECT r_status, r_groups, r_chats, r_seqs, r_devices, r_stamp "
            "FROM parley_ack($1, $2, $3::bigint[], $4::bigint[])";
        if (auto sent = db.collect(
                sql, params().add(device).add(user).text(arrays->first).text(arrays->second), row);
            !sent)
          return sent.error();
        return std::function<result<watermark_moves>()>(
            [row, name = std::move(*me), now = now_ms()]() {
              return ack_outcome_of(*row, name, now);
            });
      },
      {}, device);
}

void postgresql_store::pass_own_entries(device_id device, user_id user,
                                        std::vector<cursor_update> cursors, completion<void> done) {
  // One plain statement, checks and upsert together, sent without waiting and read after the
  // COMMIT; on the device's writer, in order with its acks. Each chat is looked up by its keys
  // (the LATERAL's OFFSET 0 keeps the planner from scanning the user's every membership).
  impl_->write_one_statement<void>(
      std::move(done),
      [device, user, cursors = std::move(cursors)](
          connection& db) mutable -> result<std::function<result<void>()>> {
        auto arrays = cursor_arrays(cursors);
        if (!arrays) return arrays.error();
        auto row = std::make_shared<rows>();
        // The status as parley_ack's: 2 not a member (a former one up to its removal), 5 above
        // the head, for the first chat that fails; nothing written then.
        static const std::string sql =
            "WITH input AS (SELECT a.chat_id, a.seq, a.ord, CASE WHEN x.head IS NULL "
            "OR (x.until_seq <> 0 AND (NOT x.is_group OR a.seq > x.until_seq)) THEN 2 "
            "WHEN a.seq > x.head THEN 5 ELSE 0 END AS status "
            "FROM unnest($3::bigint[], $4::bigint[]) WITH ORDINALITY AS a(chat_id, seq, ord) "
            "LEFT JOIN LATERAL (SELECT c.head, c.is_group, m.until_seq FROM chats c "
            "JOIN chat_members m ON m.chat_id = c.chat_id AND m.user_id = $1 "
            "WHERE c.chat_id = a.chat_id OFFSET 0) x ON TRUE), "
            "bad AS (SELECT status FROM input WHERE status <> 0 ORDER BY ord LIMIT 1), "
            "moved AS (INSERT INTO cursors (chat_id, user_id, device_id, seq) "
            "SELECT chat_id, $1, $2, seq FROM input "
            "WHERE seq > 0 AND NOT EXISTS (SELECT 1 FROM bad) "
            "ON CONFLICT (chat_id, user_id, device_id) "
            "DO UPDATE SET seq = EXCLUDED.seq WHERE cursors.seq < EXCLUDED.seq) "
            "SELECT COALESCE((SELECT status FROM bad), 0)";
        if (auto sent = db.collect(
                sql, params().add(user).add(device).text(arrays->first).text(arrays->second), row);
            !sent)
          return sent.error();
        return std::function<result<void>()>([row]() -> result<void> {
          if (row->size() != 1) return errc::io_error;
          if (const errc refused = refusal_of(row->u64(0, 0)); refused != errc{}) return refused;
          return {};
        });
      },
      {}, device);
}

void postgresql_store::mark_read(user_id reader, chat_id chat, std::uint64_t up_to,
                                 completion<watermark_moves> done) {
  // One statement (parley_read, pg_schema.cpp), sent without waiting, read after the COMMIT.
  impl_->write_one_statement<watermark_moves>(
      std::move(done),
      [this, reader, chat,
       up_to](connection& db) -> result<std::function<result<watermark_moves>()>> {
        if (!fits_bigint(chat)) return errc::not_found;
        auto me = impl_->cached_username(db, reader);
        // A reader who does not exist is a member of no chat.
        if (!me) return me.error() == errc::unknown_user ? errc::not_found : me.error();
        auto row = std::make_shared<rows>();
        static const std::string sql =
            "SELECT r_status, r_moved, r_group, r_devices, r_stamp FROM parley_read($1, $2, $3)";
        if (auto sent = db.collect(sql, params().add(chat).add(reader).add(clamp63(up_to)), row);
            !sent)
          return sent.error();
        return std::function<result<watermark_moves>()>(
            [row, chat, up_to, name = std::move(*me), now = now_ms()]() {
              return read_outcome_of(*row, chat, up_to, name, now);
            });
      },
      {chat_lock(chat)}, chat_lock(chat));
}

void postgresql_store::group_receipts(chat_id chat,
                                      completion<std::vector<receipt_delivery>> done) {
  std::vector<std::uint64_t> locks{chat_lock(chat)};
  impl_->write<std::vector<receipt_delivery>>(
      std::move(done), [chat](connection& db) -> result<std::vector<receipt_delivery>> {
        std::vector<receipt_delivery> out;
        // The row lock orders this with other nodes' calls for the same group.
        auto c = db.exec("SELECT is_group, pushed_marks FROM chats WHERE chat_id = $1 FOR UPDATE",
                         params().add(chat));
        if (!c) return c.error();
        if (c->empty() || !c->boolean(0, 0)) return out;
        auto members = db.exec(
            "SELECT m.user_id, m.read_seq, COALESCE(cu.seq, 0) FROM chat_members m "
            "LEFT JOIN LATERAL (SELECT MAX(x.seq) AS seq FROM cursors x "
            "WHERE x.chat_id = m.chat_id AND x.user_id = m.user_id) cu ON TRUE "
            "WHERE m.chat_id = $1 AND m.until_seq = 0 ORDER BY m.position",
            params().add(chat));
        if (!members) return members.error();
        if (members->size() < 2) return out;
        std::vector<std::uint64_t> ids, delivered, read;
        for (int i = 0; i < members->size(); ++i) {
          ids.push_back(members->u64(i, 0));
          read.push_back(members->u64(i, 1));
          delivered.push_back(std::max(members->u64(i, 2), members->u64(i, 1)));
        }
        const group_marks now_marks = merge_marks(ids, delivered, read);
        const bool had = !c->is_null(0, 1);
        group_marks before;
        if (had) {
          auto parsed = parse_marks(c->bytes(0, 1));
          if (!parsed) return errc::corrupt;
          before = *parsed;
        }
        if (had && before == now_marks) return out;
        auto devices = db.exec(
            "SELECT d.user_id, d.device_id FROM chat_members m JOIN devices d "
            "ON d.user_id = m.user_id WHERE m.chat_id = $1 AND m.until_seq = 0",
            params().add(chat));
        if (!devices) return devices.error();
        std::unordered_map<std::uint64_t, std::vector<std::uint64_t>> by_user;
        for (int i = 0; i < devices->size(); ++i)
          by_user[devices->u64(i, 0)].push_back(devices->u64(i, 1));
        const std::uint64_t now = now_ms();
        for (std::uint64_t member : ids) {
          const std::uint64_t d = now_marks.delivered_for(member);
          const std::uint64_t r = now_marks.read_for(member);
          const bool delivered_moved = d > before.delivered_for(member) && d > 0;
          const bool read_moved = r > before.read_for(member) && r > 0;
          if (!delivered_moved && !read_moved) continue;
          for (std::uint64_t device : by_user[member]) {
            if (delivered_moved)
              out.push_back({device, {chat, {}, message_status::delivered, d, now, 0}});
            if (read_moved) out.push_back({device, {chat, {}, message_status::read, r, now, 0}});
          }
        }
        auto w = db.exec("UPDATE chats SET pushed_marks = $2 WHERE chat_id = $1",
                         params().add(chat).bytes(marks_bytes(now_marks)));
        if (!w) return w.error();
        if (!out.empty()) {
          auto stamp = impl::next_stamp(db);
          if (!stamp) return stamp.error();
          stamp_all(out, *stamp);
        }
        return out;
      }, std::move(locks));
}

// --- groups ----------------------------------------------------------------------------------

void postgresql_store::create_group(create_group_request request,
                                    completion<group_outcome> done) {
  // The creator's device, as for a send: a retry through another node at the same moment
  // waits for this one and then finds its dedupe record.
  std::vector<std::uint64_t> locks{device_lock(request.creator_device)};
  impl_->write<group_outcome>(
      std::move(done),
      [this, request = std::move(request)](connection& db) -> result<group_outcome> {
        auto& d = *impl_;
        // A retry (the answer was lost): the group the first attempt created, as it is now.
        const std::uint64_t window = static_cast<std::uint64_t>(d.options.dedupe_window.count());
        const std::uint64_t now = now_ms();
        auto first = db.exec(
            "SELECT d.chat_id, d.seq, c.is_group, EXISTS (SELECT 1 FROM chat_members m "
            "WHERE m.chat_id = d.chat_id AND m.user_id = $4 AND m.until_seq = 0) "
            "FROM dedupe d LEFT JOIN chats c ON c.chat_id = d.chat_id "
            "WHERE d.sender_device = $1 AND d.client_msg_id = $2 AND d.sent_at_ms >= $3",
            params()
                .add(request.creator_device)
                .bytes(request.client_request_id)
                .add(now > window ? now - window : 0)
                .add(request.creator));
        if (!first) return first.error();
        if (!first->empty()) {
          // A message's record: the id was used for a send (the client's mistake).
          if (first->is_null(0, 2) || !first->boolean(0, 2) || first->u64(0, 1) != 1)
            return errc::invalid_argument;
          if (!first->boolean(0, 3)) return errc::not_found;
          group_outcome out;
          auto info = impl::info_of(db, first->u64(0, 0));
          if (!info) return info.error();
          out.info = std::move(*info);
          out.duplicate = true;
          out.created_seq = first->u64(0, 1);
          return out;
        }
        // The creator first, then the others in the order given, each once.
        auto found = db.exec("SELECT username, user_id FROM users WHERE username = ANY($1::text[])",
                             params().text(text_array(request.members)));
        if (!found) return found.error();
        std::unordered_map<std::string, std::uint64_t> by_name;
        for (int i = 0; i < found->size(); ++i)
          by_name.emplace(std::string(found->text(i, 0)), found->u64(i, 1));
        std::vector<std::uint64_t> members{request.creator};
        std::vector<std::string> names{request.creator_name};
        for (const auto& name : request.members) {
          auto it = by_name.find(name);
          if (it == by_name.end()) return errc::unknown_user;
          if (std::find(members.begin(), members.end(), it->second) != members.end()) continue;
          members.push_back(it->second);
          names.push_back(name);
        }
        if (members.size() > request.max_members) return errc::group_full;

        const std::uint64_t chat = d.next_id();
        auto c = db.exec(
            "INSERT INTO chats (chat_id, is_group, name, created_ms) VALUES ($1, TRUE, $2, $3)",
            params().add(chat).text(request.name).add(now));
        if (!c) return c.error();
        auto m = db.exec(
            "INSERT INTO chat_members (chat_id, user_id, position, admin) "
            "SELECT $1, t.u, t.o, t.u = $3 FROM unnest($2::bigint[]) WITH ORDINALITY AS t(u, o)",
            params().add(chat).text(bigint_array(members)).add(request.creator));
        if (!m) return m.error();
        group_event event{group_change::create, {}, request.name, std::move(names)};
        auto message = d.append_event(db, chat, request.creator, request.creator_device,
                                      request.creator_name, std::move(event), now);
        if (!message) return message.error();
        // Its dedupe record.
        static const std::string dedupe_sql = dedupe_insert_sql("$1, $2, $3, $4, $5, $6");
        auto dedupe = db.exec(
            dedupe_sql,
            params()
                .add(request.creator_device)
                .bytes(request.client_request_id)
                .add(chat)
                .add((*message)->seq)
                .add((*message)->id)
                .add(now));
        if (!dedupe) return dedupe.error();
        auto devices = impl::member_devices(db, chat, request.creator_device);
        if (!devices) return devices.error();
        group_outcome out;
        out.pushes.push_back({std::move(*message), std::move(*devices)});
        auto info = impl::info_of(db, chat);
        if (!info) return info.error();
        out.info = std::move(*info);
        return out;
      },
      std::move(locks));
}

void postgresql_store::change_group(group_change_request request,
                                    completion<group_outcome> done) {
  std::vector<std::uint64_t> locks{chat_lock(request.chat)};
  impl_->write<group_outcome>(
      std::move(done), [this, request = std::move(request)](connection& db) -> result<group_outcome> {
        auto& d = *impl_;
        if (!fits_bigint(request.chat)) return errc::not_found;
        // The chat's row lock orders this with every append and change of the group.
        auto c = db.exec("SELECT is_group, head, name FROM chats WHERE chat_id = $1 FOR UPDATE",
                         params().add(request.chat));
        if (!c) return c.error();
        if (c->empty() || !c->boolean(0, 0)) return errc::not_found;
        const std::uint64_t head = c->u64(0, 1);
        const std::string current_name(c->text(0, 2));
        auto listed = db.exec(
            "SELECT user_id, admin FROM chat_members WHERE chat_id = $1 AND until_seq = 0 "
            "ORDER BY position",
            params().add(request.chat));
        if (!listed) return listed.error();
        std::vector<std::uint64_t> members, admins;
        for (int i = 0; i < listed->size(); ++i) {
          members.push_back(listed->u64(i, 0));
          if (listed->boolean(i, 1)) admins.push_back(listed->u64(i, 0));
        }
        auto is_member = [&](std::uint64_t u) {
          return std::find(members.begin(), members.end(), u) != members.end();
        };
        auto is_admin = [&](std::uint64_t u) {
          return std::find(admins.begin(), admins.end(), u) != admins.end();
        };
        if (!is_member(request.actor)) return errc::not_found;
        if (request.change != group_change::leave && !is_admin(request.actor))
          return errc::not_admin;
        std::uint64_t target = 0;
        const bool about_user = request.change == group_change::add ||
                                request.change == group_change::remove ||
                                request.change == group_change::promote ||
                                request.change == group_change::demote;
        if (about_user) {
          auto id = impl::user_by_name(db, request.user);
          if (!id) return id.error();
          if (!*id) return errc::unknown_user;
          target = **id;
          if (request.change == group_change::add) {
            if (is_member(target)) return errc::already_member;
            if (members.size() + 1 > request.max_members) return errc::group_full;
          } else if (!is_member(target)) {
            return errc::not_member;
          }
        }
        if (request.change == group_change::remove && target == request.actor)
          return errc::invalid_argument;  // leave instead
        if (request.change == group_change::demote && is_admin(target) && admins.size() == 1)
          return errc::invalid_argument;  // a group never lacks an admin

        const std::uint64_t now = now_ms();
        group_outcome out;
        auto append = [&](std::uint64_t sender, std::uint64_t sender_device,
                          const std::string& sender_name, group_event event,
                          std::uint64_t except) -> result<std::uint64_t> {
          auto message =
              d.append_event(db, request.chat, sender, sender_device, sender_name,
                             std::move(event), now);
          if (!message) return message.error();
          auto devices = impl::member_devices(db, request.chat, except);
          if (!devices) return devices.error();
          const std::uint64_t seq = (*message)->seq;
          out.pushes.push_back({std::move(*message), std::move(*devices)});
          return seq;
        };
        auto set_admin = [&](std::uint64_t user, bool admin) -> result<void> {
          auto w = db.exec("UPDATE chat_members SET admin = $3 WHERE chat_id = $1 AND user_id = $2",
                           params().add(request.chat).add(user).add(admin));
          if (!w) return w.error();
          return {};
        };
        const std::string& actor = request.actor_name;
        switch (request.change) {
          case group_change::add: {
            // The new member is in the list before the event is appended: it gets the event,
            // and its cursors start just before it (nothing older is sent to it). A former
            // member comes back at the end of the list; its read mark stays where it was.
            const std::uint64_t seq = head + 1;
            auto w = db.exec(
                "INSERT INTO chat_members (chat_id, user_id, position, joined_seq) "
                "VALUES ($1, $2, (SELECT COALESCE(MAX(position), 0) + 1 FROM chat_members "
                "WHERE chat_id = $1), $3) ON CONFLICT (chat_id, user_id) DO UPDATE SET "
                "position = EXCLUDED.position, admin = FALSE, joined_seq = EXCLUDED.joined_seq, "
                "until_seq = 0",
                params().add(request.chat).add(target).add(seq));
            if (!w) return w.error();
            auto appended = append(request.actor, request.actor_device, actor,
                                   {group_change::add, request.user, {}, {}}, request.actor_device);
            if (!appended) return appended.error();
            auto cursors = db.exec(
                "INSERT INTO cursors (chat_id, user_id, device_id, seq) "
                "SELECT $1, $2, device_id, $3 FROM devices WHERE user_id = $2 "
                "ON CONFLICT (chat_id, user_id, device_id) DO UPDATE SET seq = "
                "GREATEST(cursors.seq, EXCLUDED.seq)",
                params().add(request.chat).add(target).add(*appended - 1));
            if (!cursors) return cursors.error();
            break;
          }
          case group_change::remove:
          case group_change::leave: {
            // The member gets the event about itself, and nothing after it.
            const std::uint64_t who = request.change == group_change::leave ? request.actor : target;
            const std::string& who_name =
                request.change == group_change::leave ? request.actor_name : request.user;
            auto seq = append(request.actor, request.actor_device, actor,
                              {request.change, who_name, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            auto w = db.exec(
                "UPDATE chat_members SET until_seq = $3, admin = FALSE "
                "WHERE chat_id = $1 AND user_id = $2",
                params().add(request.chat).add(who).add(*seq));
            if (!w) return w.error();
            members.erase(std::remove(members.begin(), members.end(), who), members.end());
            admins.erase(std::remove(admins.begin(), admins.end(), who), admins.end());
            if (admins.empty() && !members.empty()) {
              // The last admin left: the oldest member becomes one, by the server.
              const std::uint64_t oldest = members.front();
              auto promoted = set_admin(oldest, true);
              if (!promoted) return promoted.error();
              auto name = impl::username_of(db, oldest);
              if (!name) return name.error();
              auto p = append(0, 0, {}, {group_change::promote, *name, {}, {}}, 0);
              if (!p) return p.error();
            }
            break;
          }
          case group_change::promote:
          case group_change::demote: {
            const bool promote = request.change == group_change::promote;
            if (is_admin(target) == promote) break;  // nothing to change
            auto w = set_admin(target, promote);
            if (!w) return w.error();
            auto seq = append(request.actor, request.actor_device, actor,
                              {request.change, request.user, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            break;
          }
          case group_change::rename: {
            if (current_name == request.name) break;  // nothing to change
            auto w = db.exec("UPDATE chats SET name = $2 WHERE chat_id = $1",
                             params().add(request.chat).text(request.name));
            if (!w) return w.error();
            auto seq = append(request.actor, request.actor_device, actor,
                              {group_change::rename, {}, request.name, {}}, request.actor_device);
            if (!seq) return seq.error();
            break;
          }
          case group_change::create:
            return errc::invalid_argument;
        }
        auto info = impl::info_of(db, request.chat);
        if (!info) return info.error();
        out.info = std::move(*info);
        return out;
      }, std::move(locks));
}

void postgresql_store::get_group(user_id requester, chat_id chat, completion<group_info> done) {
  impl_->read<group_info>(std::move(done), [requester, chat](connection& db) -> result<group_info> {
    if (!fits_bigint(chat)) return errc::not_found;
    auto c = db.exec(
        "SELECT 1 FROM chats c JOIN chat_members m ON m.chat_id = c.chat_id "
        "WHERE c.chat_id = $1 AND c.is_group AND m.user_id = $2 AND m.until_seq = 0",
        params().add(chat).add(requester));
    if (!c) return c.error();
    if (c->empty()) return errc::not_found;
    return impl::info_of(db, chat);
  });
}

// --- reads of the log ------------------------------------------------------------------------

void postgresql_store::backlog(device_id device, user_id user, std::uint64_t,
                               completion<device_backlog> done) {
  impl_->read<device_backlog>(
      std::move(done), [device, user](connection& db) -> result<device_backlog> {
        device_backlog out;
        // The stamp first: every watermark read below is at least as new as it.
        auto stamp = db.exec("SELECT CASE WHEN is_called THEN last_value ELSE 0 END "
                             "FROM parley_receipt_stamps");
        if (!stamp) return stamp.error();
        out.stamp = stamp->u64(0, 0);
        // Every chat of the user whose head (for a former member: the event that removed it)
        // is above this device's cursor, and whether everything above the cursor is the
        // device's own (the drain then moves the cursor without a read of the log per chat:
        // after a load, about half of a user's chats end with its own message).
        auto behind = db.exec(
            "SELECT b.chat_id, b.cur, b.last_seq, NOT EXISTS (SELECT 1 FROM messages x "
            "WHERE x.chat_id = b.chat_id AND x.seq > b.cur AND x.seq <= b.last_seq "
            "AND x.sender_device <> $2) FROM (SELECT m.chat_id, COALESCE(cu.seq, 0) AS cur, "
            "CASE WHEN m.until_seq = 0 THEN c.head ELSE LEAST(c.head, m.until_seq) END AS last_seq "
            "FROM chat_members m JOIN chats c ON c.chat_id = m.chat_id "
            "LEFT JOIN cursors cu ON cu.chat_id = m.chat_id AND cu.user_id = m.user_id "
            "AND cu.device_id = $2 WHERE m.user_id = $1) b WHERE b.last_seq > b.cur",
            params().add(user).add(device));
        if (!behind) return behind.error();
        for (int i = 0; i < behind->size(); ++i) {
          out.behind.push_back(
              {behind->u64(i, 0), behind->u64(i, 1), behind->u64(i, 2), behind->boolean(i, 3)});
        }
        // The other member's watermarks in each 1:1 chat.
        auto direct = db.exec(
            "SELECT o.chat_id, u.username, o.read_seq, COALESCE(cu.seq, 0) FROM chat_members me "
            "JOIN chats c ON c.chat_id = me.chat_id AND NOT c.is_group "
            "JOIN chat_members o ON o.chat_id = me.chat_id AND o.user_id <> me.user_id "
            "JOIN users u ON u.user_id = o.user_id "
            "LEFT JOIN LATERAL (SELECT MAX(x.seq) AS seq FROM cursors x "
            "WHERE x.chat_id = o.chat_id AND x.user_id = o.user_id) cu ON TRUE "
            "WHERE me.user_id = $1",
            params().add(user));
        if (!direct) return direct.error();
        for (int i = 0; i < direct->size(); ++i) {
          const std::uint64_t chat = direct->u64(i, 0);
          const std::string name(direct->text(i, 1));
          const std::uint64_t read = direct->u64(i, 2);
          const std::uint64_t delivered = direct->u64(i, 3);
          if (delivered > 0) out.marks.push_back({chat, name, message_status::delivered, delivered, 0, 0});
          if (read > 0) out.marks.push_back({chat, name, message_status::read, read, 0, 0});
        }
        // Each current group's merged watermarks: the lowest of every other current member.
        auto groups = db.exec(
            "SELECT me.chat_id, MIN(GREATEST(COALESCE(cu.seq, 0), o.read_seq)), MIN(o.read_seq) "
            "FROM chat_members me JOIN chats c ON c.chat_id = me.chat_id AND c.is_group "
            "JOIN chat_members o ON o.chat_id = me.chat_id AND o.user_id <> me.user_id "
            "AND o.until_seq = 0 "
            "LEFT JOIN LATERAL (SELECT MAX(x.seq) AS seq FROM cursors x "
            "WHERE x.chat_id = o.chat_id AND x.user_id = o.user_id) cu ON TRUE "
            "WHERE me.user_id = $1 AND me.until_seq = 0 GROUP BY me.chat_id",
            params().add(user));
        if (!groups) return groups.error();
        for (int i = 0; i < groups->size(); ++i) {
          const std::uint64_t chat = groups->u64(i, 0);
          const std::uint64_t delivered = groups->u64(i, 1);
          const std::uint64_t read = groups->u64(i, 2);
          if (delivered > 0) out.marks.push_back({chat, {}, message_status::delivered, delivered, 0, 0});
          if (read > 0) out.marks.push_back({chat, {}, message_status::read, read, 0, 0});
        }
        return out;
      });
}

void postgresql_store::device_cursor(device_id device, user_id user, chat_id chat,
                                     completion<std::uint64_t> done) {
  impl_->read<std::uint64_t>(
      std::move(done), [device, user, chat](connection& db) -> result<std::uint64_t> {
        auto r = db.exec(
            "SELECT seq FROM cursors WHERE chat_id = $1 AND user_id = $2 AND device_id = $3",
            params().add(chat).add(user).add(device));
        if (!r) return r.error();
        return r->empty() ? std::uint64_t{0} : r->u64(0, 0);
      });
}

void postgresql_store::read_log(chat_id chat, std::uint64_t after, std::uint64_t up_to,
                                std::size_t limit, std::size_t max_bytes,
                                completion<std::vector<shared_message>> done) {
  impl_->read<std::vector<shared_message>>(
      std::move(done), [chat, after, up_to, limit,
                        max_bytes](connection& db) -> result<std::vector<shared_message>> {
        std::vector<shared_message> out;
        if (up_to <= after || limit == 0) return out;
        auto r = db.exec(std::string("SELECT ") + message_columns +
                             " FROM messages WHERE chat_id = $1 AND seq > $2 AND seq <= $3 "
                             "ORDER BY seq LIMIT $4",
                         params()
                             .add(chat)
                             .add(clamp63(after))
                             .add(clamp63(up_to))
                             .add(clamp63(limit)));
        if (!r) return r.error();
        std::size_t bytes = 0;
        for (int i = 0; i < r->size(); ++i) {
          auto m = message_of(chat, *r, i);
          if (!m) return m.error();
          bytes += m->payload.size();
          if (!out.empty() && bytes > max_bytes) break;
          out.push_back(std::make_shared<const chat_message>(std::move(*m)));
        }
        return out;
      });
}

void postgresql_store::status(user_id requester, chat_id chat, std::uint64_t seq, bool detail,
                              completion<status_report> done) {
  impl_->read<status_report>(
      std::move(done), [requester, chat, seq, detail](connection& db) -> result<status_report> {
        if (!fits_bigint(chat)) return errc::not_found;
        auto m = db.exec(
            "SELECT sender_user, event IS NOT NULL FROM messages WHERE chat_id = $1 AND seq = $2",
            params().add(chat).add(clamp63(seq)));
        if (!m) return m.error();
        if (m->empty() || m->u64(0, 0) != requester || m->boolean(0, 1)) return errc::not_found;
        auto members = db.exec(
            "SELECT m.user_id, u.username, m.joined_seq, m.read_seq, COALESCE(cu.seq, 0) "
            "FROM chat_members m JOIN users u ON u.user_id = m.user_id "
            "LEFT JOIN LATERAL (SELECT MAX(x.seq) AS seq FROM cursors x "
            "WHERE x.chat_id = m.chat_id AND x.user_id = m.user_id) cu ON TRUE "
            "WHERE m.chat_id = $1 AND m.until_seq = 0 ORDER BY m.position",
            params().add(chat));
        if (!members) return members.error();
        status_report out;
        bool asker_member = false;
        for (int i = 0; i < members->size(); ++i) {
          const std::uint64_t member = members->u64(i, 0);
          if (member == requester) {
            asker_member = true;
            continue;
          }
          // A member who joined after the message is not counted: it was never sent to it.
          if (members->u64(i, 2) > seq) continue;
          ++out.recipients;
          const bool read = members->u64(i, 3) >= seq;
          const bool delivered = read || members->u64(i, 4) >= seq;
          out.read += read ? 1 : 0;
          out.delivered += delivered ? 1 : 0;
          if (!detail || !delivered) continue;
          std::string name(members->text(i, 1));
          if (read) out.read_by.push_back(name);
          out.delivered_to.push_back(std::move(name));
        }
        // Only a current member asks (a former one sent it, but may not see who has it).
        if (!asker_member) return errc::not_found;
        settle_status(out);
        return out;
      });
}

void postgresql_store::history(user_id requester, chat_ref chat, std::uint64_t before,
                               std::size_t limit, std::size_t max_bytes,
                               completion<history_page> done) {
  impl_->read<history_page>(
      std::move(done), [requester, chat = std::move(chat), before, limit,
                        max_bytes](connection& db) -> result<history_page> {
        std::uint64_t first = 1;
        auto id = impl::resolve_for_read(db, requester, chat, first);
        if (!id) return id.error();
        history_page out;
        out.chat = *id;
        if (*id == 0 || limit == 0 || (before != 0 && before <= first)) return out;
        auto r = db.exec(std::string("SELECT ") + message_columns +
                             " FROM messages WHERE chat_id = $1 AND seq >= $2 AND seq < $3 "
                             "ORDER BY seq DESC LIMIT $4",
                         params()
                             .add(*id)
                             .add(first)
                             .add(before == 0 ? clamp63(UINT64_MAX) : clamp63(before))
                             .add(clamp63(limit)));
        if (!r) return r.error();
        std::size_t bytes = 0;
        for (int i = 0; i < r->size(); ++i) {
          auto m = message_of(*id, *r, i);
          if (!m) return m.error();
          bytes += m->payload.size();
          if (!out.messages.empty() && bytes > max_bytes) break;
          out.messages.push_back(std::move(*m));
        }
        return out;
      });
}

// --- media -----------------------------------------------------------------------------------

namespace {

// Row i of a SELECT of media_id, owner, size, created_ms, refs, upload_id.
media_record media_row(const pg::rows& r, int i) {
  return media_record{std::string(r.text(i, 0)),
                      r.u64(i, 1),
                      r.u64(i, 2),
                      r.u64(i, 3),
                      r.u64(i, 4),
                      r.is_null(i, 5) ? std::string() : std::string(r.text(i, 5))};
}

}  // namespace

void postgresql_store::create_media(media_request request, completion<std::uint64_t> done) {
  std::vector<std::uint64_t> locks{user_lock(request.owner)};
  impl_->write<std::uint64_t>(
      std::move(done), [request = std::move(request)](connection& db) -> result<std::uint64_t> {
        // The user's row lock orders quota checks of one account across nodes.
        auto used = db.exec("SELECT media_bytes FROM users WHERE user_id = $1 FOR UPDATE",
                            params().add(request.owner));
        if (!used) return used.error();
        const std::uint64_t bytes = used->empty() ? 0 : used->u64(0, 0);
        if (request.quota != 0 &&
            (request.size > request.quota || bytes > request.quota - request.size)) {
          return errc::quota_exceeded;
        }
        auto w = db.exec(
            "INSERT INTO media (media_id, owner, size, created_ms) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (media_id) DO NOTHING",
            params().text(request.media).add(request.owner).add(request.size).add(now_ms()));
        if (!w) return w.error();
        if (w->affected() == 0) return errc::invalid_argument;  // 128 random bits: never
        auto u = db.exec("UPDATE users SET media_bytes = media_bytes + $2 WHERE user_id = $1",
                         params().add(request.owner).add(request.size));
        if (!u) return u.error();
        return bytes + request.size;
      }, std::move(locks));
}

void postgresql_store::media_of(user_id requester, chat_id chat, std::uint64_t seq,
                                completion<media_record> done) {
  impl_->read<media_record>(
      std::move(done), [requester, chat, seq](connection& db) -> result<media_record> {
        std::uint64_t first = 1;
        auto id = impl::resolve_for_read(db, requester, chat_ref{chat, {}}, first);
        if (!id) return id.error();
        if (seq < first || seq == 0) return errc::not_found;
        auto r = db.exec(
            "SELECT b.media_id, b.owner, b.size, b.created_ms, b.refs, b.upload_id FROM messages m "
            "JOIN media b ON b.media_id = m.media_id WHERE m.chat_id = $1 AND m.seq = $2",
            params().add(chat).add(clamp63(seq)));
        if (!r) return r.error();
        if (r->empty()) return errc::not_found;
        return media_row(*r, 0);
      });
}

void postgresql_store::own_media(user_id owner, std::string media,
                                 completion<media_record> done) {
  impl_->read<media_record>(
      std::move(done), [owner, media = std::move(media)](connection& db) -> result<media_record> {
        auto r = db.exec(
            "SELECT media_id, owner, size, created_ms, refs, upload_id FROM media "
            "WHERE media_id = $1 AND owner = $2",
            params().text(media).add(owner));
        if (!r) return r.error();
        if (r->empty()) return errc::media_not_found;
        return media_row(*r, 0);
      });
}

void postgresql_store::bind_upload(user_id owner, std::string media, std::string upload_id,
                                   completion<std::string> done) {
  impl_->write<std::string>(
      std::move(done),
      [owner, media = std::move(media),
       upload_id = std::move(upload_id)](connection& db) -> result<std::string> {
        if (upload_id.empty()) return errc::invalid_argument;
        // One statement: the first upload bound stays (COALESCE), and the row answers it.
        auto r = db.exec(
            "UPDATE media SET upload_id = COALESCE(upload_id, $3) WHERE media_id = $1 AND "
            "owner = $2 RETURNING upload_id",
            params().text(media).add(owner).text(upload_id));
        if (!r) return r.error();
        if (r->empty()) return errc::media_not_found;
        return std::string(r->text(0, 0));
      });
}

void postgresql_store::unreferenced_media(std::uint64_t created_before_ms, std::size_t limit,
                                          completion<std::vector<media_record>> done) {
  impl_->read<std::vector<media_record>>(
      std::move(done),
      [created_before_ms, limit](connection& db) -> result<std::vector<media_record>> {
        auto r = db.exec(
            "SELECT media_id, owner, size, created_ms, refs, upload_id FROM media "
            "WHERE refs = 0 AND created_ms < $1 ORDER BY created_ms, media_id LIMIT $2",
            params().add(clamp63(created_before_ms)).add(clamp63(limit)));
        if (!r) return r.error();
        std::vector<media_record> out;
        out.reserve(static_cast<std::size_t>(r->size()));
        for (int i = 0; i < r->size(); ++i) {
          out.push_back(media_row(*r, i));
        }
        return out;
      });
}

void postgresql_store::delete_media(std::vector<std::string> media,
                                    std::uint64_t created_before_ms,
                                    completion<std::vector<std::string>> done) {
  impl_->write<std::vector<std::string>>(
      std::move(done), [media = std::move(media), created_before_ms](
                           connection& db) -> result<std::vector<std::string>> {
        std::vector<std::string> deleted;
        for (const auto& id : media) {
          // Only if it still has no reference: a send may have named it since it was listed.
          auto r = db.exec(
              "DELETE FROM media WHERE media_id = $1 AND refs = 0 AND created_ms < $2 "
              "RETURNING owner, size",
              params().text(id).add(clamp63(created_before_ms)));
          if (!r) return r.error();
          if (r->empty()) continue;
          auto u = db.exec(
              "UPDATE users SET media_bytes = GREATEST(media_bytes - $2, 0) WHERE user_id = $1",
              params().add(r->u64(0, 0)).add(r->u64(0, 1)));
          if (!u) return u.error();
          deleted.push_back(id);
        }
        return deleted;
      });
}

void postgresql_store::media_exists(std::vector<std::string> media,
                                    completion<std::vector<bool>> done) {
  impl_->read<std::vector<bool>>(
      std::move(done), [media = std::move(media)](connection& db) -> result<std::vector<bool>> {
        auto r = db.exec("SELECT media_id FROM media WHERE media_id = ANY($1::text[])",
                         params().text(text_array(media)));
        if (!r) return r.error();
        std::unordered_set<std::string> found;
        for (int i = 0; i < r->size(); ++i) found.emplace(r->text(i, 0));
        std::vector<bool> out;
        out.reserve(media.size());
        for (const auto& id : media) out.push_back(found.contains(id));
        return out;
      });
}

}  // namespace parley::store
