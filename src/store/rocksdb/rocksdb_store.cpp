#include "store/rocksdb/rocksdb_store.hpp"

#include <rocksdb/compaction_filter.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/perf_context.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/sst_file_manager.h>
#include <rocksdb/table.h>
#include <sys/statvfs.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cassert>
#include <condition_variable>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "common/big_endian.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/small_function.hpp"
#include "common/snowflake.hpp"
#include "common/thread_name.hpp"
#include "parley/store/v1/records.pb.h"
#include "store/rocksdb/keys.hpp"
#include "store/rocksdb/login_index.hpp"
#include "store/rocksdb/wal_prefill.hpp"
#include "store/watermarks.hpp"
#include "store/write_health.hpp"
#include "store/write_queue.hpp"

namespace parley::store {
namespace {

namespace pb = parley::store::v1;
using boost::system::error_code;

enum cf : std::size_t {
  cf_default,
  cf_accounts,
  cf_users,
  cf_devices,
  cf_chats,
  cf_direct_chats,
  cf_user_chats,
  cf_messages,
  cf_cursors,
  cf_read_marks,
  cf_dedupe,
  cf_device_keys,
  cf_media,
  cf_count
};

constexpr const char* cf_names[cf_count] = {
    "default",  "accounts",   "users",      "devices", "chats",  "direct_chats",
    "user_chats", "messages", "cursors", "read_marks", "dedupe", "device_keys", "media",
};

rocksdb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }

// parley.v2.CIPHER_TYPE_SENDER_KEY_MESSAGE: what a group takes.
constexpr std::uint32_t sender_key_cipher_type = 4;

// The requests of one group commit: their writes, what later requests of the same group must
// see of them (the overlay: column family byte + key -> value, nullopt for a delete), and
// what to run once the group is durable. `undo` holds, for the request being applied, how to
// take back what it changed outside the batch (overlay, caches): run in reverse if it fails.
struct group {
  rocksdb::WriteBatch batch;
  std::unordered_map<std::string, std::optional<std::string>> overlay;
  std::vector<small_function<void(error_code)>> on_durable;
  std::vector<small_task> undo;
  std::vector<std::uint64_t> appended;  // chats whose head moved in this group
  std::vector<login_index::change> logins;  // for the login index, once durable
  // Cursors that acks moved in groups, written once each when the group is committed (a
  // 1,024-member group's members ack each message: under load, one commit holds several
  // acks of each member, and writing only the last of each, in key order, saves most of the
  // memtable inserts). 1:1 cursors are written at once: their receipts carry the stamp of the
  // request's own write.
  std::map<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>, std::uint64_t> group_cursors;
  bool ids_issued = false;

  // Empties the group for the next commit. The writer keeps one group and resets it, so that
  // the batch's buffer, its save-point stack and the vectors keep their capacity from commit to
  // commit instead of growing again from nothing (about 10 allocations per message at
  // 1,000 msg/s, docs/performance.md). A batch that grew past `keep_bytes` (an overload's
  // group) is let go, so that one burst does not pin its memory.
  void reset(std::size_t keep_bytes) {
    if (batch.GetDataSize() > keep_bytes) {
      batch = rocksdb::WriteBatch();
    } else {
      batch.Clear();
    }
    overlay.clear();
    on_durable.clear();
    undo.clear();
    appended.clear();
    logins.clear();
    group_cursors.clear();
    ids_issued = false;
  }
};

// Drops every second entry of a cache that outgrew its bound. The order of an unordered map
// has nothing to do with use, so this forgets a random half: a working set larger than the
// bound keeps hitting in proportion to the share of it held, where emptying the cache (what
// this replaced) left no hit until it refilled, and on a store with more chats than the
// bound the writer spent its time refilling (docs/performance.md, issue 13's "Second
// session").
template <class Map>
void evict_half(Map& map) {
  bool drop = false;
  for (auto it = map.begin(); it != map.end();) {
    it = drop ? map.erase(it) : std::next(it);
    drop = !drop;
  }
}

// Receipts returned by a write carry their request's stamp (the sequence number of its last
// write); other results have none.
template <class T>
void stamp_receipts(result<T>&, std::uint64_t) {}
void stamp_receipts(result<std::vector<receipt_delivery>>& r, std::uint64_t stamp) {
  if (!r) return;
  for (auto& d : *r) d.mark.stamp = stamp;
}
void stamp_receipts(result<watermark_moves>& r, std::uint64_t stamp) {
  if (!r) return;
  for (auto& d : r->receipts) d.mark.stamp = stamp;
}

std::string overlay_key(std::size_t family, std::string_view key) {
  std::string k(1, static_cast<char>(family));
  k.append(key);
  return k;
}

// A user as the writer needs it; cached, since only the writer changes users.
struct cached_user {
  std::string username;
  std::vector<std::uint64_t> devices;
};

// A chat as the writer needs it: its members and its head (last seq), which the writer alone
// moves. Cached; the head is recovered from the log's last key. A group also keeps what its
// record holds (name, admins, when each member joined).
struct cached_chat {
  std::vector<std::uint64_t> members;
  std::uint64_t head = 0;
  bool group = false;
  std::string name;
  std::vector<std::uint64_t> admins;
  std::vector<std::uint64_t> joined;  // per member: the seq of the event that added it
  std::uint64_t created_ms = 0;
  bool is_member(std::uint64_t user) const {
    return std::find(members.begin(), members.end(), user) != members.end();
  }
  bool is_admin(std::uint64_t user) const {
    return std::find(admins.begin(), admins.end(), user) != admins.end();
  }
};


// A user's entry in user_chats: whether the chat is a group, and for a group the user left
// or was removed from, the seq of that event (the last the user may get).
struct membership {
  bool group = false;
  std::uint64_t until = 0;  // 0: a member now
};
std::string membership_value(const membership& m) {
  if (!m.group) return {};
  std::string v = "g";
  if (m.until != 0) v.append(keys::be64(m.until).view());
  return v;
}
std::optional<membership> parse_membership(std::string_view v) {
  if (v.empty()) return membership{};
  if (v[0] != 'g') return std::nullopt;
  if (v.size() == 1) return membership{true, 0};
  if (v.size() != 9) return std::nullopt;
  return membership{true, read_be64(v, 1)};
}

// A user's chat as a login reads it.
struct user_chat {
  std::uint64_t chat = 0;
  membership member;
};

template <class Record>
bool parse(Record& record, std::string_view bytes) {
  return record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
}

struct pair_hash {
  std::size_t operator()(const std::pair<std::uint64_t, std::uint64_t>& k) const noexcept {
    std::uint64_t h = k.first * 0x9E3779B97F4A7C15ull ^ k.second;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return static_cast<std::size_t>(h ^ (h >> 32));
  }
};

// Drops dedupe records older than the window as compaction meets them. Reads ignore expired
// records too, so what a retry gets does not depend on when compaction ran.
class dedupe_expiry final : public rocksdb::CompactionFilter {
 public:
  explicit dedupe_expiry(std::chrono::milliseconds window) : window_(window) {}
  bool Filter(int, const rocksdb::Slice&, const rocksdb::Slice& value, std::string*,
              bool*) const override {
    pb::DedupeRecord record;
    if (!record.ParseFromArray(value.data(), static_cast<int>(value.size()))) return false;
    return expired(record.sent_at_ms(), window_);
  }
  const char* Name() const override { return "parley.dedupe_expiry"; }

  static bool expired(std::uint64_t sent_at_ms, std::chrono::milliseconds window) {
    const std::uint64_t now = now_ms();
    return now > sent_at_ms && now - sent_at_ms > static_cast<std::uint64_t>(window.count());
  }

 private:
  std::chrono::milliseconds window_;
};

// Read options for a range scan over [lower, upper): the bounds let RocksDB stop at the range's
// end instead of stepping over whatever (deleted) keys follow it.
struct bounded_read {
  bounded_read(std::string_view lower, std::string_view upper)
      : lower_key(lower), upper_key(upper), lo(lower_key), hi(upper_key) {
    options.iterate_lower_bound = &lo;
    options.iterate_upper_bound = &hi;
  }
  bounded_read(const bounded_read&) = delete;
  bounded_read& operator=(const bounded_read&) = delete;
  std::string lower_key, upper_key;
  rocksdb::Slice lo, hi;
  rocksdb::ReadOptions options;
};

// [prefix, prefix + 1): every key starting with a be64 prefix of `n` integers.
std::string after_prefix(std::string_view prefix) {
  std::string s(prefix);
  for (std::size_t i = s.size(); i-- > 0;) {
    if (static_cast<unsigned char>(s[i]) != 0xff) {
      s[i] = static_cast<char>(static_cast<unsigned char>(s[i]) + 1);
      s.resize(i + 1);
      return s;
    }
  }
  return std::string(s.size() + 1, '\xff');
}

}  // namespace

struct rocksdb_store::impl {
  explicit impl(rocksdb_options o) : options(std::move(o)), reader_work(readers.get_executor()) {}
  ~impl() { stop_readers(); }  // stop() normally has joined them already

  rocksdb_options options;
  // The file system under the database (its write-ahead logs zero-filled ahead: wal_prefill.hpp);
  // declared before `db`, which uses it until it is gone.
  std::unique_ptr<rocksdb::Env> env;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
  std::unique_ptr<dedupe_expiry> dedupe_filter;
  std::atomic<bool> stopped{false};

  // Reads run on `reader_threads` named threads ("store-reader-N") serving one io_context.
  boost::asio::io_context readers;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> reader_work;
  std::vector<std::thread> reader_threads;

  void start_readers() {
    for (std::size_t i = 0; i < options.reader_threads; ++i) {
      reader_threads.emplace_back([this] { readers.run(); });
      name_thread(reader_threads.back(), "store-reader-" + std::to_string(i));
    }
  }
  // Runs what was posted, then joins.
  void stop_readers() {
    reader_work.reset();
    for (auto& t : reader_threads) {
      if (t.joinable()) t.join();
    }
  }

  // Writer queue (any thread) and writer thread.
  // Called with the group to add to, or with nullptr and the reason it is refused
  // (shutting_down, unavailable).
  using command = small_function<void(group*, errc)>;
  write_queue<command> queue;
  std::atomic<std::uint64_t> pending_count{0};
  std::thread writer;

  // Writer-thread state. The caches hold committed state and the running group's changes
  // (each undone if its request fails); a failed commit clears them.
  std::unordered_map<std::string, std::uint64_t> user_ids;            // username -> user id
  std::unordered_map<std::uint64_t, cached_user> users;               // user id -> user
  std::unordered_map<std::uint64_t, cached_chat> chats;               // chat id -> chat
  std::unordered_map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t, pair_hash>
      direct_chats;                                                   // (lo, hi) -> chat id
  std::unordered_map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t, pair_hash>
      cursors;                                                        // (chat, device) -> seq
  std::unordered_map<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t, pair_hash>
      read_marks;                                                     // (chat, user) -> seq
  std::unordered_map<std::uint64_t, std::uint32_t> registration_ids;  // device -> 0 if no keys
  snowflake ids{0};

  // Chats' heads as committed, for the readers (the writer's `chats` cache is its own): the
  // writer raises them after each commit, before any completion runs (so before any push of
  // what it committed); a reader that finds none reads the log's last key and raises it.
  // Heads only grow, so raising (a maximum) makes the order of the two harmless. Bounded:
  // past max_cached entries, half of it is forgotten (evict_half).
  struct published_heads {
    std::mutex mutex;
    std::unordered_map<std::uint64_t, std::uint64_t> heads;
    std::size_t max = 0;
    std::uint64_t get(std::uint64_t chat) {
      std::lock_guard lock(mutex);
      auto it = heads.find(chat);
      return it == heads.end() ? 0 : it->second;
    }
    void raise(std::uint64_t chat, std::uint64_t head) {
      std::lock_guard lock(mutex);
      if (heads.size() > max) evict_half(heads);
      auto& h = heads[chat];
      h = std::max(h, head);
    }
  } heads;
  std::uint64_t last_id = 0;
  // Kept by the writer after each commit (login_index.hpp); read by logins.
  std::optional<login_index> logins;  // from open()
  // The sequence number of the last commit's first write (writer thread): a request whose
  // last write is at batch position p (1-based) has stamp group_base + p - 1.
  std::uint64_t group_base = 0;
  // The writer's buffer for a record's encoding on the message path: put() copies it into the
  // batch at once, so one buffer serves every record, and keeps its capacity.
  std::string encoded;
  // The writer's message record, cleared and filled again for each message: a cleared
  // message keeps its string objects, so the name and payload moved in and out again cost
  // no allocation.
  pb::StoredMessage record;

  // Whether writes are accepted (see rocksdb_options::reserve_bytes). The writer decides;
  // health() reads it from any thread.
  write_health health{"store: writes resumed"};
  // Writer-thread state of the same: a write failed and DB::Resume() has not succeeded yet;
  // when the free space was last checked, and how much was written since.
  bool write_failed = false;
  std::chrono::steady_clock::time_point last_resume_attempt{};
  std::chrono::steady_clock::time_point last_space_check{};
  std::uint64_t written_since_check = 0;
  bool space_short = false;
  std::shared_ptr<rocksdb::SstFileManager> sst_files;

