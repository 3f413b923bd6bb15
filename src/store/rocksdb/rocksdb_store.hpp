// The embedded Store on RocksDB: one process, one data directory, nothing else to run.
//
// Writes from every session go to one writer thread, which applies them in arrival order to a
// WriteBatch (with an overlay map, so that later requests see earlier ones of the same group)
// and commits the whole group with one synced write: group commit. Each request runs inside a
// savepoint of the batch, so one that fails leaves nothing behind. Reads run on a small
// thread pool. Key layout: keys.hpp.
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
  // Write requests that may wait for the writer; more are refused with errc::busy at once, so
  // that a writer slower than the load bounds the memory it holds instead of queueing
  // without end (about 1 KiB each with a message's payload: 64 MiB when full).
  std::size_t max_pending = 65'536;
  // How long a (sender device, client_msg_id) is remembered: a retry within it returns the
  // first result; older dedupe records are dropped by compaction (and ignored before).
  std::chrono::milliseconds dedupe_window{std::chrono::hours(24 * 7)};
  // All memtables together (RocksDB's write buffer manager): a cap over every column family.
  std::size_t memtable_budget_bytes = 64u << 20;
  std::size_t reader_threads = 2;
  // Entries each of the writer's caches (users by name and by id, chats, cursors, read
  // marks, devices' registration ids) and the published chat heads may hold; past it, half of
  // the cache is forgotten after the group commit (and refills from the store). Bounds the
  // writer's memory on a store with many chats: about 100 bytes an entry, so up to ~100 MiB
  // for a cache at the bound. A store whose active chats exceed it pays a read per miss.
  std::size_t max_cached = 1u << 20;
  // Chats whose watermarks moved that the login index (login_index.hpp) remembers per device;
  // past it, that device's next login with an older stamp reads every chat's watermarks.
  std::size_t login_max_moved = 4096;
  // Free space the store keeps on its file system. Below it, writes are refused with
  // errc::unavailable (checked before each group commit), so that RocksDB itself never runs
  // into a full disk, and a restart always has room to recover: the write-ahead log is capped
  // at a quarter of it (max_total_wal_size), and replaying it writes at most that much.
  std::uint64_t reserve_bytes = 256ull << 20;
  // The write-ahead log is zero-filled this far ahead of its data, so that a commit's
  // fdatasync need not write the file's size and block map too (wal_prefill.hpp); 0: not.
  // Only with `sync`.
  std::uint64_t wal_prefill_bytes = 1u << 20;
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
  void first_unknown_user(std::vector<std::string> usernames,
                          completion<std::string> done) override;
  void send(send_request request, completion<send_outcome> done) override;
  void ack(device_id device, user_id user, std::vector<cursor_update> cursors,
           completion<watermark_moves> done) override;
  void pass_own_entries(device_id device, user_id user, std::vector<cursor_update> cursors,
                        completion<void> done) override;
  void mark_read(user_id reader, chat_id chat, std::uint64_t up_to,
                 completion<watermark_moves> done) override;
  void group_receipts(chat_id chat, completion<std::vector<receipt_delivery>> done) override;
  void create_group(create_group_request request, completion<group_outcome> done) override;
  void change_group(group_change_request request, completion<group_outcome> done) override;
  void get_group(user_id requester, chat_id chat, completion<group_info> done) override;
  void backlog(device_id device, user_id user, std::uint64_t receipts_since,
               completion<device_backlog> done) override;
  void device_cursor(device_id device, user_id user, chat_id chat,
                     completion<std::uint64_t> done) override;
  void read_log(chat_id chat, std::uint64_t after, std::uint64_t up_to, std::size_t limit,
                std::size_t max_bytes, completion<std::vector<shared_message>> done) override;
  void status(user_id requester, chat_id chat, std::uint64_t seq, bool detail,
              completion<status_report> done) override;
  void history(user_id requester, chat_ref chat, std::uint64_t before, std::size_t limit,
               std::size_t max_bytes, completion<history_page> done) override;
  void upload_keys(key_upload upload, std::size_t max_held, completion<key_stock> done) override;
  void take_key_bundles(std::string username, bool take_one_time,
                        completion<std::vector<key_bundle>> done) override;
  void shared_chats(user_id requester, std::vector<std::string> usernames,
                    completion<std::vector<bool>> done) override;
  void create_media(media_request request, completion<std::uint64_t> done) override;
  void media_of(user_id requester, chat_id chat, std::uint64_t seq,
                completion<media_record> done) override;
  void own_media(user_id owner, std::string media, completion<media_record> done) override;
  void bind_upload(user_id owner, std::string media, std::string upload_id,
                   completion<std::string> done) override;
  void unreferenced_media(std::uint64_t created_before_ms, std::size_t limit,
                          completion<std::vector<media_record>> done) override;
  void delete_media(std::vector<std::string> media, std::uint64_t created_before_ms,
                    completion<std::vector<std::string>> done) override;
  void media_exists(std::vector<std::string> media, completion<std::vector<bool>> done) override;
  void set_privacy(user_id user, bool hide_last_seen, completion<void> done) override;
  store_health health() override;
  std::uint64_t pending_writes() override;
  void stop() override;

  // Tests only: what the reads of backlog() cost in RocksDB (its perf context), so that a test
  // can show that a login's cost does not grow with the traffic the store has carried or
  // with the chats that did not change.
  struct read_cost {
    std::uint64_t keys_skipped = 0;    // internal keys stepped over (deleted or superseded)
    std::uint64_t memtable_reads = 0;  // gets, seeks and nexts in the memtables
    std::uint64_t key_comparisons = 0;
  };
  read_cost backlog_cost_for_tests(device_id device, user_id user, std::uint64_t receipts_since,
                                   device_backlog* out = nullptr);
  // Tests only: RocksDB's latest sequence number, which every key written moves by one: the
  // difference over a request is the number of keys it wrote.
  std::uint64_t latest_sequence_for_tests();
  // Tests only: bytes in all memtables, flushed or not (rocksdb.cur-size-all-mem-tables).
  std::uint64_t memtable_bytes_for_tests();
  // Tests only: compacts every column family (runs the dedupe expiry) and counts the dedupe
  // records left.
  std::uint64_t compact_and_count_dedupe_for_tests();

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::store
