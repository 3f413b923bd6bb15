// The device's local store: one SQLite database in the profile (local.db), readable and
// writable only by the user (0600), holding the Signal-protocol state (identity and prekeys
// with their private keys, sessions, the identity keys of contacts and their changes) and the
// local message history, which only this device can read: the server keeps ciphertext only.
//
// Durability: synchronous=FULL in WAL mode, so a committed transaction survives a crash; the
// messenger commits a decrypted message and the ratchet state it advanced together, and acks
// to the server only after that commit.
//
// Failures of SQLite itself throw std::runtime_error (a broken disk is not a message-path
// value); the engine turns them into e2ee::errc::storage.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "e2ee/key_store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace parley::client {

enum class message_direction { incoming, outgoing };

struct local_message {
  std::uint64_t server_id = 0;  // the server's message id (0: not yet sent)
  std::string peer;
  message_direction direction = message_direction::incoming;
  std::uint64_t sent_at_ms = 0;
  std::string text;     // empty when undecryptable
  std::string problem;  // why it could not be decrypted; empty for a readable message
};

class local_store final : public e2ee::key_store {
 public:
  explicit local_store(const std::filesystem::path& file);
  ~local_store() override;
  local_store(const local_store&) = delete;
  local_store& operator=(const local_store&) = delete;

  // BEGIN IMMEDIATE ... COMMIT; rolled back if destroyed without commit(). Not nested.
  class transaction {
   public:
    explicit transaction(local_store& store);
    ~transaction();
    void commit();

   private:
    local_store& store_;
    bool done_ = false;
  };

  // e2ee::key_store
  std::optional<std::string> meta(std::string_view key) override;
  void set_meta(std::string_view key, std::string_view value) override;
  std::optional<std::string> prekey(std::uint32_t id) override;
  void put_prekey(std::uint32_t id, std::string_view record) override;
  void remove_prekey(std::uint32_t id) override;
  void remove_all_prekeys() override;
  std::optional<std::string> signed_prekey(std::uint32_t id) override;
  void put_signed_prekey(std::uint32_t id, std::string_view record,
                         std::uint64_t created_ms) override;
  void remove_signed_prekey(std::uint32_t id) override;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> signed_prekeys() override;
  std::optional<std::string> session(std::string_view peer, std::int32_t device) override;
  void put_session(std::string_view peer, std::int32_t device, std::string_view record) override;
  void remove_session(std::string_view peer, std::int32_t device) override;
  std::size_t remove_sessions(std::string_view peer) override;
  std::vector<std::int32_t> session_devices(std::string_view peer) override;
  std::optional<std::string> identity(std::string_view peer) override;
  void put_identity(std::string_view peer, std::string_view key, std::uint64_t now_ms) override;
  std::vector<e2ee::identity_change> take_unseen_identity_changes() override;

  // Every identity change recorded for `peer`, oldest first (shown or not).
  std::vector<e2ee::identity_change> identity_changes(std::string_view peer);
  std::size_t prekey_count();

  // History. A message with a server id is stored once: false if it was already there.
  bool add_message(const local_message& m);
  bool has_message(std::uint64_t server_id);
  // The newest `limit` messages of the chat with `peer`, oldest first.
  std::vector<local_message> history(std::string_view peer, std::size_t limit);
  // The newest message id received from `peer` (what `read` marks as read), 0 if none.
  std::uint64_t last_received(std::string_view peer);

 private:
  class statement;
  statement prepare(const char* sql);
  void exec(const char* sql);

  sqlite3* db_ = nullptr;
  std::filesystem::path file_;
  std::unordered_map<std::string, sqlite3_stmt*> statements_;  // SQL text -> prepared
};

}  // namespace parley::client