  void set_health(bool ok, std::string reason);
  std::optional<std::string> space_shortage();
  bool accepting_writes();
  std::uint64_t next_user = 1;
  std::uint64_t next_device = 1;

  void open();
  void run_writer();

  rocksdb::Status get(group& g, cf family, std::string_view key, std::string* value) {
    assert(read_in_group(family));
    auto it = g.overlay.find(overlay_key(family, key));
    if (it != g.overlay.end()) {
      if (!it->second) return rocksdb::Status::NotFound();
      *value = *it->second;
      return rocksdb::Status::OK();
    }
    return db->Get(rocksdb::ReadOptions(), cfs[family], slice(key), value);
  }
  // `at`: a snapshot to read at (null: the latest state).
  rocksdb::Status get(cf family, std::string_view key, std::string* value,
                      const rocksdb::Snapshot* at = nullptr) {
    rocksdb::ReadOptions o;
    o.snapshot = at;
    return db->Get(o, cfs[family], slice(key), value);
  }
  // Families that writer code reads back through the overlay within a group. The others are
  // never read there (messages, meta) or are served from the writer's caches (users, chats,
  // cursors, read marks), so their writes skip the overlay: no copy of the value, no hash
  // insert.
  static constexpr bool read_in_group(cf family) {
    return family == cf_accounts || family == cf_dedupe || family == cf_device_keys ||
           family == cf_user_chats || family == cf_media;
  }
  void del(group& g, cf family, std::string_view key) {
    assert(read_in_group(family));
    g.batch.Delete(cfs[family], slice(key));
    auto k = overlay_key(family, key);
    auto it = g.overlay.find(k);
    if (it == g.overlay.end()) {
      g.overlay.emplace(k, std::nullopt);
      g.undo.push_back([&g, k] { g.overlay.erase(k); });
    } else {
      g.undo.push_back([&g, k, before = std::move(it->second)] { g.overlay[k] = before; });
      it->second = std::nullopt;
    }
  }
  // The bytes a user's media hold (keys::media_usage), through the group's overlay.
  result<std::uint64_t> media_usage(group& g, std::uint64_t user) {
    std::string v;
    auto s = get(g, cf_media, keys::media_usage(user), &v);
    if (s.IsNotFound()) return std::uint64_t{0};
    if (!s.ok()) return errc::io_error;
    if (v.size() != 8) return errc::corrupt;
    return read_be64(v);
  }
  // The live idempotency record under `key` (keys::dedupe): the first result of a send or of a
  // group's creation with that id, unless none was kept or it is past the dedupe window.
  result<std::optional<pb::DedupeRecord>> live_dedupe(group& g, std::string_view key) {
    std::string v;
    auto s = get(g, cf_dedupe, key, &v);
    if (s.IsNotFound()) return std::nullopt;
    if (!s.ok()) return errc::io_error;
    pb::DedupeRecord first;
    if (!parse(first, v)) return errc::corrupt;
    if (dedupe_expiry::expired(first.sent_at_ms(), options.dedupe_window)) return std::nullopt;
    return first;
  }
  // Keeps a request's first result under its idempotency key, for live_dedupe.
  void put_dedupe(group& g, std::string_view key, std::uint64_t chat, std::uint64_t seq,
                  std::uint64_t message_id, std::uint64_t sent_at_ms) {
    pb::DedupeRecord r;
    r.set_chat_id(chat);
    r.set_seq(seq);
    r.set_message_id(message_id);
    r.set_sent_at_ms(sent_at_ms);
    r.SerializeToString(&encoded);
    put(g, cf_dedupe, key, encoded);
  }
  void set_media_usage(group& g, std::uint64_t user, std::uint64_t bytes) {
    put(g, cf_media, keys::media_usage(user), keys::be64(bytes));
  }
  void put(group& g, cf family, std::string_view key, std::string_view value) {
    g.batch.Put(cfs[family], slice(key), slice(value));
    if (!read_in_group(family)) return;
    auto k = overlay_key(family, key);
    auto it = g.overlay.find(k);
    if (it == g.overlay.end()) {
      g.overlay.emplace(k, std::string(value));
      g.undo.push_back([&g, k] { g.overlay.erase(k); });
    } else {
      g.undo.push_back([&g, k, before = std::move(it->second)] { g.overlay[k] = before; });
      it->second = std::string(value);
    }
  }
  // A group cursor to write when the group is committed (group::group_cursors).
  void defer_group_cursor(group& g, std::uint64_t chat, std::uint64_t user, std::uint64_t device,
                          std::uint64_t seq) {
    const auto key = std::make_tuple(chat, user, device);
    auto [it, added] = g.group_cursors.try_emplace(key, seq);
    if (added) {
      g.undo.push_back([&g, key] { g.group_cursors.erase(key); });
    } else {
      g.undo.push_back([&g, key, before = it->second] { g.group_cursors[key] = before; });
      it->second = std::max(it->second, seq);
    }
  }
  // Sets a cached value, remembering how to take it back if the request fails.
  template <class Map, class Key>
  void set_cached(group& g, Map& map, const Key& key, std::uint64_t value) {
    auto [it, inserted] = map.try_emplace(key, value);
    if (inserted) {
      g.undo.push_back([&map, key] { map.erase(key); });
    } else {
      g.undo.push_back([&map, key, before = it->second] { map[key] = before; });
      it->second = value;
    }
  }
  std::uint64_t next_id(group& g, std::uint64_t now) {
    g.ids_issued = true;
    last_id = ids.next(now);
    return last_id;
  }

  // Queues `apply` for the writer. `apply(group&)` runs on the writer thread inside a savepoint
  // of the batch and returns the request's result; if that is an error, its writes and cache
  // changes are taken back, so a failed request leaves nothing. `done` runs once the group is
  // durable, with apply's result or the commit's error. A full queue refuses at once (busy).
  template <class T, class Apply>
  void write(completion<T> done, Apply apply) {
    command c = [this, done = std::move(done), apply = std::move(apply)](group* g,
                                                                  errc refusal) mutable {
      if (g == nullptr) {
        done(refusal);
        return;
      }
      g->batch.SetSavePoint();
      g->undo.clear();
      const std::size_t logins_before = g->logins.size();
      auto r = std::make_shared<result<T>>(apply(*g));
      // The request's stamp is the sequence number of its last write: its position in the
      // batch now, made a sequence number once the batch is committed.
      const std::uint32_t position = g->batch.Count();
      if (r->has_value()) {
        g->batch.PopSavePoint();
        for (std::size_t i = logins_before; i < g->logins.size(); ++i) {
          if (g->logins[i].what == login_index::change::kind::moved) g->logins[i].seq = position;
        }
      } else {
        g->batch.RollbackToSavePoint();
        g->logins.resize(logins_before);
        while (!g->undo.empty()) {  // newest first
          g->undo.back()();
          g->undo.pop_back();
        }
      }
      g->undo.clear();
      g->on_durable.push_back([this, done = std::move(done), r, position](error_code ec) {
        if (ec && r->has_value()) {
          done(ec);
          return;
        }
        stamp_receipts(*r, group_base + position - 1);
        done(std::move(*r));
      });
    };
    switch (queue.push(c, pending_count, options.max_pending)) {
      case write_queue<command>::pushed::queued:
        return;
      case write_queue<command>::pushed::busy:
        // A completion never runs on the caller's thread: the refusal goes through a reader.
        boost::asio::post(readers, [c = std::move(c)]() mutable { c(nullptr, errc::busy); });
        return;
      case write_queue<command>::pushed::stopping:
        c(nullptr, errc::shutting_down);
        return;
    }
  }

  template <class T, class Read>
  void read(completion<T> done, Read fn) {
    if (stopped.load()) {
      done(errc::shutting_down);
      return;
    }
    boost::asio::post(readers,
                      [done = std::move(done), fn = std::move(fn)]() mutable { done(fn()); });
  }

  result<const cached_user*> user_record(std::uint64_t user) {
    if (auto it = users.find(user); it != users.end()) return &it->second;
    std::string v;
    auto s = get(cf_users, keys::be64(user).view(), &v);
    if (s.IsNotFound()) return errc::unknown_user;
    if (!s.ok()) return errc::io_error;
    pb::UserRecord record;
    if (!parse(record, v)) return errc::corrupt;
    auto& u = users[user];
    u.username = record.username();
    u.devices.assign(record.devices().begin(), record.devices().end());
    return &u;
  }

  // username -> user id (writer thread, cached).
  result<std::uint64_t> user_of(group& g, const std::string& username) {
    if (auto it = user_ids.find(username); it != user_ids.end()) return it->second;
    std::string v;
    auto s = get(g, cf_accounts, username, &v);
    if (s.IsNotFound()) return errc::unknown_user;
    if (!s.ok() || v.size() != 8) return errc::io_error;
    const std::uint64_t id = read_be64(v);
    user_ids.emplace(username, id);
    return id;
  }

