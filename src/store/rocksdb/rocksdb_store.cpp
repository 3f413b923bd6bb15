#include "store/rocksdb/rocksdb_store.hpp"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
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
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/snowflake.hpp"
#include "common/thread_name.hpp"
#include "parley/store/v1/records.pb.h"
#include "store/rocksdb/keys.hpp"
#include "store/rocksdb/pending_queue.hpp"

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
  cf_messages,
  cf_message_index,
  cf_queue,
  cf_dedupe,
  cf_delivered,
  cf_read_marks,
  cf_device_keys,
  cf_count
};

constexpr const char* cf_names[cf_count] = {
    "default",       "accounts", "users",  "devices",   "chats",      "messages",
    "message_index", "queue",    "dedupe", "delivered", "read_marks", "device_keys",
};

rocksdb::Slice slice(std::string_view s) { return {s.data(), s.size()}; }

// The requests of one group commit: their writes, what later requests of the same group must
// see of them (the overlay: column family byte + key -> value, nullopt for a delete), and
// what to run once the group is durable.
struct group {
  rocksdb::WriteBatch batch;
  std::unordered_map<std::string, std::optional<std::string>> overlay;
  std::vector<std::function<void(error_code)>> on_durable;
  bool ids_issued = false;
};

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

template <class Record>
bool parse(Record& record, const std::string& bytes) {
  return record.ParseFromString(bytes);
}

}  // namespace

struct rocksdb_store::impl {
  explicit impl(rocksdb_options o) : options(std::move(o)), reader_work(readers.get_executor()) {}
  ~impl() { stop_readers(); }  // stop() normally has joined them already

  rocksdb_options options;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> cfs;
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
  using command = std::function<void(group*, errc)>;
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<command> pending;
  bool stopping = false;
  std::thread writer;

  // Writer-thread state. The caches hold committed state only: a failed commit clears them.
  std::unordered_map<std::string, std::uint64_t> user_ids;            // username -> user id
  std::unordered_map<std::uint64_t, cached_user> users;               // user id -> user
  std::unordered_map<std::string, std::uint64_t> chat_seqs;           // chat -> last seq
  std::unordered_map<std::uint64_t, std::uint32_t> registration_ids;  // device -> 0 if no keys
  // Queue entries written and not yet acked: an ack of one needs no lookup. Sized for the
  // entries of a few seconds at the write rates the writer sustains (~80 B each with the
  // map's node and the order entry: ~5 MiB when full).
  pending_queue unacked{1u << 16};
  snowflake ids{0};
  std::uint64_t last_id = 0;

  // Whether writes are accepted (see rocksdb_options::reserve_bytes). The writer decides;
  // health() reads it from any thread.
  std::atomic<bool> writable{true};
  std::mutex health_mutex;
  std::string unavailable_reason;  // guarded by health_mutex
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
  rocksdb::Status get(cf family, std::string_view key, std::string* value) {
    return db->Get(rocksdb::ReadOptions(), cfs[family], slice(key), value);
  }
  // Families that writer code reads back through the overlay within a group. The others are
  // never read there (messages, meta) or are served from the writer's caches (users, chat
  // seqs), so their writes skip the overlay: no copy of the payload, no hash insert.
  static constexpr bool read_in_group(cf family) {
    return family != cf_default && family != cf_users && family != cf_devices &&
           family != cf_chats && family != cf_messages;
  }
  void put(group& g, cf family, std::string_view key, std::string_view value) {
    assert(family != cf_queue);  // queue entries go through put_queue_entry
    g.batch.Put(cfs[family], slice(key), slice(value));
    if (read_in_group(family)) g.overlay[overlay_key(family, key)] = std::string(value);
  }
  // A device-queue entry: to the batch and to `unacked`, which is where an ack finds it (not
  // the overlay: no copy of the key and value per entry). `sender` is the queued message's
  // sender, 0 for a receipt.
  void put_queue_entry(group& g, std::uint64_t device, event_id event, std::string_view item,
                       std::uint64_t sender) {
    g.batch.Put(cfs[cf_queue], slice(keys::queue(device, event)), slice(item));
    unacked.add(device, event, sender);
  }
  // Removes an acked entry. SingleDelete, because a queue key is written exactly once: a put
  // and its single delete that meet in a flush or compaction both vanish, where a plain
  // delete's tombstone would be carried down the levels. The overlay records the removal,
  // so a repeated ack in the same group finds the entry gone.
  void remove_queue_entry(group& g, const std::string& key) {
    g.batch.SingleDelete(cfs[cf_queue], slice(key));
    g.overlay[overlay_key(cf_queue, key)] = std::nullopt;
  }
  std::uint64_t next_id(group& g, std::uint64_t now) {
    g.ids_issued = true;
    last_id = ids.next(now);
    return last_id;
  }

