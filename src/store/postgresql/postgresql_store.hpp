// The cluster Store on PostgreSQL (or a PostgreSQL-protocol database: docs/scaling.md says what
// Citus and YugabyteDB need): every parleyd node of a cluster opens one on the same database.
//
// Like the embedded store, writes go to a writer thread, which applies a group of requests in
// one transaction, each request inside a savepoint (a request that fails leaves nothing), and
// commits the group once: group commit, one fsync (and one round trip of COMMIT) per group
// instead of per request. Unlike it, a node has several writers (`writers`, each with its own
// connection, in libpq's pipeline mode); one device's requests always go to the same one, so
// they are applied in the order they came. Reads run on their own threads,
// each with its own connection. Several nodes write at once: what must be atomic across them
// is done in SQL (a chat's seq is taken with UPDATE ... RETURNING under the chat's row lock,
// a one-time prekey with DELETE ... RETURNING over FOR UPDATE SKIP LOCKED, the dedupe record
// and a 1:1 chat's creation with ON CONFLICT). A group that meets a deadlock or a
// serialization failure with another node is rolled back and applied again.
//
// The schema is created (idempotently, under an advisory lock) by the first node to open it:
// pg_schema.cpp.
//
// Where it differs from the embedded store (the contract allows both):
//  - backlog() lists the watermarks of every chat of the user, whatever receipts_since says
//    (there is no login index here); its stamp is the receipts sequence's current value. It
//    marks the chats with only the device's own entries above its cursor (own_only), which
//    saves the drain a read of the log (a round trip) for each.
//  - A connection that is lost fails the requests in flight with errc::unavailable; the
//    writer reconnects by itself (every reconnect_interval). A COMMIT whose answer was lost
//    may have committed: that is safe for sends and acks, which a client retries with the
//    same client_msg_id / cursor (dedupe answers the first result; cursors only move on).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "store/store.hpp"

namespace parley::store {

struct postgresql_options {
  // A libpq connection string or URI (postgresql://user@host:port/db).
  std::string conninfo;
  // Snowflake node id (chat and message ids): every node of a cluster needs its own.
  std::uint64_t node_id = 0;
  std::size_t max_group = 256;
  // Writer threads, each with its own connection and queue (at least 1). One device's
  // requests go to one of them; their groups commit side by side.
  std::size_t writers = 1;
  // Write requests that may wait for the writer; more are refused with errc::busy.
  std::size_t max_pending = 65'536;
  std::chrono::milliseconds dedupe_window{std::chrono::hours(24 * 7)};
  std::size_t reader_threads = 2;
  // How often a writer or reader whose connection is gone tries to open a new one.
  std::chrono::milliseconds reconnect_interval{500};
  // The sessions' lock_timeout: a statement that waits longer for a lock (held by a stalled
  // node, or an operator's transaction) gives up, and its request is refused errc::busy.
  std::chrono::milliseconds lock_timeout{10'000};
  // How long a connection may wait for the server's answer without a byte from it before it
  // is taken as lost (pg::connection::set_answer_timeout). The server sends a pipelined
  // group's answers together, once it has run the whole group, so this bounds a group's run,
  // not one statement's: well past what a healthy group takes (milliseconds; one statement
  // at most statement_timeout, 30 s, its lock wait at most lock_timeout, 10 s), so that what
  // hits it is a frozen server. A group that does hit it is refused as unavailable
  // (retryable): nothing of it committed.
  std::chrono::milliseconds answer_timeout{60'000};
  // synchronous_commit for the writer's sessions: "on" (durable before a completion runs)
  // unless a test or benchmark says otherwise.
  bool sync = true;
  std::function<void(std::chrono::nanoseconds, std::size_t)> on_commit;
};

class postgresql_store final : public store {
 public:
  // Connects and creates the schema if missing. Throws std::runtime_error if it cannot:
  // start-up code, not the message path.
  explicit postgresql_store(postgresql_options options);
  ~postgresql_store() override;

  postgresql_store(const postgresql_store&) = delete;
  postgresql_store& operator=(const postgresql_store&) = delete;

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

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace parley::store