  // The last seq of a chat's log: its last key (any thread).
  result<std::uint64_t> log_head(std::uint64_t chat) {
    const auto lower = keys::message(chat, 0);
    const auto upper = keys::message(chat + 1, 0);
    bounded_read r(lower.view(), upper.view());
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(r.options, cfs[cf_messages]));
    it->SeekToLast();
    if (!it->status().ok()) return errc::io_error;
    if (!it->Valid() || it->key().size() != 16) return std::uint64_t{0};
    return read_be64(std::string_view(it->key().data(), 16), 8);
  }

  // A chat's record (any thread): nullopt if there is no such chat.
  // `at`: the read's snapshot (null: the latest state).
  result<std::optional<pb::ChatRecord>> chat_record(std::uint64_t chat,
                                                    const rocksdb::Snapshot* at = nullptr) {
    std::string v;
    auto s = get(cf_chats, keys::be64(chat).view(), &v, at);
    if (s.IsNotFound()) return std::optional<pb::ChatRecord>();
    if (!s.ok()) return errc::io_error;
    pb::ChatRecord record;
    if (!parse(record, v)) return errc::corrupt;
    return std::optional<pb::ChatRecord>(std::move(record));
  }

  // A chat as the writer knows it (writer thread, cached); nullptr if there is no such chat.
  result<cached_chat*> chat_of(std::uint64_t chat) {
    if (auto it = chats.find(chat); it != chats.end()) return &it->second;
    auto record = chat_record(chat);
    if (!record) return record.error();
    if (!*record) return static_cast<cached_chat*>(nullptr);
    auto head = log_head(chat);
    if (!head) return head.error();
    auto& c = chats[chat];
    c = cached_chat_of(**record);
    c.head = *head;
    return &c;
  }

  // A chat's record as the writer keeps it (head 0: it is not in the record).
  static cached_chat cached_chat_of(const pb::ChatRecord& record) {
    cached_chat c;
    c.members.assign(record.members().begin(), record.members().end());
    c.created_ms = record.created_ms();
    if (record.kind() == pb::ChatRecord::KIND_GROUP) {
      c.group = true;
      c.name = record.name();
      c.admins.assign(record.admins().begin(), record.admins().end());
      c.joined.assign(record.joined_seq().begin(), record.joined_seq().end());
      c.joined.resize(c.members.size(), 1);
    }
    return c;
  }

  // The 1:1 chat of two users (writer thread, cached); 0 if they have none yet.
  result<std::uint64_t> direct_chat_of(std::uint64_t a, std::uint64_t b) {
    const auto pair = std::minmax(a, b);
    if (auto it = direct_chats.find(pair); it != direct_chats.end()) return it->second;
    std::string v;
    auto s = get(cf_direct_chats, keys::direct_chat(a, b).view(), &v);
    if (s.IsNotFound()) return std::uint64_t{0};
    if (!s.ok() || v.size() != 8) return errc::io_error;
    const std::uint64_t chat = read_be64(v);
    direct_chats.emplace(pair, chat);
    return chat;
  }

  // A device's cursor in a chat as stored, 0 if it has none (any thread).
  result<std::uint64_t> stored_cursor(std::uint64_t chat, std::uint64_t user,
                                      std::uint64_t device) {
    std::string v;
    auto s = get(cf_cursors, keys::cursor(chat, user, device).view(), &v);
    if (s.IsNotFound()) return std::uint64_t{0};
    if (!s.ok()) return errc::io_error;
    if (v.size() != 8) return errc::corrupt;
    return read_be64(v);
  }
  // The same, cached (writer thread).
  result<std::uint64_t> cursor_of(std::uint64_t chat, std::uint64_t user, std::uint64_t device) {
    if (auto it = cursors.find({chat, device}); it != cursors.end()) return it->second;
    auto seq = stored_cursor(chat, user, device);
    if (!seq) return seq.error();
    cursors.emplace(std::make_pair(chat, device), *seq);
    return *seq;
  }

  // A user's delivered watermark in a chat: the highest cursor of its devices.
  result<std::uint64_t> delivered_of(std::uint64_t chat, std::uint64_t user) {
    auto owner = user_record(user);
    if (!owner) return owner.error();
    std::uint64_t best = 0;
    for (std::uint64_t device : (*owner)->devices) {
      auto c = cursor_of(chat, user, device);
      if (!c) return c.error();
      best = std::max(best, *c);
    }
    return best;
  }

  result<std::uint64_t> read_mark_of(std::uint64_t chat, std::uint64_t user) {
    if (auto it = read_marks.find({chat, user}); it != read_marks.end()) return it->second;
    std::string v;
    auto s = get(cf_read_marks, keys::read_mark(chat, user).view(), &v);
    std::uint64_t seq = 0;
    if (s.ok() && v.size() == 8) {
      seq = read_be64(v);
    } else if (!s.IsNotFound()) {
      return errc::io_error;
    }
    read_marks.emplace(std::make_pair(chat, user), seq);
    return seq;
  }

  // A receipt for every device of the chat's members other than `user`, each noted in the
  // login index as moved for that device.
  result<void> receipts_to_others(group& g, const cached_chat& chat, std::uint64_t user,
                                  const watermark& mark, std::vector<receipt_delivery>& out) {
    for (std::uint64_t member : chat.members) {
      if (member == user) continue;
      auto owner = user_record(member);
      if (!owner) return owner.error();
      for (std::uint64_t device : (*owner)->devices) {
        out.push_back({device, mark});
        g.logins.push_back({login_index::change::kind::moved, device, mark.chat, 0});
      }
    }
    return {};
  }

  // --- groups (writer thread) ---

  // A user's entry for a chat in user_chats from its lookup: nullopt if the user never was in
  // it.
  static result<std::optional<membership>> membership_of(const rocksdb::Status& s,
                                                         std::string_view value) {
    if (s.IsNotFound()) return std::optional<membership>();
    if (!s.ok()) return errc::io_error;
    auto m = parse_membership(value);
    if (!m) return errc::corrupt;
    return m;
  }
  // The same through the group's overlay (writer thread).
  result<std::optional<membership>> membership_in(group& g, std::uint64_t user,
                                                  std::uint64_t chat) {
    std::string v;
    auto s = get(g, cf_user_chats, keys::user_chat(user, chat).view(), &v);
    return membership_of(s, v);
  }
  // The same as committed (any thread).
  result<std::optional<membership>> stored_membership(std::uint64_t user, std::uint64_t chat) {
    std::string v;
    auto s = get(cf_user_chats, keys::user_chat(user, chat).view(), &v);
    return membership_of(s, v);
  }

  // Writes a group's record from its cached state.
  void put_group_record(group& g, std::uint64_t chat, const cached_chat& c) {
    pb::ChatRecord record;
    record.set_kind(pb::ChatRecord::KIND_GROUP);
    for (auto m : c.members) record.add_members(m);
    for (auto a : c.admins) record.add_admins(a);
    for (auto j : c.joined) record.add_joined_seq(j);
    record.set_name(c.name);
    record.set_created_ms(c.created_ms);
    put(g, cf_chats, keys::be64(chat).view(), record.SerializeAsString());
  }

  // Appends a group's system message at the chat's next seq.
  shared_message append_event(group& g, std::uint64_t chat, cached_chat& c, std::uint64_t sender,
                              std::uint64_t sender_device, const std::string& sender_name,
                              group_event event, std::uint64_t now) {
    const std::uint64_t seq = c.head + 1;
    const std::uint64_t id = next_id(g, now);
    pb::StoredMessage stored;
    stored.set_message_id(id);
    stored.set_sender_user(sender);
    stored.set_sender_device(sender_device);
    stored.set_sender_name(sender_name);
    stored.set_sent_at_ms(now);
    auto* e = stored.mutable_event();
    e->set_change(static_cast<std::uint32_t>(event.change));
    e->set_user(event.user);
    e->set_name(event.name);
    for (const auto& m : event.members) e->add_members(m);
    put(g, cf_messages, keys::message(chat, seq), stored.SerializeAsString());
    const std::uint64_t before = c.head;
    c.head = seq;
    g.appended.push_back(chat);
    g.undo.push_back([this, &g, chat, before] {
      if (auto it = chats.find(chat); it != chats.end()) it->second.head = before;
      g.appended.pop_back();
    });
    auto m = std::make_shared<chat_message>();
    m->chat = chat;
    m->seq = seq;
    m->id = id;
    m->sender = sender;
    m->sender_device = sender_device;
    m->sender_name = sender_name;
    m->sent_at_ms = now;
    m->event = std::make_shared<const group_event>(std::move(event));
    return m;
  }

  // Every device of the chat's members but `except` (the sending device), each noted in the
  // login index as having the message at `seq`.
  result<std::vector<std::uint64_t>> member_devices(group& g, const cached_chat& c,
                                                    std::uint64_t chat, std::uint64_t seq,
                                                    std::uint64_t except) {
    std::vector<std::uint64_t> out;
    out.reserve(c.members.size());
    for (std::uint64_t member : c.members) {
      auto owner = user_record(member);
      if (!owner) return owner.error();
      for (std::uint64_t device : (*owner)->devices) {
        if (device == except) continue;
        out.push_back(device);
        g.logins.push_back({login_index::change::kind::message, device, chat, seq});
      }
    }
    return out;
  }

  // A group as its members see it, naming each member with `name_of(user) ->
  // result<std::string>` (the writer's cache, or a reader's lookup).
  template <class NameOf>
  static result<group_info> info_of(std::uint64_t chat, const cached_chat& c, NameOf name_of) {
    group_info info;
    info.chat = chat;
    info.name = c.name;
    info.members.reserve(c.members.size());
    for (std::size_t i = 0; i < c.members.size(); ++i) {
      result<std::string> name = name_of(c.members[i]);
      if (!name) return name.error();
      info.members.push_back(
          {c.members[i], std::move(*name), c.is_admin(c.members[i]), c.joined[i]});
    }
    return info;
  }
  // The same on the writer thread (names from its user cache).
  result<group_info> info_of(std::uint64_t chat, const cached_chat& c) {
    return info_of(chat, c, [this](std::uint64_t user) -> result<std::string> {
      auto u = user_record(user);
      if (!u) return u.error();
      return (*u)->username;
    });
  }

  // The writer's view of a group's watermarks now: delivered (read counts as delivered) and
  // read, lowest and next lowest over its current members.
  result<group_marks> current_group_marks(std::uint64_t chat, const cached_chat& c) {
    std::vector<std::uint64_t> delivered, read;
    delivered.reserve(c.members.size());
    read.reserve(c.members.size());
    for (std::uint64_t member : c.members) {
      auto d = delivered_of(chat, member);
      if (!d) return d.error();
      auto r = read_mark_of(chat, member);
      if (!r) return r.error();
      delivered.push_back(std::max(*d, *r));
      read.push_back(*r);
    }
    return merge_marks(c.members, delivered, read);
  }
  // Groups' merged watermarks as last pushed (group_receipts); forgotten with the caches (the
  // next call pushes them again, which receivers apply as a maximum).
  std::unordered_map<std::uint64_t, group_marks> pushed_group_marks;

  // Calls fn on each cache.
  template <class Fn>
  void each_cache(Fn fn) {
    fn(user_ids);
    fn(users);
    fn(chats);
    fn(pushed_group_marks);
    fn(direct_chats);
    fn(cursors);
    fn(read_marks);
    fn(registration_ids);
  }
  // Halves each cache that grew past options.max_cached. Only between groups: during one,
  // the caches hold the group's own uncommitted changes (a chat's head, a new user).
  void trim_caches() {
    each_cache([&](auto& cache) {
      if (cache.size() > options.max_cached) evict_half(cache);
    });
  }
  void clear_caches() {
    each_cache([](auto& cache) { cache.clear(); });
  }

  // A device's keys record from the outcome of its lookup; nullopt if it has none.
  static result<std::optional<pb::DeviceKeys>> device_keys_of(const rocksdb::Status& s,
                                                              const std::string& value) {
    if (s.IsNotFound()) return std::optional<pb::DeviceKeys>();
    if (!s.ok()) return errc::io_error;
    pb::DeviceKeys record;
    if (!parse(record, value)) return errc::corrupt;
    return std::optional<pb::DeviceKeys>(std::move(record));
  }
  // The same through the group's overlay (writer thread).
  result<std::optional<pb::DeviceKeys>> device_keys(group& g, std::uint64_t device) {
    std::string v;
    auto s = get(g, cf_device_keys, keys::be64(device).view(), &v);
    return device_keys_of(s, v);
  }

  // The registration id of a device's keys, 0 if it has none (writer thread, cached).
  result<std::uint32_t> registration_of(group& g, std::uint64_t device) {
    if (auto it = registration_ids.find(device); it != registration_ids.end()) return it->second;
    auto record = device_keys(g, device);
    if (!record) return record.error();
    const std::uint32_t id = *record ? (*record)->registration_id() : 0;
    registration_ids.emplace(device, id);
    return id;
  }

  result<std::uint64_t> user_of(const std::string& username) {
    std::string v;
    auto s = get(cf_accounts, username, &v);
    if (s.IsNotFound()) return errc::unknown_user;
    if (!s.ok() || v.size() != 8) return errc::io_error;
    return read_be64(v);
  }

  // Reader-side lookups (any thread; no caches).
  result<std::string> username_of(std::uint64_t user) {
    std::string v;
    auto s = get(cf_users, keys::be64(user).view(), &v);
    if (!s.ok()) return s.IsNotFound() ? errc::corrupt : errc::io_error;
    pb::UserRecord record;
    if (!parse(record, v)) return errc::corrupt;
    return record.username();
  }
  // Every member's delivered watermark (highest device cursor) and read mark in a chat.
  struct member_marks {
    std::uint64_t delivered = 0;
    std::uint64_t read = 0;
  };
  using chat_marks = std::unordered_map<std::uint64_t, member_marks>;
  // Fills `out` with the chat's members' marks, with one Seek on each of two iterators over
  // cursors and read_marks (reusable across chats: neither family has deletes, so a scan from
  // a Seek steps over no tombstones). If `device_cursor` is given, it gets the cursor of
  // (user, device), 0 if there is none.
  result<void> scan_marks(std::uint64_t chat, rocksdb::Iterator& cursors_it,
                          rocksdb::Iterator& marks_it, chat_marks& out, std::uint64_t user = 0,
                          std::uint64_t device = 0, std::uint64_t* device_cursor = nullptr) {
    out.clear();
    if (device_cursor != nullptr) *device_cursor = 0;
    const auto prefix = keys::be64(chat);
    for (auto* it : {&cursors_it, &marks_it}) {
      for (it->Seek(slice(prefix)); it->Valid() && it->key().starts_with(slice(prefix));
           it->Next()) {
        const std::string_view key(it->key().data(), it->key().size());
        if (key.size() < 16 || it->value().size() != 8) return errc::corrupt;
        const std::uint64_t seq = read_be64(std::string_view(it->value().data(), 8));
        const std::uint64_t member = read_be64(key, 8);
        auto& m = out[member];
        if (it == &marks_it) {
          m.read = std::max(m.read, seq);
          continue;
        }
        m.delivered = std::max(m.delivered, seq);
        if (device_cursor != nullptr && member == user && key.size() == 24 &&
            read_be64(key, 16) == device) {
          *device_cursor = seq;
        }
      }
      if (!it->status().ok()) return errc::io_error;
    }
    return {};
  }
  // The same for one chat, on iterators of its own.
  result<chat_marks> marks_of(std::uint64_t chat) {
    std::unique_ptr<rocksdb::Iterator> cursors_it(
        db->NewIterator(rocksdb::ReadOptions(), cfs[cf_cursors]));
    std::unique_ptr<rocksdb::Iterator> marks_it(
        db->NewIterator(rocksdb::ReadOptions(), cfs[cf_read_marks]));
    chat_marks out;
    auto r = scan_marks(chat, *cursors_it, *marks_it, out);
    if (!r) return r.error();
    return out;
  }
  result<chat_message> stored_message(std::uint64_t chat, std::uint64_t seq,
                                      std::string_view bytes) {
    pb::StoredMessage m;
    if (!parse(m, bytes)) return errc::corrupt;
    std::shared_ptr<const group_event> event;
    if (m.has_event()) {
      const auto& e = m.event();
      if (e.change() < 1 || e.change() > 7) return errc::corrupt;
      event = std::make_shared<const group_event>(
          group_event{static_cast<group_change>(e.change()), e.user(), e.name(),
                      {e.members().begin(), e.members().end()}});
    }
    return chat_message{chat,
                        seq,
                        m.message_id(),
                        m.sender_user(),
                        m.sender_device(),
                        std::move(*m.mutable_sender_name()),
                        m.sent_at_ms(),
                        std::move(*m.mutable_payload()),
                        m.cipher_type(),
                        std::move(event),
                        std::move(*m.mutable_media_id())};
  }
  // The chat a request names, checked for membership (reader side): 0 for a 1:1 chat named by
  // a peer that has none yet. `first_seq`, if given, gets the first seq the requester may
  // read: in a group, the event that added it (nothing from before it joined); else 1.
  result<std::uint64_t> resolve_for_read(std::uint64_t requester, const chat_ref& ref,
                                         std::uint64_t* first_seq = nullptr) {
    if (first_seq != nullptr) *first_seq = 1;
    if (ref.chat == 0) {
      auto peer = user_of(ref.peer);
      if (!peer) return peer.error();
      std::string v;
      auto s = get(cf_direct_chats, keys::direct_chat(requester, *peer).view(), &v);
      if (s.IsNotFound() || *peer == requester) return std::uint64_t{0};
      if (!s.ok() || v.size() != 8) return errc::io_error;
      return read_be64(v);
    }
    auto record = chat_record(ref.chat);
    if (!record) return record.error();
    if (!*record) return errc::not_found;
    const auto& members = (*record)->members();
    const auto at = std::find(members.begin(), members.end(), requester);
    if (at == members.end()) return errc::not_found;
    const auto index = at - members.begin();
    if (first_seq != nullptr && index < (*record)->joined_seq_size())
      *first_seq = std::max<std::uint64_t>(1, (*record)->joined_seq(static_cast<int>(index)));
    return ref.chat;
  }

  result<device_backlog> compute_backlog(std::uint64_t device, std::uint64_t user,
                                         std::uint64_t since);
  // The user's chats (one range scan of user_chats).
  result<std::vector<user_chat>> chats_of(std::uint64_t user);
  // The user's entry for each of `chat_ids` (a point read each; chats it never was in are
  // left out).
  result<std::vector<user_chat>> memberships(std::uint64_t user,
                                             const std::vector<std::uint64_t>& chat_ids);
  // Of each of `chats`: the other members' watermarks into out.marks (a group's merged), and if
  // `with_behind`, the chat into out.behind if its head (for a former group member: the event
  // that removed it) is above the device's cursor.
  result<void> read_chats(const std::vector<user_chat>& chats, std::uint64_t device,
                          std::uint64_t user, bool with_behind, device_backlog& out);
  // A group's merged watermarks for `user` (the lowest of every other current member) into
  // out, from the marks of its members.
  result<void> group_marks_for(std::uint64_t chat, const chat_marks& members, std::uint64_t user,
                               const rocksdb::Snapshot* at, std::vector<watermark>& out);
  // A chat's head as committed (any thread).
  result<std::uint64_t> head_of(std::uint64_t chat);
  // Appends the watermarks above 0 of the members other than `user`.
  result<void> list_marks(std::uint64_t chat, const chat_marks& members, std::uint64_t user,
                          std::unordered_map<std::uint64_t, std::string>& names,
                          std::vector<watermark>& out);
};
void rocksdb_store::impl::open() {
  std::filesystem::create_directories(options.path);
  // A data directory of the first format (device queues) is not opened: there is no
  // migration to the chat log (pre-1.0; docs/operations.md).
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), options.path.string(), &existing)
          .ok() &&
      std::find(existing.begin(), existing.end(), "queue") != existing.end()) {
    throw std::runtime_error("the store at " + options.path.string() +
                             " holds the old device-queue format (parleyd before protocol v2); "
                             "this parleyd keeps the chat log and cannot read it: move the "
                             "directory aside (there is no migration)");
  }
  rocksdb::DBOptions db_options;
  // Without a sync per commit (tests, benchmarks) the zeros would save nothing.
  env = rocksdb::NewCompositeEnv(make_wal_prefill_file_system(
      rocksdb::FileSystem::Default(), options.sync ? options.wal_prefill_bytes : 0));
  db_options.env = env.get();
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  // A server may hold ~19,900 sockets under the 20,000 open-file limit: keep RocksDB's share small.
  db_options.max_open_files = 256;
  db_options.IncreaseParallelism(2);
  // Headroom (rocksdb_options::reserve_bytes): a capped log is all that a restart replays,
  // so recovery never needs more than the reserve. The SST file manager lets RocksDB's error
  // handler recover by itself from a full disk once space returns, and keeps compactions
  // from eating into the reserve after one.
  db_options.max_total_wal_size = std::max<std::uint64_t>(options.reserve_bytes / 4, 1u << 20);
  sst_files.reset(rocksdb::NewSstFileManager(rocksdb::Env::Default()));
  sst_files->SetCompactionBufferSize(options.reserve_bytes / 2);
  // Against group-commit stalls (docs/performance.md, "Commit latency"): every commit
  // fdatasyncs the log, and on ext4 (data=ordered) that can wait for the journal to write out
  // whatever else is dirty, such as the SST data of a flush or compaction. Syncing SST data in
  // 1 MiB steps as it is written keeps little dirty at any time (RocksDB's tuning guide), and
  // deleting old SSTs at a bounded rate keeps a compaction's deletions (and their discards,
  // on a file system mounted with `discard`) from arriving at once. An A/B of 60-s steps did
  // not tell them apart from the defaults (both p99.9 ~14 ms per commit): kept as cheap
  // insurance, not as a measured win.
  db_options.bytes_per_sync = 1u << 20;
  sst_files->SetDeleteRateBytesPerSecond(64u << 20);
  db_options.sst_file_manager = sst_files;
  // One cap over every family's memtables (a write buffer manager): twelve families would
  // otherwise each get their own write_buffer_size with no overall bound.
  db_options.db_write_buffer_size = options.memtable_budget_bytes;

  // Most point lookups on the message path miss (a new client_msg_id): bloom filters in the
  // tables answer those without a search. The memtable's own bloom filter costs 1.3 MiB per
  // column family up front, so only the family whose lookups mostly miss gets one.
  dedupe_filter = std::make_unique<dedupe_expiry>(options.dedupe_window);
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size =
      std::min<std::uint64_t>(cf_options.write_buffer_size, db_options.max_total_wal_size);
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (std::size_t i = 0; i < cf_count; ++i) {
    rocksdb::ColumnFamilyOptions o = cf_options;
    if (i == cf_dedupe) {
      o.memtable_whole_key_filtering = true;
      o.memtable_prefix_bloom_size_ratio = 0.02;
      o.compaction_filter = dedupe_filter.get();
    }
    // A chat's log is appended in seq order and its keys start with the be64 chat id: the
    // memtable remembers, per chat, where it last inserted and starts the next insert there
    // instead of at the skip list's top. The hints live in the memtable's arena.
    // Cursors too: a commit's group cursors are written in key order, chat by chat.
    if (i == cf_messages || i == cf_dedupe || i == cf_cursors)
      o.memtable_insert_with_hint_prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(8));
    descriptors.emplace_back(cf_names[i], o);
  }
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(db_options, options.path.string(), descriptors, &cfs, &raw);
  if (!s.ok())
    throw std::runtime_error("cannot open the store at " + options.path.string() + ": " +
                             s.ToString());
  db.reset(raw);

  auto load = [&](std::string_view key, std::uint64_t fallback) -> std::uint64_t {
    std::string v;
    auto st = get(cf_default, key, &v);
    if (st.IsNotFound()) return fallback;
    if (!st.ok() || v.size() != 8)
      throw std::runtime_error("corrupt store meta key " + std::string(key));
    return read_be64(v);
  };
  heads.max = options.max_cached;
  logins.emplace(options.login_max_moved, db->GetLatestSequenceNumber());
  next_user = load(keys::meta_next_user, 1);
  next_device = load(keys::meta_next_device, 1);
  ids = snowflake(options.node_id);
  ids.advance_past(load(keys::meta_snowflake, 0));
  start_readers();
  accepting_writes();  // health from the start (a restart on a full disk)
  writer = std::thread([this] { run_writer(); });
  name_thread(writer, "store-writer");
}