  // Queues `apply` for the writer. `apply(group&)` runs on the writer thread and returns the
  // request's result; it must validate before it writes, so that an error leaves no writes.
  // `done` runs once the group is durable, with apply's result or the commit's error.
  template <class T, class Apply>
  void write(completion<T> done, Apply apply) {
    command c = [done = std::move(done), apply = std::move(apply)](group* g, errc refusal) mutable {
      if (g == nullptr) {
        done(refusal);
        return;
      }
      auto r = std::make_shared<result<T>>(apply(*g));
      g->on_durable.push_back([done = std::move(done), r](error_code ec) {
        if (ec && r->has_value()) {
          done(ec);
        } else {
          done(std::move(*r));
        }
      });
    };
    {
      std::lock_guard lock(mutex);
      if (!stopping) {
        pending.push_back(std::move(c));
        wake.notify_one();
        return;
      }
    }
    c(nullptr, errc::shutting_down);
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
    auto s = get(cf_users, keys::be64(user), &v);
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

  // The last sequence number of a chat (writer thread, cached).
  result<std::uint64_t*> chat_seq(std::string_view chat) {
    std::string key(chat);
    if (auto it = chat_seqs.find(key); it != chat_seqs.end()) return &it->second;
    std::string v;
    auto s = get(cf_chats, chat, &v);
    std::uint64_t last = 0;
    if (s.ok() && v.size() == 8) {
      last = read_be64(v);
    } else if (!s.IsNotFound()) {
      return errc::io_error;
    }
    return &chat_seqs.emplace(std::move(key), last).first->second;
  }

  // Calls fn on each of the maps above (not `unacked`, which bounds itself).
  template <class Fn>
  void each_cache(Fn fn) {
    fn(user_ids);
    fn(users);
    fn(chat_seqs);
    fn(registration_ids);
  }
  // Empties each cache that grew past options.max_cached, and lets `unacked` forget its
  // oldest. Only between groups: during one, the caches hold the group's own uncommitted
  // changes (a chat's next seq, a new user, the entries it queued).
  void trim_caches() {
    each_cache([&](auto& cache) {
      using map = std::remove_reference_t<decltype(cache)>;
      if (cache.size() > options.max_cached) map().swap(cache);  // frees the buckets too
    });
    unacked.trim();
  }
  void clear_caches() {
    each_cache([](auto& cache) { cache.clear(); });
    unacked.clear();
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
    auto s = get(g, cf_device_keys, keys::be64(device), &v);
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

  // Queues a receipt for every device of `user`.
  result<void> queue_receipt(group& g, std::uint64_t user, message_id id, const std::string& peer,
                             message_status status, std::uint64_t now, std::vector<delivery>& out) {
    auto owner = user_record(user);
    if (!owner) return owner.error();
    for (std::uint64_t device : (*owner)->devices) {
      const event_id event = next_id(g, now);
      pb::QueueItem item;
      auto* receipt = item.mutable_receipt();
      receipt->set_message_id(id);
      receipt->set_peer(peer);
      receipt->set_status(static_cast<std::uint32_t>(status));
      receipt->set_at_ms(now);
      put_queue_entry(g, device, event, item.SerializeAsString(), 0);
      out.push_back({device, receipt_event{event, id, peer, status, now}});
    }
    return {};
  }
};

void rocksdb_store::impl::open() {
  std::filesystem::create_directories(options.path);
  rocksdb::DBOptions db_options;
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
  db_options.sst_file_manager = sst_files;

  // Most point lookups on the message path miss (a new client_msg_id, a message not yet
  // delivered): bloom filters in the tables answer those without a search. The memtable's
  // own bloom filter costs 1.3 MiB per column family up front, so only the families whose
  // lookups mostly miss get one.
  rocksdb::ColumnFamilyOptions cf_options;
  cf_options.write_buffer_size =
      std::min<std::uint64_t>(cf_options.write_buffer_size, db_options.max_total_wal_size);
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  cf_options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (std::size_t i = 0; i < cf_count; ++i) {
    rocksdb::ColumnFamilyOptions o = cf_options;
    if (i == cf_dedupe || i == cf_delivered || i == cf_queue) {
      o.memtable_whole_key_filtering = true;
      o.memtable_prefix_bloom_size_ratio = 0.02;
    }
    // Both families' keys start with the be64 device id, and a device's queue entries come in
    // event-id order: the memtable remembers, per device, where it last inserted and starts the
    // next insert there instead of at the skip list's top (docs/performance.md: 6-7 % less
    // writer CPU per message). The hints (~250 bytes per device) live in the memtable's arena.
    if (i == cf_queue || i == cf_dedupe)
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
  const bool was = writable.load();
  if (ok && was) return;
  {
    std::lock_guard lock(health_mutex);
    unavailable_reason = std::move(reason);
  }
  writable.store(ok);
  // One line per change of state, not per refused group.
  if (ok) {
    log_warn() << "store: writes resumed";
  } else if (was) {
    std::lock_guard lock(health_mutex);
    log_error() << "store: writes refused: " << unavailable_reason;
  }
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
  std::vector<command> work;
  for (;;) {
    {
      std::unique_lock lock(mutex);
      // Idle, the writer still checks the store's health every second, so that /healthz
      // tells the truth when nobody writes (a restart on a full disk, space that returned).
      if (!wake.wait_for(lock, std::chrono::seconds(1),
                         [&] { return stopping || !pending.empty(); })) {
        lock.unlock();
        accepting_writes();
        continue;
      }
      if (pending.empty()) return;  // stopping, and everything queued is done
      while (!pending.empty() && work.size() < options.max_group) {
        work.push_back(std::move(pending.front()));
        pending.pop_front();
      }
    }
    if (!accepting_writes()) {
      for (auto& c : work) c(nullptr, errc::unavailable);
      work.clear();
      continue;
    }
    group g;
    for (auto& c : work) c(&g, errc{});
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
    }
    trim_caches();
    for (auto& f : g.on_durable) f(ec);
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
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
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
          // A chat's seq is written with its first message.
          auto s = d.get(cf_chats, keys::direct_chat(requester, *peer), &v);
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
    auto s = d.get(cf_users, keys::be64(user), &v);
    if (s.IsNotFound()) return errc::unknown_user;
    if (!s.ok()) return errc::io_error;
    pb::UserRecord record;
    if (!parse(record, v)) return errc::corrupt;
    record.set_hide_last_seen(hide_last_seen);
    d.put(g, cf_users, keys::be64(user), record.SerializeAsString());
    return {};
  });
}

store_health rocksdb_store::health() {
  if (impl_->writable.load()) return {};
  std::lock_guard lock(impl_->health_mutex);
  return {false, impl_->unavailable_reason};
}

std::uint64_t rocksdb_store::queued_events_estimate() {
  std::uint64_t n = 0;
  if (!impl_->db->GetIntProperty(impl_->cfs[cf_queue], "rocksdb.estimate-num-keys", &n)) return 0;
  return n;
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

void rocksdb_store::send(send_request request, completion<send_outcome> done) {
  impl_->write<send_outcome>(
      std::move(done), [this, request = std::move(request)](group& g) -> result<send_outcome> {
        auto& d = *impl_;
        std::string v;
        const std::string dedupe_key = keys::dedupe(request.sender_device, request.client_msg_id);
        auto s = d.get(g, cf_dedupe, dedupe_key, &v);
        if (s.ok()) {
          pb::DedupeRecord first;
          if (!parse(first, v)) return errc::corrupt;
          return send_outcome{first.message_id(), first.seq(), first.sent_at_ms(), true, {}};
        }
        if (!s.IsNotFound()) return errc::io_error;

        auto recipient_id = d.user_of(g, request.recipient_name);
        if (!recipient_id) return recipient_id.error();
        if (*recipient_id == request.sender) return errc::self_message;
        auto recipient = d.user_record(*recipient_id);
        if (!recipient) return recipient.error();
        for (std::uint64_t device : (*recipient)->devices) {
          auto registration = d.registration_of(g, device);
          if (!registration) return registration.error();
          if (*registration != 0 && *registration != request.recipient_registration_id) {
            return errc::stale_keys;
          }
        }

        const std::string chat = keys::direct_chat(request.sender, *recipient_id);
        auto seq = d.chat_seq(chat);
        if (!seq) return seq.error();
        const std::uint64_t last_seq = **seq;

        const std::uint64_t now = now_ms();
        send_outcome out;
        out.id = d.next_id(g, now);
        out.seq = last_seq + 1;
        out.sent_at_ms = now;

        pb::StoredMessage message;
        message.set_message_id(out.id);
        message.set_seq(out.seq);
        message.set_chat(chat);
        message.set_sender_user(request.sender);
        message.set_sender_device(request.sender_device);
        message.set_sender_name(request.sender_name);
        message.set_recipient_user(*recipient_id);
        message.set_sent_at_ms(now);
        message.set_payload(request.payload);
        message.set_cipher_type(request.cipher_type);
        pb::DedupeRecord dedupe;
        dedupe.set_message_id(out.id);
        dedupe.set_seq(out.seq);
        dedupe.set_sent_at_ms(now);
        pb::QueueItem item;
        auto* ref = item.mutable_message();
        ref->set_chat(chat);
        ref->set_message_id(out.id);
        ref->set_sender_user(request.sender);

        d.put(g, cf_messages, keys::message(chat, out.id), message.SerializeAsString());
        d.put(g, cf_message_index, keys::be64(out.id), chat);
        d.put(g, cf_chats, chat, keys::be64(out.seq));
        **seq = out.seq;
        d.put(g, cf_dedupe, dedupe_key, dedupe.SerializeAsString());
        const std::string queued = item.SerializeAsString();
        for (std::uint64_t device : (*recipient)->devices) {
          d.put_queue_entry(g, device, out.id, queued, request.sender);
          out.deliveries.push_back(
              {device,
               message_event{out.id, out.id, out.seq, request.sender_name, request.sender_device,
                             now, request.payload, request.cipher_type}});
        }
        return out;
      });
}

void rocksdb_store::ack(device_id device, std::string device_username, std::vector<event_id> events,
                        completion<std::vector<delivery>> done) {
  impl_->write<std::vector<delivery>>(
      std::move(done),
      [this, device, name = std::move(device_username),
       events = std::move(events)](group& g) -> result<std::vector<delivery>> {
        auto& d = *impl_;
        std::vector<delivery> out;
        const std::uint64_t now = now_ms();
        std::string v;
        for (event_id event : events) {
          const std::string key = keys::queue(device, event);
          // The entry's sender (0: a receipt), from what the writer remembers, else the store.
          std::uint64_t sender = 0;
          if (auto known = d.unacked.take(device, event)) {
            sender = *known;
          } else {
            auto s = d.get(g, cf_queue, key, &v);
            if (s.IsNotFound()) continue;  // acked before: harmless
            if (!s.ok()) return errc::io_error;
            pb::QueueItem item;
            if (!parse(item, v)) return errc::corrupt;
            if (item.has_message()) sender = item.message().sender_user();
          }
          d.remove_queue_entry(g, key);
          if (sender == 0) continue;  // a receipt: nothing follows from its ack

          const message_id id = event;  // a message's event id is its id
          const std::string delivered_key = keys::be64(id);
          auto s = d.get(g, cf_delivered, delivered_key, &v);
          if (s.ok()) continue;  // another device of this account delivered it first
          if (!s.IsNotFound()) return errc::io_error;
          d.put(g, cf_delivered, delivered_key, {});
          auto r = d.queue_receipt(g, sender, id, name, message_status::delivered, now, out);
          if (!r && r.error() != errc::unknown_user) return r.error();
        }
        return out;
      });
}

void rocksdb_store::mark_read(user_id reader, std::string reader_name, std::string peer,
                              message_id up_to, completion<std::vector<delivery>> done) {
  impl_->write<std::vector<delivery>>(
      std::move(done),
      [this, reader, reader_name = std::move(reader_name), peer = std::move(peer),
       up_to](group& g) -> result<std::vector<delivery>> {
        auto& d = *impl_;
        auto peer_id = d.user_of(g, peer);
        if (!peer_id) return peer_id.error();
        const std::string chat = keys::direct_chat(reader, *peer_id);
        std::string v;
        auto s = d.get(g, cf_message_index, keys::be64(up_to), &v);
        if (s.IsNotFound() || (s.ok() && v != chat)) return errc::not_found;
        if (!s.ok()) return errc::io_error;

        const std::string mark_key = keys::read_mark(chat, reader);
        s = d.get(g, cf_read_marks, mark_key, &v);
        if (s.ok() && v.size() == 8 && read_be64(v) >= up_to) return std::vector<delivery>{};
        if (!s.ok() && !s.IsNotFound()) return errc::io_error;
        d.put(g, cf_read_marks, mark_key, keys::be64(up_to));

        std::vector<delivery> out;
        auto r =
            d.queue_receipt(g, *peer_id, up_to, reader_name, message_status::read, now_ms(), out);
        if (!r) return r.error();
        return out;
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

void rocksdb_store::take_key_bundles(std::string username,
                                     completion<std::vector<key_bundle>> done) {
  impl_->write<std::vector<key_bundle>>(
      std::move(done),
      [this, username = std::move(username)](group& g) -> result<std::vector<key_bundle>> {
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
          if (k.one_time_prekeys_size() > 0) {
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

void rocksdb_store::read_queue(device_id device, event_id after, std::size_t limit,
                               completion<std::vector<device_event>> done) {
  impl_->read<std::vector<device_event>>(
      std::move(done), [this, device, after, limit]() -> result<std::vector<device_event>> {
        auto& d = *impl_;
        std::vector<device_event> out;
        const std::string prefix = keys::be64(device);
        std::unique_ptr<rocksdb::Iterator> it(
            d.db->NewIterator(rocksdb::ReadOptions(), d.cfs[cf_queue]));
        std::string v;
        for (it->Seek(slice(keys::queue(device, after + 1))); it->Valid() && out.size() < limit;
             it->Next()) {
          const auto key = it->key();
          if (key.size() != 16 || !key.starts_with(slice(prefix))) break;
          const event_id event = read_be64(std::string_view(key.data(), key.size()), 8);
          pb::QueueItem item;
          if (!item.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
            return errc::corrupt;
          }
          if (item.has_receipt()) {
            const auto& r = item.receipt();
            out.push_back(receipt_event{event, r.message_id(), r.peer(),
                                        static_cast<message_status>(r.status()), r.at_ms()});
            continue;
          }
          auto s = d.get(cf_messages,
                         keys::message(item.message().chat(), item.message().message_id()), &v);
          if (!s.ok()) return s.IsNotFound() ? errc::corrupt : errc::io_error;
          pb::StoredMessage m;
          if (!parse(m, v)) return errc::corrupt;
          out.push_back(message_event{event, m.message_id(), m.seq(), m.sender_name(),
                                      m.sender_device(), m.sent_at_ms(), m.payload(),
                                      m.cipher_type()});
        }
        if (!it->status().ok()) return errc::io_error;
        return out;
      });
}

void rocksdb_store::status(user_id requester, message_id id, completion<message_status> done) {
  impl_->read<message_status>(std::move(done), [this, requester, id]() -> result<message_status> {
    auto& d = *impl_;
    std::string chat;
    auto s = d.get(cf_message_index, keys::be64(id), &chat);
    if (s.IsNotFound()) return errc::not_found;
    if (!s.ok()) return errc::io_error;
    std::string v;
    s = d.get(cf_messages, keys::message(chat, id), &v);
    if (!s.ok()) return s.IsNotFound() ? errc::not_found : errc::io_error;
    pb::StoredMessage m;
    if (!parse(m, v)) return errc::corrupt;
    if (m.sender_user() != requester) return errc::not_found;

    s = d.get(cf_read_marks, keys::read_mark(chat, m.recipient_user()), &v);
    if (s.ok() && v.size() == 8 && read_be64(v) >= id) return message_status::read;
    if (!s.ok() && !s.IsNotFound()) return errc::io_error;
    s = d.get(cf_delivered, keys::be64(id), &v);
    if (s.ok()) return message_status::delivered;
    if (!s.IsNotFound()) return errc::io_error;
    return message_status::sent;
  });
}

void rocksdb_store::history(user_id requester, std::string peer, message_id before,
                            std::size_t limit, completion<std::vector<history_entry>> done) {
  impl_->read<std::vector<history_entry>>(
      std::move(done),
      [this, requester, peer = std::move(peer), before,
       limit]() -> result<std::vector<history_entry>> {
        auto& d = *impl_;
        auto peer_id = d.user_of(peer);
        if (!peer_id) return peer_id.error();
        const std::string chat = keys::direct_chat(requester, *peer_id);
        std::vector<history_entry> out;
        std::unique_ptr<rocksdb::Iterator> it(
            d.db->NewIterator(rocksdb::ReadOptions(), d.cfs[cf_messages]));
        const std::string start = before == 0 ? chat : keys::message(chat, before);
        for (it->Seek(slice(start)); it->Valid() && out.size() < limit; it->Next()) {
          const auto key = it->key();
          if (key.size() != chat.size() + 8 || !key.starts_with(slice(chat))) break;
          pb::StoredMessage m;
          if (!m.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
            return errc::corrupt;
          }
          if (before != 0 && m.message_id() >= before) continue;
          out.push_back({m.message_id(), m.seq(), m.sender_name(), m.sent_at_ms(), m.payload(),
                         m.cipher_type(), m.sender_device()});
        }
        if (!it->status().ok()) return errc::io_error;
        return out;
      });
}

}  // namespace parley::store
