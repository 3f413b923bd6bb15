// The embedded Store on RocksDB: one process, one data directory, nothing else to run.
//
// Writes from every session go to one writer thread, which applies them in arrival order to a
// WriteBatch (with an overlay map, so that later requests see earlier ones of the same group)
// and commits the whole group with one synced write: group commit. Reads run on a small
// thread pool.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>

#include "store/store.hpp"

namespace parley::store {

struct rocksdb_options {
  std::filesystem::path path;
  std::uint64_t node_id = 0;  // Snowflake node id
  bool sync = true;           // fsync every group commit; false only for tests and benchmarks
  std::size_t max_group = 4096;
  std::size_t reader_threads = 2;
  // Entries each of the writer's caches (users by name and by id, chats' sequence numbers,
  // devices' registration ids) may hold; a cache past it is emptied after the group commit
  // and refills from the store. Bounds the writer's memory on a store with many chats.
  std::size_t max_cached = 1u << 18;
  // Free space the store keeps on its file system. Below it, writes are refused with
  // errc::unavailable (checked before each group commit), so that RocksDB itself never runs
  // into a full disk, and a restart always has room to recover: the write-ahead log is capped
  // at a quarter of it (max_total_wal_size), and replaying it writes at most that much.
  std::uint64_t reserve_bytes = 256ull << 20;
  // After a failed write, how often the writer tries DB::Resume() (on a write attempt).
  std::chrono::milliseconds resume_interval{1'000};
  // Called on the writer thread after each group commit: its latency and request count.
  std::function<void(std::chrono::nanoseconds, std::size_t)> on_commit;
};

class rocksdb_store final : public store {
 public:
  // Opens (creating if missing) the database. Throws std::runtime_error if it cannot:
  // start-up code, not the message path.
  explicit rocksdb_store(rocksdb_options options);
  ~rocksdb_store() override;

  rocksdb_store(const rocksdb_store&) = delete;
  rocksdb_store& operator=(const rocksdb_store&) = delete;

  void register_account(registration_request request, completion<registration> done) override;
  void find_device(device_id id, completion<device> done) override;
  void find_account(std::string username, completion<account> done) override;
  void send(send_request request, completion<send_outcome> done) override;
  void ack(device_id device, std::string device_username, std::vector<event_id> events,
           completion<std::vector<delivery>> done) override;
  void mark_read(user_id reader, std::string reader_name, std::string peer, message_id up_to,
                 completion<std::vector<delivery>> done) override;
  void read_queue(device_id device, event_id after, std::size_t limit,
                  completion<std::vector<device_event>> done) override;
  void status(user_id requester, message_id id, completion<message_status> done) override;
  void history(user_id requester, std::string peer, message_id before, std::size_t limit,
               completion<std::vector<history_entry>> done) override;
  void upload_keys(key_upload upload, std::size_t max_held, completion<key_stock> done) override;
  void take_key_bundles(std::string username, completion<std::vector<key_bundle>> done) override;
  void shared_chats(user_id requester, std::vector<std::string> usernames,
                    completion<std::vector<bool>> done) override;
  void set_privacy(user_id user, bool hide_last_seen, completion<void> done) override;
  store_health health() override;
  std::uint64_t queued_events_estimate() override;
  void stop() override;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::store