void rocksdb_store::impl::set_health(bool ok, std::string reason) {
  health.set(ok, std::move(reason));
}

// The reason writes must wait for space, or nullopt if there is enough. One statvfs call;
// the writer makes it at most every 100 ms while space is plentiful and nothing big was
// written, and before every group while space is short.
std::optional<std::string> rocksdb_store::impl::space_shortage() {
  struct statvfs fs {};
  if (::statvfs(options.path.c_str(), &fs) != 0) return std::nullopt;  // cannot tell: go on
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  if (free_bytes >= options.reserve_bytes) return std::nullopt;
  return "disk full: " + std::to_string(free_bytes >> 20) + " MiB free on " +
         options.path.string() + ", " + std::to_string(options.reserve_bytes >> 20) +
         " MiB kept in reserve";
}

// Writer thread: whether the next group may be written. After a failed write it retries
// DB::Resume() every resume_interval; it refuses while free space is below the reserve.
bool rocksdb_store::impl::accepting_writes() {
  const auto now = std::chrono::steady_clock::now();
  const bool check_due = space_short || write_failed ||
                         now - last_space_check >= std::chrono::milliseconds(100) ||
                         written_since_check >= options.reserve_bytes / 8;
  if (check_due) {
    last_space_check = now;
    written_since_check = 0;
    if (auto shortage = space_shortage()) {
      space_short = true;
      set_health(false, std::move(*shortage));
      return false;
    }
    space_short = false;
  }
  if (write_failed) {
    if (now - last_resume_attempt < options.resume_interval) return false;
    last_resume_attempt = now;
    auto s = db->Resume();
    if (!s.ok()) {
      set_health(false, "write failed, recovery pending: " + s.ToString());
      return false;
    }
    write_failed = false;
  }
  set_health(true, {});
  return true;
}

void rocksdb_store::impl::run_writer() {
  // What a batch may keep of its buffer between commits (group::reset).
  constexpr std::size_t kept_batch_bytes = 4 << 20;
  std::vector<command> work;
  group g;
  for (;;) {
    const auto t = queue.take(work, options.max_group, std::chrono::seconds(1), pending_count);
    if (t == write_queue<command>::taken::done) return;
    if (t == write_queue<command>::taken::idle) {
      // Idle, the writer still checks the store's health every second, so that /healthz
      // tells the truth when nobody writes (a restart on a full disk, space that returned).
      accepting_writes();
      continue;
    }
    if (!accepting_writes()) {
      for (auto& c : work) c(nullptr, errc::unavailable);
      work.clear();
      continue;
    }
    g.reset(kept_batch_bytes);
    for (auto& c : work) c(&g, errc{});
    for (const auto& [key, seq] : g.group_cursors) {
      const auto& [chat, user, device] = key;
      put(g, cf_cursors, keys::cursor(chat, user, device), keys::be64(seq));
    }
    if (g.ids_issued) put(g, cf_default, keys::meta_snowflake, keys::be64(last_id));

    const auto start = std::chrono::steady_clock::now();
    rocksdb::Status s;
    if (g.batch.Count() > 0) {
      rocksdb::WriteOptions write_options;
      write_options.sync = options.sync;
      s = db->Write(write_options, &g.batch);
    }
    if (options.on_commit) options.on_commit(std::chrono::steady_clock::now() - start, work.size());
    error_code ec;
    if (!s.ok()) {
      // RocksDB has recorded the error and refuses writes until DB::Resume() succeeds; no
      // write is attempted until then (writing on after a failed log write aborts Debian's
      // build of RocksDB, whose assertions are on).
      log_error() << "store: group commit failed, writes refused until it recovers: "
                  << s.ToString();
      ec = errc::unavailable;
      write_failed = true;
      last_resume_attempt = std::chrono::steady_clock::now();
      set_health(false, "write failed: " + s.ToString());
      clear_caches();  // they may hold what was just lost
    } else {
      written_since_check += g.batch.GetDataSize();
      for (std::uint64_t chat : g.appended) {
        if (auto it = chats.find(chat); it != chats.end()) heads.raise(chat, it->second.head);
      }
      // Like the heads: before any completion runs, so before any push of what was committed
      // (a login that misses a change in the index gets it as a live push instead).
      const std::uint64_t last = db->GetLatestSequenceNumber();
      group_base = last + 1 - g.batch.Count();
      logins->apply(g.logins, group_base, last);
    }
    trim_caches();
    for (auto& f : g.on_durable) f(ec);
    g.on_durable.clear();  // what the completions hold (results, callbacks) goes now
    work.clear();
  }
}

rocksdb_store::rocksdb_store(rocksdb_options options)
    : impl_(std::make_unique<impl>(std::move(options))) {
  impl_->open();
}

rocksdb_store::~rocksdb_store() {
  stop();
  for (auto* h : impl_->cfs) impl_->db->DestroyColumnFamilyHandle(h);
  impl_->cfs.clear();
  impl_->db.reset();
}

void rocksdb_store::stop() {
  if (!impl_->queue.stop()) return;
  if (impl_->writer.joinable()) impl_->writer.join();
  impl_->stopped = true;
  impl_->stop_readers();
}

void rocksdb_store::shared_chats(user_id requester, std::vector<std::string> usernames,
                                 completion<std::vector<bool>> done) {
  impl_->read<std::vector<bool>>(
      std::move(done),
      [this, requester, usernames = std::move(usernames)]() -> result<std::vector<bool>> {
        auto& d = *impl_;
        std::vector<bool> out;
        out.reserve(usernames.size());
        std::string v;
        for (const auto& name : usernames) {
          auto peer = d.user_of(name);
          if (!peer) {
            if (peer.error() != errc::unknown_user) return peer.error();
            out.push_back(false);
            continue;
          }
          // A 1:1 chat is created with its first message.
          auto s = d.get(cf_direct_chats, keys::direct_chat(requester, *peer).view(), &v);
          if (!s.ok() && !s.IsNotFound()) return errc::io_error;
          out.push_back(s.ok() && *peer != requester);
        }
        return out;
      });
}

void rocksdb_store::set_privacy(user_id user, bool hide_last_seen, completion<void> done) {
  impl_->write<void>(std::move(done), [this, user, hide_last_seen](group& g) -> result<void> {
    auto& d = *impl_;
    std::string v;
    // Only the writer changes user records, and a user exists before it can ask: the stored
    // record is the current one (users skip the group's overlay).
    auto s = d.get(cf_users, keys::be64(user).view(), &v);
    if (s.IsNotFound()) return errc::unknown_user;
    if (!s.ok()) return errc::io_error;
    pb::UserRecord record;
    if (!parse(record, v)) return errc::corrupt;
    record.set_hide_last_seen(hide_last_seen);
    d.put(g, cf_users, keys::be64(user).view(), record.SerializeAsString());
    return {};
  });
}

namespace {

media_record to_media_record(std::string media, const pb::MediaRecord& r) {
  return media_record{std::move(media), r.owner(),      r.size(),
                      r.created_ms(),   r.references(), r.upload_id()};
}

}  // namespace

void rocksdb_store::create_media(media_request request, completion<std::uint64_t> done) {
  impl_->write<std::uint64_t>(
      std::move(done), [this, request = std::move(request)](group& g) -> result<std::uint64_t> {
        auto& d = *impl_;
        auto used = d.media_usage(g, request.owner);
        if (!used) return used.error();
        if (request.quota != 0 &&
            (request.size > request.quota || *used > request.quota - request.size)) {
          return errc::quota_exceeded;
        }
        std::string v;
        const auto key = keys::media_record(request.media);
        auto s = d.get(g, cf_media, key, &v);
        if (s.ok()) return errc::invalid_argument;  // 128 random bits: never, but never twice
        if (!s.IsNotFound()) return errc::io_error;
        const std::uint64_t now = now_ms();
        pb::MediaRecord record;
        record.set_owner(request.owner);
        record.set_size(request.size);
        record.set_created_ms(now);
        d.put(g, cf_media, key, record.SerializeAsString());
        d.put(g, cf_media, keys::media_unreferenced(now, request.media), {});
        d.set_media_usage(g, request.owner, *used + request.size);
        return *used + request.size;
      });
}

void rocksdb_store::media_of(user_id requester, chat_id chat, std::uint64_t seq,
                             completion<media_record> done) {
  impl_->read<media_record>(
      std::move(done), [this, requester, chat, seq]() -> result<media_record> {
        auto& d = *impl_;
        std::uint64_t first = 1;
        auto id = d.resolve_for_read(requester, chat_ref{chat, {}}, &first);
        if (!id) return id.error();
        if (seq < first || seq == 0) return errc::not_found;
        std::string v;
        auto s = d.get(cf_messages, keys::message(chat, seq), &v);
        if (s.IsNotFound()) return errc::not_found;
        if (!s.ok()) return errc::io_error;
        pb::StoredMessage m;
        if (!parse(m, v)) return errc::corrupt;
        if (m.media_id().empty()) return errc::not_found;
        s = d.get(cf_media, keys::media_record(m.media_id()), &v);
        if (s.IsNotFound()) return errc::not_found;
        if (!s.ok()) return errc::io_error;
        pb::MediaRecord record;
        if (!parse(record, v)) return errc::corrupt;
        return to_media_record(std::move(*m.mutable_media_id()), record);
      });
}

void rocksdb_store::own_media(user_id owner, std::string media, completion<media_record> done) {
  impl_->read<media_record>(
      std::move(done), [this, owner, media = std::move(media)]() -> result<media_record> {
        std::string v;
        auto s = impl_->get(cf_media, keys::media_record(media), &v);
        if (s.IsNotFound()) return errc::media_not_found;
        if (!s.ok()) return errc::io_error;
        pb::MediaRecord record;
        if (!parse(record, v)) return errc::corrupt;
        if (record.owner() != owner) return errc::media_not_found;
        return to_media_record(media, record);
      });
}

void rocksdb_store::bind_upload(user_id owner, std::string media, std::string upload_id,
                                completion<std::string> done) {
  auto apply = [this, owner, media = std::move(media),
                upload = std::move(upload_id)](group& g) -> result<std::string> {
    auto& d = *impl_;
    if (upload.empty()) return errc::invalid_argument;
    std::string v;
    const auto key = keys::media_record(media);
    auto s = d.get(g, cf_media, key, &v);
    if (s.IsNotFound()) return errc::media_not_found;
    if (!s.ok()) return errc::io_error;
    pb::MediaRecord record;
    if (!parse(record, v)) return errc::corrupt;
    if (record.owner() != owner) return errc::media_not_found;
    if (!record.upload_id().empty()) return record.upload_id();  // the first one stays
    record.set_upload_id(upload);
    d.put(g, cf_media, key, record.SerializeAsString());
    return upload;
  };
  impl_->write<std::string>(std::move(done), std::move(apply));
}

void rocksdb_store::unreferenced_media(std::uint64_t created_before_ms, std::size_t limit,
                                       completion<std::vector<media_record>> done) {
  impl_->read<std::vector<media_record>>(
      std::move(done),
      [this, created_before_ms, limit]() -> result<std::vector<media_record>> {
        auto& d = *impl_;
        std::vector<media_record> out;
        const auto lower = keys::media_unreferenced(0, {});
        const auto upper = keys::media_unreferenced(created_before_ms, {});
        bounded_read r(lower.view(), std::string(upper.view()));
        std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(r.options, d.cfs[cf_media]));
        std::string v;
        for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
          if (it->key().size() != 1 + 8 + 32) return errc::corrupt;
          std::string media(it->key().data() + 9, 32);
          auto s = d.get(cf_media, keys::media_record(media), &v);
          if (s.IsNotFound()) continue;  // deleted since the iterator's snapshot
          if (!s.ok()) return errc::io_error;
          pb::MediaRecord record;
          if (!parse(record, v)) return errc::corrupt;
          out.push_back(to_media_record(std::move(media), record));
        }
        if (!it->status().ok()) return errc::io_error;
        return out;
      });
}

void rocksdb_store::delete_media(std::vector<std::string> media, std::uint64_t created_before_ms,
                                 completion<std::vector<std::string>> done) {
  impl_->write<std::vector<std::string>>(
      std::move(done), [this, media = std::move(media),
                        created_before_ms](group& g) -> result<std::vector<std::string>> {
        auto& d = *impl_;
        std::vector<std::string> deleted;
        std::string v;
        for (const auto& id : media) {
          const auto key = keys::media_record(id);
          auto s = d.get(g, cf_media, key, &v);
          if (s.IsNotFound()) continue;
          if (!s.ok()) return errc::io_error;
          pb::MediaRecord record;
          if (!parse(record, v)) return errc::corrupt;
          if (record.references() != 0 || record.created_ms() >= created_before_ms) continue;
          auto used = d.media_usage(g, record.owner());
          if (!used) return used.error();
          d.del(g, cf_media, key);
          d.del(g, cf_media, keys::media_unreferenced(record.created_ms(), id));
          d.set_media_usage(g, record.owner(), *used - std::min(*used, record.size()));
          deleted.push_back(id);
        }
        return deleted;
      });
}

void rocksdb_store::media_exists(std::vector<std::string> media,
                                 completion<std::vector<bool>> done) {
  impl_->read<std::vector<bool>>(
      std::move(done), [this, media = std::move(media)]() -> result<std::vector<bool>> {
        auto& d = *impl_;
        std::vector<bool> out;
        out.reserve(media.size());
        std::string v;
        for (const auto& id : media) {
          auto s = d.get(cf_media, keys::media_record(id), &v);
          if (!s.ok() && !s.IsNotFound()) return errc::io_error;
          out.push_back(s.ok());
        }
        return out;
      });
}

store_health rocksdb_store::health() { return impl_->health.get(); }

std::uint64_t rocksdb_store::pending_writes() {
  return impl_->pending_count.load(std::memory_order_relaxed);
}

void rocksdb_store::register_account(registration_request request, completion<registration> done) {
  impl_->write<registration>(
      std::move(done), [this, request = std::move(request)](group& g) -> result<registration> {
        auto& d = *impl_;
        auto existing = d.user_of(g, request.username);
        if (existing) return errc::username_taken;
        if (existing.error() != errc::unknown_user) return existing.error();

        const std::uint64_t now = now_ms();
        registration r{d.next_user++, d.next_device++};
        pb::UserRecord user;
        user.set_user_id(r.user);
        user.set_username(request.username);
        user.add_devices(r.device);
        user.set_created_ms(now);
        pb::DeviceRecord device;
        device.set_device_id(r.device);
        device.set_user_id(r.user);
        device.set_token_sha256(request.token_hash.data(), request.token_hash.size());
        device.set_created_ms(now);

        d.put(g, cf_accounts, request.username, keys::be64(r.user));
        d.put(g, cf_users, keys::be64(r.user), user.SerializeAsString());
        d.put(g, cf_devices, keys::be64(r.device), device.SerializeAsString());
        d.put(g, cf_default, keys::meta_next_user, keys::be64(d.next_user));
        d.put(g, cf_default, keys::meta_next_device, keys::be64(d.next_device));
        d.user_ids[request.username] = r.user;
        d.users[r.user] = cached_user{request.username, {r.device}};
        return r;
      });
}

void rocksdb_store::find_device(device_id id, completion<device> done) {
  impl_->read<device>(std::move(done), [this, id]() -> result<device> {
    std::string v;
    auto s = impl_->get(cf_devices, keys::be64(id), &v);
    if (s.IsNotFound()) return errc::not_found;
    if (!s.ok()) return errc::io_error;
    pb::DeviceRecord record;
    if (!parse(record, v) || record.token_sha256().size() != 32) return errc::corrupt;
    s = impl_->get(cf_users, keys::be64(record.user_id()), &v);
    if (!s.ok()) return s.IsNotFound() ? errc::corrupt : errc::io_error;
    pb::UserRecord user;
    if (!parse(user, v)) return errc::corrupt;
    device d{record.device_id(), record.user_id(), user.username(), {}, {}, user.hide_last_seen()};
    std::copy(record.token_sha256().begin(), record.token_sha256().end(), d.token_hash.begin());
    s = impl_->get(cf_device_keys, keys::be64(id), &v);
    auto k = impl::device_keys_of(s, v);
    if (!k) return k.error();
    if (*k) {
      d.keys = {true, static_cast<std::uint32_t>((*k)->one_time_prekeys_size()),
                (*k)->registration_id()};
    }
    return d;
  });
}

void rocksdb_store::find_account(std::string username, completion<account> done) {
  impl_->read<account>(
      std::move(done), [this, username = std::move(username)]() -> result<account> {
        auto user = impl_->user_of(username);
        if (!user) return user.error() == errc::unknown_user ? errc::not_found : user.error();
        std::string v;
        auto s = impl_->get(cf_users, keys::be64(*user), &v);
        if (!s.ok()) return errc::io_error;
        pb::UserRecord record;
        if (!parse(record, v)) return errc::corrupt;
        return account{record.user_id(),
                       record.username(),
                       {record.devices().begin(), record.devices().end()}};
      });
}

void rocksdb_store::first_unknown_user(std::vector<std::string> usernames,
                                       completion<std::string> done) {
  impl_->read<std::string>(std::move(done),
                           [this, usernames = std::move(usernames)]() -> result<std::string> {
                             for (const auto& name : usernames) {
                               auto user = impl_->user_of(name);
                               if (user) continue;
                               if (user.error() == errc::unknown_user) return name;
                               return user.error();
                             }
                             return std::string();
                           });
}

void rocksdb_store::upload_keys(key_upload upload, std::size_t max_held,
                                completion<key_stock> done) {
  impl_->write<key_stock>(
      std::move(done), [this, upload = std::move(upload), max_held](group& g) -> result<key_stock> {
        auto& d = *impl_;
        auto existing = d.device_keys(g, upload.device);
        if (!existing) return existing.error();
        const bool replaced = *existing && (*existing)->identity_key() != upload.identity_key;
        if ((!*existing || replaced) && !upload.signed_prekey) return errc::missing_signed_prekey;

        const std::uint64_t now = now_ms();
        pb::DeviceKeys record;
        if (*existing && !replaced) {
          record = std::move(**existing);
        } else {
          record.set_identity_key(upload.identity_key);  // a new identity drops every old key
          record.set_identity_since_ms(now);
        }
        record.set_registration_id(upload.registration_id);
        record.set_updated_ms(now);
        if (upload.signed_prekey) {
          auto* spk = record.mutable_signed_prekey();
          spk->set_id(upload.signed_prekey->id);
          spk->set_public_key(upload.signed_prekey->public_key);
          spk->set_signature(upload.signed_prekey->signature);
        }
        for (const auto& k : upload.one_time_prekeys) {
          pb::DeviceKeys::PreKey* slot = nullptr;
          for (auto& held : *record.mutable_one_time_prekeys()) {
            if (held.id() == k.id) slot = &held;
          }
          if (slot == nullptr) slot = record.add_one_time_prekeys();
          slot->set_id(k.id);
          slot->set_public_key(k.public_key);
        }
        if (static_cast<std::size_t>(record.one_time_prekeys_size()) > max_held) {
          return errc::too_many_prekeys;
        }
        d.put(g, cf_device_keys, keys::be64(upload.device), record.SerializeAsString());
        d.registration_ids[upload.device] = upload.registration_id;
        return key_stock{static_cast<std::uint32_t>(record.one_time_prekeys_size()), replaced};
      });
}

void rocksdb_store::take_key_bundles(std::string username, bool take_one_time,
                                     completion<std::vector<key_bundle>> done) {
  impl_->write<std::vector<key_bundle>>(
      std::move(done), [this, username = std::move(username),
                        take_one_time](group& g) -> result<std::vector<key_bundle>> {
        auto& d = *impl_;
        auto user = d.user_of(g, username);
        if (!user) return user.error();
        auto owner = d.user_record(*user);
        if (!owner) return owner.error();
        // Every record is read before anything is written: an error leaves no writes.
        std::vector<std::pair<std::uint64_t, pb::DeviceKeys>> records;
        for (std::uint64_t device : (*owner)->devices) {
          auto record = d.device_keys(g, device);
          if (!record) return record.error();
          if (*record) records.emplace_back(device, std::move(**record));
        }
        std::vector<key_bundle> out;
        for (auto& [device, k] : records) {
          key_bundle b;
          b.device = device;
          b.registration_id = k.registration_id();
          b.identity_key = k.identity_key();
          b.signed_prekey = {k.signed_prekey().id(), k.signed_prekey().public_key(),
                             k.signed_prekey().signature()};
          if (take_one_time && k.one_time_prekeys_size() > 0) {
            const auto& first = k.one_time_prekeys(0);
            b.one_time_prekey = prekey{first.id(), first.public_key(), {}};
            k.mutable_one_time_prekeys()->DeleteSubrange(0, 1);
            d.put(g, cf_device_keys, keys::be64(device), k.SerializeAsString());
          }
          b.remaining = static_cast<std::uint32_t>(k.one_time_prekeys_size());
          out.push_back(std::move(b));
        }
        if (out.empty()) return errc::no_keys;
        return out;
      });
}

void rocksdb_store::send(send_request request, completion<send_outcome> done) {
  impl_->write<send_outcome>(
      std::move(done),
      [this, request = std::move(request)](group& g) mutable -> result<send_outcome> {
        auto& d = *impl_;
        const auto dedupe_key = keys::dedupe(request.sender_device, request.client_msg_id);
        auto first = d.live_dedupe(g, dedupe_key);
        if (!first) return first.error();
        if (*first) {
          // A group creation's record (seq 1 of a group is its CREATE): the id was used for
          // another request (the client's mistake), and there is no message to answer with.
          if ((*first)->seq() == 1) {
            auto c = d.chat_of((*first)->chat_id());
            if (!c) return c.error();
            if (*c != nullptr && (*c)->group) return errc::invalid_argument;
          }
          send_outcome out;
          out.chat = (*first)->chat_id();
          out.seq = (*first)->seq();
          out.id = (*first)->message_id();
          out.sent_at_ms = (*first)->sent_at_ms();
          out.duplicate = true;
          return out;
        }

        // The chat and the other member.
        std::uint64_t chat = request.to.chat;
        std::uint64_t peer = 0;
        cached_chat* known = nullptr;
        if (chat == 0) {
          auto peer_id = d.user_of(g, request.to.peer);
          if (!peer_id) return peer_id.error();
          if (*peer_id == request.sender) return errc::self_message;
          peer = *peer_id;
          auto existing = d.direct_chat_of(request.sender, peer);
          if (!existing) return existing.error();
          chat = *existing;
        }
        if (chat != 0) {
          auto c = d.chat_of(chat);
          if (!c) return c.error();
          known = *c;
          if (known == nullptr || !known->is_member(request.sender)) return errc::not_found;
          for (std::uint64_t member : known->members) {
            if (member != request.sender) peer = member;
          }
        }
        // A group takes sender-key messages only, a 1:1 chat only pairwise ones.
        const bool group_chat = known != nullptr && known->group;
        if (group_chat != (request.cipher_type == sender_key_cipher_type)) {
          return errc::invalid_argument;
        }
        const cached_user* recipient = nullptr;
        if (!group_chat) {
          auto r = d.user_record(peer);
          if (!r) return r.error();
          recipient = *r;
          for (std::uint64_t device : recipient->devices) {
            auto registration = d.registration_of(g, device);
            if (!registration) return registration.error();
            if (*registration != 0 && *registration != request.recipient_registration_id) {
              return errc::stale_keys;
            }
          }
        }
        auto sender = d.user_record(request.sender);
        if (!sender) return sender.error();

        // A file: the sender's own blob, one more reference to it (the sweep keeps it now).
        if (!request.media.empty()) {
          const auto key = keys::media_record(request.media);
          std::string v;
          auto s = d.get(g, cf_media, key, &v);
          if (s.IsNotFound()) return errc::media_not_found;
          if (!s.ok()) return errc::io_error;
          pb::MediaRecord record;
          if (!parse(record, v)) return errc::corrupt;
          if (record.owner() != request.sender) return errc::media_not_found;
          if (record.references() == 0)
            d.del(g, cf_media, keys::media_unreferenced(record.created_ms(), request.media));
          record.set_references(record.references() + 1);
          d.put(g, cf_media, key, record.SerializeAsString());
        }

        const std::uint64_t now = now_ms();
        send_outcome out;
        if (known == nullptr) {
          // The pair's first message creates their chat: its record, the pair's index entry,
          // and an entry in each member's list of chats.
          chat = d.next_id(g, now);
          pb::ChatRecord record;
          record.set_kind(pb::ChatRecord::KIND_DIRECT);
          record.add_members(std::min(request.sender, peer));
          record.add_members(std::max(request.sender, peer));
          record.set_created_ms(now);
          d.put(g, cf_chats, keys::be64(chat), record.SerializeAsString());
          d.put(g, cf_direct_chats, keys::direct_chat(request.sender, peer), keys::be64(chat));
          d.put(g, cf_user_chats, keys::user_chat(request.sender, chat), {});
          d.put(g, cf_user_chats, keys::user_chat(peer, chat), {});
          const auto pair = std::minmax(request.sender, peer);
          d.set_cached(g, d.direct_chats, std::make_pair(pair.first, pair.second), chat);
          cached_chat direct;
          direct.members = {pair.first, pair.second};
          direct.created_ms = now;
          d.chats[chat] = std::move(direct);
          g.undo.push_back([&d, chat] { d.chats.erase(chat); });
          known = &d.chats[chat];
        }
        out.chat = chat;
        out.seq = known->head + 1;
        out.id = d.next_id(g, now);
        out.sent_at_ms = now;

        auto& stored = d.record;
        stored.Clear();
        stored.set_message_id(out.id);
        stored.set_sender_user(request.sender);
        stored.set_sender_device(request.sender_device);
        // The name and the payload move into the record and, once it is encoded, on into
        // the pushed message: no copy of a payload of up to 64 KiB on the writer.
        stored.set_sender_name(std::move(request.sender_name));
        stored.set_sent_at_ms(now);
        stored.set_payload(std::move(request.payload));
        stored.set_cipher_type(request.cipher_type);
        if (!request.media.empty()) stored.set_media_id(request.media);
        stored.SerializeToString(&d.encoded);
        d.put(g, cf_messages, keys::message(chat, out.seq), d.encoded);
        d.put_dedupe(g, dedupe_key, chat, out.seq, out.id, now);
        const std::uint64_t before = known->head;
        known->head = out.seq;
        g.appended.push_back(chat);
        g.undo.push_back([&d, &g, chat, before] {
          if (auto it = d.chats.find(chat); it != d.chats.end()) it->second.head = before;
          g.appended.pop_back();
        });

        out.message = std::make_shared<const chat_message>(
            chat_message{chat, out.seq, out.id, request.sender, request.sender_device,
                         std::move(*stored.mutable_sender_name()), now,
                         std::move(*stored.mutable_payload()),
                         request.cipher_type, nullptr, std::move(request.media)});
        if (group_chat) {
          // Every member's devices (the sender's other ones too): one log entry, one list.
          auto devices = d.member_devices(g, *known, chat, out.seq, request.sender_device);
          if (!devices) return devices.error();
          out.recipients = std::move(*devices);
          return out;
        }
        out.recipients = recipient->devices;
        for (std::uint64_t device : (*sender)->devices) {
          if (device != request.sender_device) out.recipients.push_back(device);
        }
        for (std::uint64_t device : out.recipients)
          g.logins.push_back({login_index::change::kind::message, device, chat, out.seq});
        return out;
      });
}

// The writer is in-process: ack()'s checks and writes, its receipts dropped.
void rocksdb_store::pass_own_entries(device_id device, user_id user,
                                     std::vector<cursor_update> cursors, completion<void> done) {
  ack(device, user, std::move(cursors),
      [done = std::move(done)](result<watermark_moves> r) mutable {
        if (!r) {
          done(r.error());
        } else {
          done({});
        }
      });
}

void rocksdb_store::ack(device_id device, user_id user, std::vector<cursor_update> cursors,
                        completion<watermark_moves> done) {
  impl_->write<watermark_moves>(
      std::move(done),
      [this, device, user,
       cursors = std::move(cursors)](group& g) mutable -> result<watermark_moves> {
        auto& d = *impl_;
        one_cursor_per_chat(cursors);
        auto me = d.user_record(user);
        if (!me) return me.error();
        const std::string my_name = (*me)->username;
        const std::uint64_t now = now_ms();
        watermark_moves out;
        for (const auto& c : cursors) {
          auto chat = d.chat_of(c.chat);
          if (!chat) return chat.error();
          if (*chat == nullptr) return errc::not_found;
          bool member = (*chat)->is_member(user);
          if (!member && (*chat)->group) {
            // A former member acks up to the event that removed it (which it was sent).
            auto was = d.membership_in(g, user, c.chat);
            if (!was) return was.error();
            if (!*was || (*was)->until == 0 || c.seq > (*was)->until) return errc::not_found;
          } else if (!member) {
            return errc::not_found;
          }
          if (c.seq > (*chat)->head) return errc::invalid_argument;
          auto current = d.cursor_of(c.chat, user, device);
          if (!current) return current.error();
          if (c.seq <= *current) continue;  // cursors never move back
          auto delivered = d.delivered_of(c.chat, user);
          if (!delivered) return delivered.error();
          if ((*chat)->group) {
            d.defer_group_cursor(g, c.chat, user, device, c.seq);
          } else {
            d.put(g, cf_cursors, keys::cursor(c.chat, user, device), keys::be64(c.seq));
          }
          d.set_cached(g, d.cursors, std::make_pair(c.chat, device), c.seq);
          g.logins.push_back({login_index::change::kind::cursor, device, c.chat, c.seq});
          if (c.seq <= *delivered || !member) continue;  // another device of the user had it
          if ((*chat)->group) {
            out.groups.push_back(c.chat);  // merged: group_receipts
            continue;
          }
          auto r = d.receipts_to_others(
              g, **chat, user, watermark{c.chat, my_name, message_status::delivered, c.seq, now},
              out.receipts);
          if (!r) return r.error();
        }
        return out;
      });
}

void rocksdb_store::mark_read(user_id reader, chat_id chat, std::uint64_t up_to,
                              completion<watermark_moves> done) {
  impl_->write<watermark_moves>(
      std::move(done), [this, reader, chat, up_to](group& g) -> result<watermark_moves> {
        auto& d = *impl_;
        auto c = d.chat_of(chat);
        if (!c) return c.error();
        if (*c == nullptr ||
            std::find((*c)->members.begin(), (*c)->members.end(), reader) == (*c)->members.end()) {
          return errc::not_found;
        }
        if (up_to > (*c)->head) return errc::invalid_argument;
        auto current = d.read_mark_of(chat, reader);
        if (!current) return current.error();
        watermark_moves out;
        if (up_to <= *current) return out;
        auto me = d.user_record(reader);
        if (!me) return me.error();
        const std::string my_name = (*me)->username;
        d.put(g, cf_read_marks, keys::read_mark(chat, reader), keys::be64(up_to));
        d.set_cached(g, d.read_marks, std::make_pair(chat, reader), up_to);
        if ((*c)->group) {
          out.groups.push_back(chat);  // merged: group_receipts
          return out;
        }
        auto r = d.receipts_to_others(
            g, **c, reader, watermark{chat, my_name, message_status::read, up_to, now_ms()},
            out.receipts);
        if (!r) return r.error();
        return out;
      });
}

void rocksdb_store::group_receipts(chat_id chat, completion<std::vector<receipt_delivery>> done) {
  impl_->write<std::vector<receipt_delivery>>(
      std::move(done), [this, chat](group& g) -> result<std::vector<receipt_delivery>> {
        auto& d = *impl_;
        std::vector<receipt_delivery> out;
        auto c = d.chat_of(chat);
        if (!c) return c.error();
        if (*c == nullptr || !(*c)->group || (*c)->members.size() < 2) return out;
        auto now_marks = d.current_group_marks(chat, **c);
        if (!now_marks) return now_marks.error();
        const auto last = d.pushed_group_marks.find(chat);
        const group_marks before =
            last == d.pushed_group_marks.end() ? group_marks{} : last->second;
        if (last != d.pushed_group_marks.end() && before == *now_marks) return out;
        const std::uint64_t now = now_ms();
        for (std::uint64_t member : (*c)->members) {
          const std::uint64_t delivered = now_marks->delivered_for(member);
          const std::uint64_t read = now_marks->read_for(member);
          const bool delivered_moved = delivered > before.delivered_for(member) && delivered > 0;
          const bool read_moved = read > before.read_for(member) && read > 0;
          if (!delivered_moved && !read_moved) continue;
          auto owner = d.user_record(member);
          if (!owner) return owner.error();
          for (std::uint64_t device : (*owner)->devices) {
            if (delivered_moved)
              out.push_back({device, {chat, {}, message_status::delivered, delivered, now}});
            if (read_moved) out.push_back({device, {chat, {}, message_status::read, read, now}});
            g.logins.push_back({login_index::change::kind::moved, device, chat, 0});
          }
        }
        // One small write, so that the receipts have a stamp of their own (a request that
        // wrote nothing would share the previous write's). The value is not read back: after
        // a restart the first call pushes every member's view again.
        std::string value;
        for (std::uint64_t v : {now_marks->delivered, now_marks->delivered_holder,
                                now_marks->delivered_next, now_marks->read,
                                now_marks->read_holder, now_marks->read_next}) {
          value.append(keys::be64(v).view());
        }
        d.put(g, cf_default, keys::group_marks(chat).view(), value);
        const bool had = last != d.pushed_group_marks.end();
        d.pushed_group_marks[chat] = *now_marks;
        g.undo.push_back([&d, chat, had, before] {
          if (had) {
            d.pushed_group_marks[chat] = before;
          } else {
            d.pushed_group_marks.erase(chat);
          }
        });
        return out;
      });
}

void rocksdb_store::create_group(create_group_request request, completion<group_outcome> done) {
  impl_->write<group_outcome>(
      std::move(done), [this, request = std::move(request)](group& g) -> result<group_outcome> {
        auto& d = *impl_;
        // A retry (the answer was lost): the group the first attempt created, as it is now.
        const auto dedupe_key = keys::dedupe(request.creator_device, request.client_request_id);
        auto first = d.live_dedupe(g, dedupe_key);
        if (!first) return first.error();
        if (*first) {
          auto found = d.chat_of((*first)->chat_id());
          if (!found) return found.error();
          const cached_chat* c = *found;
          // A message's record: the id was used for a send (the client's mistake).
          if (c == nullptr || !c->group || (*first)->seq() != 1) return errc::invalid_argument;
          if (!c->is_member(request.creator)) return errc::not_found;
          group_outcome out;
          auto info = d.info_of((*first)->chat_id(), *c);
          if (!info) return info.error();
          out.info = std::move(*info);
          out.duplicate = true;
          out.created_seq = (*first)->seq();
          return out;
        }
        // The creator first, then the others in the order given, each once.
        std::vector<std::uint64_t> members{request.creator};
        std::vector<std::string> names{request.creator_name};
        for (const auto& name : request.members) {
          auto id = d.user_of(g, name);
          if (!id) return id.error();
          if (std::find(members.begin(), members.end(), *id) != members.end()) continue;
          members.push_back(*id);
          names.push_back(name);
        }
        if (members.size() > request.max_members) return errc::group_full;

        const std::uint64_t now = now_ms();
        const std::uint64_t chat = d.next_id(g, now);
        cached_chat c;
        c.group = true;
        c.members = members;
        c.admins = {request.creator};
        c.joined.assign(members.size(), 1);  // the creation event
        c.name = request.name;
        c.created_ms = now;
        d.put_group_record(g, chat, c);
        for (std::uint64_t m : members) {
          d.put(g, cf_user_chats, keys::user_chat(m, chat), membership_value({true, 0}));
        }
        d.chats[chat] = std::move(c);
        g.undo.push_back([&d, chat] { d.chats.erase(chat); });
        auto& cached = d.chats[chat];
        group_event event{group_change::create, {}, request.name, std::move(names)};
        group_outcome out;
        auto message = d.append_event(g, chat, cached, request.creator, request.creator_device,
                                      request.creator_name, std::move(event), now);
        d.put_dedupe(g, dedupe_key, chat, message->seq, message->id, now);
        auto devices = d.member_devices(g, cached, chat, message->seq, request.creator_device);
        if (!devices) return devices.error();
        out.pushes.push_back({std::move(message), std::move(*devices)});
        auto info = d.info_of(chat, cached);
        if (!info) return info.error();
        out.info = std::move(*info);
        return out;
      });
}

void rocksdb_store::change_group(group_change_request request, completion<group_outcome> done) {
  impl_->write<group_outcome>(
      std::move(done), [this, request = std::move(request)](group& g) -> result<group_outcome> {
        auto& d = *impl_;
        auto found = d.chat_of(request.chat);
        if (!found) return found.error();
        cached_chat* c = *found;
        if (c == nullptr || !c->group || !c->is_member(request.actor)) return errc::not_found;
        const bool needs_admin = request.change != group_change::leave;
        if (needs_admin && !c->is_admin(request.actor)) return errc::not_admin;
        std::uint64_t target = 0;
        const bool about_user = request.change == group_change::add ||
                                request.change == group_change::remove ||
                                request.change == group_change::promote ||
                                request.change == group_change::demote;
        if (about_user) {
          auto id = d.user_of(g, request.user);
          if (!id) return id.error();
          target = *id;
          if (request.change == group_change::add) {
            if (c->is_member(target)) return errc::already_member;
            if (c->members.size() + 1 > request.max_members) return errc::group_full;
          } else if (!c->is_member(target)) {
            return errc::not_member;
          }
        }
        if (request.change == group_change::remove && target == request.actor) {
          return errc::invalid_argument;  // leave instead
        }
        if (request.change == group_change::demote && c->is_admin(target) &&
            c->admins.size() == 1) {
          return errc::invalid_argument;  // a group never lacks an admin
        }

        // Everything is checked: from here on, only writes. The cached group is restored as a
        // whole if a later step fails.
        g.undo.push_back([&d, chat = request.chat, before = *c] {
          auto head = d.chats[chat].head;  // the appends undo their own head moves
          d.chats[chat] = before;
          d.chats[chat].head = head;
        });
        const std::uint64_t now = now_ms();
        group_outcome out;
        auto append = [&](std::uint64_t sender, std::uint64_t sender_device,
                          const std::string& sender_name, group_event event,
                          std::uint64_t except) -> result<std::uint64_t> {
          auto message =
              d.append_event(g, request.chat, *c, sender, sender_device, sender_name,
                             std::move(event), now);
          auto devices = d.member_devices(g, *c, request.chat, message->seq, except);
          if (!devices) return devices.error();
          const std::uint64_t seq = message->seq;
          out.pushes.push_back({std::move(message), std::move(*devices)});
          return seq;
        };
        auto drop_member = [&](std::uint64_t user, std::uint64_t until) {
          const auto at = std::find(c->members.begin(), c->members.end(), user) - c->members.begin();
          c->members.erase(c->members.begin() + at);
          c->joined.erase(c->joined.begin() + at);
          c->admins.erase(std::remove(c->admins.begin(), c->admins.end(), user), c->admins.end());
          d.put(g, cf_user_chats, keys::user_chat(user, request.chat),
                membership_value({true, until}));
        };
        const std::string& actor = request.actor_name;
        switch (request.change) {
          case group_change::add: {
            // The new member is in the list before the event is appended: it gets the event,
            // and its cursors start just before it (nothing older is sent to it).
            c->members.push_back(target);
            c->joined.push_back(c->head + 1);
            auto seq = append(request.actor, request.actor_device, actor,
                              {group_change::add, request.user, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            d.put(g, cf_user_chats, keys::user_chat(target, request.chat),
                  membership_value({true, 0}));
            auto owner = d.user_record(target);
            if (!owner) return owner.error();
            for (std::uint64_t device : (*owner)->devices) {
              auto cursor = d.cursor_of(request.chat, target, device);
              if (!cursor) return cursor.error();
              if (*cursor >= *seq - 1) continue;
              // Deferred like an ack's: a group cursor is written only at commit time, so
              // that a former member's ack of its removal earlier in this commit (deferred
              // too) cannot land after this and take the cursor back.
              d.defer_group_cursor(g, request.chat, target, device, *seq - 1);
              d.set_cached(g, d.cursors, std::make_pair(request.chat, device), *seq - 1);
            }
            // The read mark is not raised: the merged "read by all" must not claim a message
            // nobody read (a joiner's raised mark would count for what it never saw).
            break;
          }
          case group_change::remove:
          case group_change::leave: {
            // The member gets the event about itself, and nothing after it.
            const std::uint64_t who =
                request.change == group_change::leave ? request.actor : target;
            const std::string& who_name =
                request.change == group_change::leave ? request.actor_name : request.user;
            auto seq = append(request.actor, request.actor_device, actor,
                              {request.change, who_name, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            drop_member(who, *seq);
            if (c->admins.empty() && !c->members.empty()) {
              // The last admin left: the oldest member becomes one, by the server.
              const std::uint64_t oldest = c->members.front();
              c->admins.push_back(oldest);
              auto owner = d.user_record(oldest);
              if (!owner) return owner.error();
              auto promoted = append(0, 0, {}, {group_change::promote, (*owner)->username, {}, {}}, 0);
              if (!promoted) return promoted.error();
            }
            break;
          }
          case group_change::promote: {
            if (c->is_admin(target)) break;  // nothing to change
            c->admins.push_back(target);
            auto seq = append(request.actor, request.actor_device, actor,
                              {group_change::promote, request.user, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            break;
          }
          case group_change::demote: {
            if (!c->is_admin(target)) break;  // nothing to change
            c->admins.erase(std::remove(c->admins.begin(), c->admins.end(), target),
                            c->admins.end());
            auto seq = append(request.actor, request.actor_device, actor,
                              {group_change::demote, request.user, {}, {}}, request.actor_device);
            if (!seq) return seq.error();
            break;
          }
          case group_change::rename: {
            if (c->name == request.name) break;  // nothing to change
            c->name = request.name;
            auto seq = append(request.actor, request.actor_device, actor,
                              {group_change::rename, {}, request.name, {}}, request.actor_device);
            if (!seq) return seq.error();
            break;
          }
          case group_change::create:
            return errc::invalid_argument;
        }
        if (!out.pushes.empty()) d.put_group_record(g, request.chat, *c);
        auto info = d.info_of(request.chat, *c);
        if (!info) return info.error();
        out.info = std::move(*info);
        return out;
      });
}

void rocksdb_store::get_group(user_id requester, chat_id chat, completion<group_info> done) {
  impl_->read<group_info>(std::move(done), [this, requester, chat]() -> result<group_info> {
    auto& d = *impl_;
    auto record = d.chat_record(chat);
    if (!record) return record.error();
    if (!*record || (*record)->kind() != pb::ChatRecord::KIND_GROUP) return errc::not_found;
    const cached_chat c = impl::cached_chat_of(**record);
    if (!c.is_member(requester)) return errc::not_found;
    return impl::info_of(chat, c, [&d](std::uint64_t user) { return d.username_of(user); });
  });
}

// A login: from the login index where it can answer (what changed since the device's last
// session), else by reading every chat of the account (the first login after a start, or a
// client without a usable receipts stamp).
result<device_backlog> rocksdb_store::impl::compute_backlog(std::uint64_t device,
                                                            std::uint64_t user,
                                                            std::uint64_t since) {
  device_backlog out;
  // The stamp is the index's: every change up to it is in the index (or was pushed to the
  // caller, attached to the bus before it asks), and what this reads is at least as new.
  auto known = logins->lookup(device, since);
  out.stamp = known.stamp;
  if (!known.behind_known) {
    auto chats = chats_of(user);
    const result<void> r =
        chats ? read_chats(*chats, device, user, true, out) : result<void>(chats.error());
    if (!r) {
      logins->fill_failed(device, known.entry);
      return r.error();
    }
    std::vector<std::pair<std::uint64_t, std::uint64_t>> found;
    found.reserve(out.behind.size());
    for (const auto& p : out.behind) found.emplace_back(p.chat, p.head);
    logins->filled(device, known.entry, found);
    return out;
  }
  for (const auto& [chat, highest] : known.behind) {
    auto cursor = stored_cursor(chat, user, device);
    if (!cursor) return cursor.error();
    if (highest <= *cursor) {
      logins->settle(device, chat, *cursor);
      continue;
    }
    auto head = head_of(chat);
    if (!head) return head.error();
    std::uint64_t last = std::max(*head, highest);
    auto m = stored_membership(user, chat);
    if (!m) return m.error();
    if (*m && (*m)->until != 0) last = std::min(last, (*m)->until);  // nothing after removal
    if (last > *cursor) out.behind.push_back({chat, *cursor, last});
  }
  // The watermarks: of the chats that moved after the client's stamp, or of every chat.
  auto chats = known.moved_known ? memberships(user, known.moved) : chats_of(user);
  if (!chats) return chats.error();
  auto r = read_chats(*chats, device, user, false, out);
  if (!r) return r.error();
  return out;
}

result<std::uint64_t> rocksdb_store::impl::head_of(std::uint64_t chat) {
  std::uint64_t head = heads.get(chat);
  if (head != 0) return head;
  auto h = log_head(chat);
  if (!h) return h.error();
  heads.raise(chat, *h);
  return *h;
}

result<void> rocksdb_store::impl::list_marks(std::uint64_t chat, const chat_marks& members,
                                              std::uint64_t user,
                                              std::unordered_map<std::uint64_t, std::string>& names,
                                              std::vector<watermark>& out) {
  for (const auto& [member, m] : members) {
    if (member == user) continue;
    auto name = names.find(member);
    if (name == names.end()) {
      auto n = username_of(member);
      if (!n) return n.error();
      name = names.emplace(member, std::move(*n)).first;
    }
    if (m.delivered > 0)
      out.push_back({chat, name->second, message_status::delivered, m.delivered, 0});
    if (m.read > 0) out.push_back({chat, name->second, message_status::read, m.read, 0});
  }
  return {};
}

result<std::vector<user_chat>> rocksdb_store::impl::chats_of(std::uint64_t user) {
  std::vector<user_chat> chats;
  const auto lower = keys::be64(user);
  const std::string upper = after_prefix(lower.view());
  bounded_read r(lower.view(), upper);
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(r.options, cfs[cf_user_chats]));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().size() != 16) return errc::corrupt;
    auto m = parse_membership(std::string_view(it->value().data(), it->value().size()));
    if (!m) return errc::corrupt;
    chats.push_back({read_be64(std::string_view(it->key().data(), 16), 8), *m});
  }
  if (!it->status().ok()) return errc::io_error;
  return chats;
}

result<std::vector<user_chat>> rocksdb_store::impl::memberships(
    std::uint64_t user, const std::vector<std::uint64_t>& chat_ids) {
  std::vector<user_chat> chats;
  chats.reserve(chat_ids.size());
  for (std::uint64_t chat : chat_ids) {
    auto m = stored_membership(user, chat);
    if (!m) return m.error();
    if (*m) chats.push_back({chat, **m});
  }
  return chats;
}

result<void> rocksdb_store::impl::group_marks_for(std::uint64_t chat, const chat_marks& members,
                                                  std::uint64_t user, const rocksdb::Snapshot* at,
                                                  std::vector<watermark>& out) {
  auto record = chat_record(chat, at);
  if (!record) return record.error();
  if (!*record) return errc::corrupt;
  std::uint64_t delivered = UINT64_MAX;
  std::uint64_t read = UINT64_MAX;
  for (std::uint64_t member : (*record)->members()) {
    if (member == user) continue;
    const auto it = members.find(member);
    const member_marks m = it == members.end() ? member_marks{} : it->second;
    delivered = std::min(delivered, std::max(m.delivered, m.read));
    read = std::min(read, m.read);
  }
  if (delivered != UINT64_MAX && delivered > 0)
    out.push_back({chat, {}, message_status::delivered, delivered, 0});
  if (read != UINT64_MAX && read > 0) out.push_back({chat, {}, message_status::read, read, 0});
  return {};
}

result<void> rocksdb_store::impl::read_chats(const std::vector<user_chat>& chats,
                                             std::uint64_t device, std::uint64_t user,
                                             bool with_behind, device_backlog& out) {
  if (chats.empty()) return {};
  // Per chat: its head (from the heads the writer published, else the log's last key), and
  // its cursors and read marks on two iterators reused for every chat (creating iterators per
  // chat cost ~250 µs a chat: 200 ms for a login with 800 chats). The marks and a group's
  // member list are read at one snapshot: a member added in between would otherwise be
  // listed without its marks, counted at 0, and the group's merged DELIVERED left out.
  struct snapshot_guard {
    rocksdb::DB& db;
    const rocksdb::Snapshot* at;
    ~snapshot_guard() { db.ReleaseSnapshot(at); }
  } snapshot{*db, db->GetSnapshot()};
  rocksdb::ReadOptions at_snapshot;
  at_snapshot.snapshot = snapshot.at;
  std::unique_ptr<rocksdb::Iterator> cursors_it(db->NewIterator(at_snapshot, cfs[cf_cursors]));
  std::unique_ptr<rocksdb::Iterator> marks_it(db->NewIterator(at_snapshot, cfs[cf_read_marks]));
  std::unordered_map<std::uint64_t, std::string> names;
  chat_marks members;
  for (const auto& [chat, member] : chats) {
    std::uint64_t cursor = 0;
    auto scanned = scan_marks(chat, *cursors_it, *marks_it, members, user, device, &cursor);
    if (!scanned) return scanned.error();
    if (with_behind) {
      auto head = head_of(chat);
      if (!head) return head.error();
      // A former member gets up to the event that removed it. A group listed as current is
      // checked again after its head is read: a removal committed since chats_of() listed it
      // would otherwise let the drain send what came after it.
      std::uint64_t until = member.until;
      if (member.group && until == 0) {
        auto now = stored_membership(user, chat);
        if (!now) return now.error();
        if (*now && (*now)->until != 0) until = (*now)->until;
      }
      const std::uint64_t last = until != 0 ? std::min(*head, until) : *head;
      if (last > cursor) out.behind.push_back({chat, cursor, last});
    }
    if (member.until != 0) continue;  // no watermarks of a group one is not in
    auto listed = member.group ? group_marks_for(chat, members, user, snapshot.at, out.marks)
                               : list_marks(chat, members, user, names, out.marks);
    if (!listed) return listed.error();
  }
  return {};
}

void rocksdb_store::backlog(device_id device, user_id user, std::uint64_t receipts_since,
                            completion<device_backlog> done) {
  impl_->read<device_backlog>(std::move(done), [this, device, user, receipts_since]() {
    return impl_->compute_backlog(device, user, receipts_since);
  });
}

void rocksdb_store::device_cursor(device_id device, user_id user, chat_id chat,
                                  completion<std::uint64_t> done) {
  impl_->read<std::uint64_t>(std::move(done), [this, device, user, chat] {
    return impl_->stored_cursor(chat, user, device);
  });
}

void rocksdb_store::read_log(chat_id chat, std::uint64_t after, std::uint64_t up_to,
                             std::size_t limit, std::size_t max_bytes,
                             completion<std::vector<shared_message>> done) {
  impl_->read<std::vector<shared_message>>(
      std::move(done),
      [this, chat, after, up_to, limit, max_bytes]() -> result<std::vector<shared_message>> {
        auto& d = *impl_;
        std::vector<shared_message> out;
        if (up_to <= after || limit == 0) return out;
        const auto lower = keys::message(chat, after + 1);
        const std::string upper = up_to == UINT64_MAX ? after_prefix(keys::be64(chat).view())
                                                      : std::string(keys::message(chat, up_to + 1));
        bounded_read r(lower.view(), upper);
        std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(r.options, d.cfs[cf_messages]));
        std::size_t bytes = 0;
        for (it->SeekToFirst(); it->Valid() && out.size() < limit; it->Next()) {
          if (it->key().size() != 16) return errc::corrupt;
          const std::uint64_t seq = read_be64(std::string_view(it->key().data(), 16), 8);
          auto m = d.stored_message(chat, seq,
                                    std::string_view(it->value().data(), it->value().size()));
          if (!m) return m.error();
          bytes += m->payload.size();
          if (!out.empty() && bytes > max_bytes) break;
          out.push_back(std::make_shared<const chat_message>(std::move(*m)));
        }
        if (!it->status().ok()) return errc::io_error;
        return out;
      });
}

void rocksdb_store::status(user_id requester, chat_id chat, std::uint64_t seq, bool detail,
                           completion<status_report> done) {
  impl_->read<status_report>(
      std::move(done), [this, requester, chat, seq, detail]() -> result<status_report> {
        auto& d = *impl_;
        std::string v;
        auto s = d.get(cf_messages, keys::message(chat, seq), &v);
        if (s.IsNotFound()) return errc::not_found;
        if (!s.ok()) return errc::io_error;
        pb::StoredMessage m;
        if (!parse(m, v)) return errc::corrupt;
        if (m.sender_user() != requester || m.has_event()) return errc::not_found;
        auto record = d.chat_record(chat);
        if (!record) return record.error();
        if (!*record) return errc::corrupt;
        const auto& r = **record;
        // Only a current member asks (a former one sent it, but may not see who has it).
        if (std::find(r.members().begin(), r.members().end(), requester) == r.members().end())
          return errc::not_found;
        auto marks = d.marks_of(chat);
        if (!marks) return marks.error();
        status_report out;
        for (int i = 0; i < r.members_size(); ++i) {
          const std::uint64_t member = r.members(i);
          if (member == requester) continue;
          // A member who joined after the message is not counted: it was never sent to it.
          if (i < r.joined_seq_size() && r.joined_seq(i) > seq) continue;
          const auto it = marks->find(member);
          const impl::member_marks mm = it == marks->end() ? impl::member_marks{} : it->second;
          ++out.recipients;
          const bool read = mm.read >= seq;
          const bool delivered = read || mm.delivered >= seq;
          out.read += read ? 1 : 0;
          out.delivered += delivered ? 1 : 0;
          if (!detail || !delivered) continue;
          auto name = d.username_of(member);
          if (!name) return name.error();
          if (read) out.read_by.push_back(*name);
          out.delivered_to.push_back(std::move(*name));
        }
        settle_status(out);
        return out;
      });
}

void rocksdb_store::history(user_id requester, chat_ref chat, std::uint64_t before,
                            std::size_t limit, std::size_t max_bytes,
                            completion<history_page> done) {
  impl_->read<history_page>(
      std::move(done),
      [this, requester, chat = std::move(chat), before, limit,
       max_bytes]() -> result<history_page> {
        auto& d = *impl_;
        std::uint64_t first = 1;
        auto id = d.resolve_for_read(requester, chat, &first);
        if (!id) return id.error();
        history_page out;
        out.chat = *id;
        if (*id == 0 || limit == 0 || (before != 0 && before <= first)) return out;
        const auto lower = keys::message(*id, first);
        const std::string upper = before == 0 ? after_prefix(keys::be64(*id).view())
                                              : std::string(keys::message(*id, before));
        bounded_read r(lower.view(), upper);
        std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(r.options, d.cfs[cf_messages]));
        std::size_t bytes = 0;
        for (it->SeekToLast(); it->Valid() && out.messages.size() < limit; it->Prev()) {
          if (it->key().size() != 16) return errc::corrupt;
          const std::uint64_t seq = read_be64(std::string_view(it->key().data(), 16), 8);
          auto m = d.stored_message(*id, seq,
                                    std::string_view(it->value().data(), it->value().size()));
          if (!m) return m.error();
          bytes += m->payload.size();
          if (!out.messages.empty() && bytes > max_bytes) break;
          out.messages.push_back(std::move(*m));
        }
        if (!it->status().ok()) return errc::io_error;
        return out;
      });
}

rocksdb_store::read_cost rocksdb_store::backlog_cost_for_tests(device_id device, user_id user,
                                                               std::uint64_t receipts_since,
                                                               device_backlog* out) {
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  auto r = impl_->compute_backlog(device, user, receipts_since);
  const auto* p = rocksdb::get_perf_context();
  read_cost cost;
  cost.keys_skipped = p->internal_key_skipped_count + p->internal_delete_skipped_count;
  cost.memtable_reads =
      p->get_from_memtable_count + p->seek_on_memtable_count + p->next_on_memtable_count;
  cost.key_comparisons = p->user_key_comparison_count;
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  if (!r) throw std::runtime_error("backlog failed: " + r.error().message());
  if (out != nullptr) *out = std::move(*r);
  return cost;
}

std::uint64_t rocksdb_store::latest_sequence_for_tests() {
  return impl_->db->GetLatestSequenceNumber();
}

std::uint64_t rocksdb_store::memtable_bytes_for_tests() {
  std::uint64_t total = 0;
  for (auto* family : impl_->cfs) {
    std::uint64_t bytes = 0;
    if (impl_->db->GetIntProperty(family, rocksdb::DB::Properties::kCurSizeAllMemTables, &bytes))
      total += bytes;
  }
  return total;
}

std::uint64_t rocksdb_store::compact_and_count_dedupe_for_tests() {
  auto& d = *impl_;
  d.db->Flush(rocksdb::FlushOptions(), d.cfs[cf_dedupe]);
  d.db->CompactRange(rocksdb::CompactRangeOptions(), d.cfs[cf_dedupe], nullptr, nullptr);
  std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(rocksdb::ReadOptions(), d.cfs[cf_dedupe]));
  std::uint64_t n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  return n;
}

}  // namespace parley::store
