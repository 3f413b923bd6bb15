// The client SDK: one authenticated connection to parleyd and the protocol's requests as
// coroutines. The CLI is built on client/messenger, which adds the Signal protocol on top.
//
// Single-threaded: use one client from one executor. Every request has a deadline; failures
// are values (client_error), never exceptions. Coroutine parameters are taken by value, so an
// awaitable may be started after its arguments' temporaries are gone.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/result.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "client/ws_connection.hpp"
#include "parley/v2/frame.pb.h"

namespace parley::client {

struct client_error {
  enum class kind {
    unreachable,  // could not connect to the server
    timeout,      // no answer before the deadline
    closed,       // the connection closed or broke
    server,       // the server answered with an Error frame: see code
    protocol,     // the server answered something unexpected
    crypto,       // this device's Signal-protocol state or store failed (see message)
    local,        // on this device: a file it cannot read or write, or a request it cannot
                  // make (see message)
  };
  kind what = kind::closed;
  parley::v2::ErrorCode code = parley::v2::ERROR_CODE_UNSPECIFIED;
  std::string message;
  // STORAGE_UNAVAILABLE and RATE_LIMITED: how long the server asks us to wait before retrying.
  std::uint32_t retry_after_ms = 0;
  // Error.subject: the name the server's error is about, when the request named several.
  std::string subject{};
};

}  // namespace parley::client

namespace boost::system {
// Lets result<T, client_error>::value() throw on error.
[[noreturn]] void throw_exception_from_error(const parley::client::client_error& e,
                                             const boost::source_location& loc);
}  // namespace boost::system

namespace parley::client {

template <class T>
using result = boost::system::result<T, client_error>;

// An Ack entry: this device has chat `chat_id` up to `seq`.
struct chat_cursor {
  std::uint64_t chat_id = 0;
  std::uint64_t seq = 0;
};

// The receipts stamp a device keeps between sessions and presents as
// Authenticate.receipts_since, so that the server sends after authentication only the
// watermarks that moved since (docs/protocol.md, "Receipts stamps"). One tracker per session,
// started from the kept stamp (0 if none); feed it every QueueEmpty, and every Receipts frame
// once its receipts are in the local store:
//  - before QueueEmpty it only remembers the highest Receipts.stamp seen;
//  - QueueEmpty raises the token to the highest of it, those stamps and its receipts_stamp;
//  - after QueueEmpty, a Receipts frame with a stamp raises the token to it.
// The token never goes down, and never moves before QueueEmpty (until then, what this
// session was sent may not cover the stamps seen). on_frame() says when it moved: persist
// token() then.
class receipts_stamp_tracker {
 public:
  explicit receipts_stamp_tracker(std::uint64_t kept = 0) : token_(kept) {}

  // True if token() moved: persist it. Other frames change nothing.
  bool on_frame(const parley::v2::Frame& f);
  // A Receipts frame of this session could not be applied (the local store failed): the token
  // stays where it is for the rest of the session, since QueueEmpty's stamp and later ones
  // would cover the watermarks lost. The next session, from the kept token, gets them again.
  void unapplied() { stuck_ = true; }

  std::uint64_t token() const { return token_; }

 private:
  std::uint64_t token_;
  std::uint64_t highest_ = 0;  // the highest Receipts.stamp of this session
  bool drained_ = false;       // QueueEmpty came
  bool stuck_ = false;         // see unapplied()
};

class client {
 public:
  explicit client(boost::asio::any_io_executor executor);
  ~client();

  // `url` is ws://HOST[:PORT][/PATH] or wss://... (see parse_ws_url). Fails as unreachable,
  // with the reason in the message (for wss://, a certificate that fails verification says
  // "TLS: certificate verify failed: " and OpenSSL's reason).
  boost::asio::awaitable<result<void>> connect(std::string url);

  // For wss://: trust only the CA certificates in the PEM file at `path` instead of the
  // system's store (see ws_connection::set_ca_file); empty for the system's store. Applies to
  // every later connect(), and to the https:// blob transfers of client/media_files.
  void set_ca_file(std::string path) { ca_file_ = std::move(path); }
  const std::string& ca_file() const { return ca_file_; }

  boost::asio::awaitable<result<parley::v2::Registered>> register_account(std::string username);
  // `receipts_since`: the receipts stamp this device kept from its last session
  // (receipts_stamp_tracker::token()), 0 if none: the Receipts after authentication then carry
  // only the watermarks that moved after it (with 0, or a stamp the server cannot use, all).
  boost::asio::awaitable<result<parley::v2::Authenticated>> authenticate(
      std::uint64_t device_id, std::string token, std::uint64_t receipts_since = 0);
  // `payload` is a serialized Signal-protocol message of `type` (the messenger makes them);
  // tests and the load generator send opaque bytes, which the server cannot tell apart.
  boost::asio::awaitable<result<parley::v2::SendResult>> send(
      std::string to, std::string client_msg_id, std::string payload,
      parley::v2::CipherType type = parley::v2::CIPHER_TYPE_SIGNAL_MESSAGE,
      std::uint32_t recipient_registration_id = 0, std::string media_id = {});
  boost::asio::awaitable<result<parley::v2::KeysStored>> upload_keys(parley::v2::UploadKeys keys);
  boost::asio::awaitable<result<parley::v2::KeyBundles>> fetch_keys(std::string username);
  // Moves this device's delivery cursors ("I have chat C up to seq N"; cumulative), waiting
  // for the server to have stored them.
  boost::asio::awaitable<result<void>> ack(std::vector<chat_cursor> cursors);
  // The same without waiting (request_id 0: the server sends no Ok; errors still come, as
  // pushes with request_id 0).
  void ack_async(const std::vector<chat_cursor>& cursors);
  boost::asio::awaitable<result<void>> mark_read(std::uint64_t chat_id, std::uint64_t up_to_seq);
  boost::asio::awaitable<result<parley::v2::MessageStatus>> status(std::uint64_t chat_id,
                                                                   std::uint64_t seq);
  // The whole StatusResult: the counts, and with `detail` who has it and who read it.
  boost::asio::awaitable<result<parley::v2::StatusResult>> status_result(std::uint64_t chat_id,
                                                                         std::uint64_t seq,
                                                                         bool detail);
  // Groups (docs/protocol.md, "Groups"): each answers with the GroupInfo after the change.
  // `client_request_id` is what a retry after a lost answer repeats to get the same group
  // back (GroupInfo.duplicate) instead of a second one; empty: a fresh one (new_request_id).
  boost::asio::awaitable<result<parley::v2::GroupInfo>> create_group(
      std::string name, std::vector<std::string> members, std::string client_request_id = {});
  // `user` for ADD, REMOVE, PROMOTE, DEMOTE; `name` for RENAME; neither for LEAVE.
  boost::asio::awaitable<result<parley::v2::GroupInfo>> update_group(std::uint64_t chat_id,
                                                                     parley::v2::GroupChange change,
                                                                     std::string user,
                                                                     std::string name = {});
  boost::asio::awaitable<result<parley::v2::GroupInfo>> get_group(std::uint64_t chat_id);
  // A message to a chat named by its id (a group, or a 1:1 chat): for a group, `payload` is a
  // SenderKeyMessage (type SENDER_KEY_MESSAGE).
  boost::asio::awaitable<result<parley::v2::SendResult>> send_to_chat(
      std::uint64_t chat_id, std::string client_msg_id, std::string payload,
      parley::v2::CipherType type = parley::v2::CIPHER_TYPE_SENDER_KEY_MESSAGE,
      std::uint32_t recipient_registration_id = 0, std::string media_id = {});
  // Media (docs/protocol.md, "Media"): a slot to upload `size` bytes of ciphertext with this
  // SHA-256 (32 bytes), and a URL to download the file of the message at (chat_id, seq).
  boost::asio::awaitable<result<parley::v2::UploadSlot>> request_upload(std::uint64_t size,
                                                                        std::string sha256);
  // The part URLs of the S3 multipart upload `upload_id` the client started at its slot's
  // multipart_url.
  boost::asio::awaitable<result<parley::v2::UploadParts>> request_upload_parts(
      std::string media_id, std::string upload_id);
  boost::asio::awaitable<result<parley::v2::DownloadSlot>> request_download(std::uint64_t chat_id,
                                                                            std::uint64_t seq);
  // A page of a chat's history, newest first, with seq < before_seq (0: from the newest): the
  // 1:1 chat with `peer`, or the chat `chat_id` (history_of_chat).
  boost::asio::awaitable<result<parley::v2::History>> history(std::string peer,
                                                              std::uint64_t before_seq,
                                                              std::uint32_t limit);
  boost::asio::awaitable<result<parley::v2::History>> history_of_chat(std::uint64_t chat_id,
                                                                      std::uint64_t before_seq,
                                                                      std::uint32_t limit);
  // Presence of the users among `users` this account shares a chat with (others are left out
  // by the server).
  boost::asio::awaitable<result<void>> subscribe_presence(std::vector<std::string> users);
  boost::asio::awaitable<result<void>> set_privacy(bool hide_last_seen);
  void typing(const std::string& peer, bool typing);

  // Any request frame; request_id is assigned here. Returns the response frame; an Error frame
  // becomes client_error{server, code, message}.
  boost::asio::awaitable<result<parley::v2::Frame>> request(parley::v2::Frame frame);

  // The next pushed frame (Envelope, Receipts, QueueEmpty, PresenceEvent, TypingEvent,
  // PreKeysLow, or an Error with request_id 0), waiting at most `timeout`.
  boost::asio::awaitable<result<parley::v2::Frame>> next_push(std::chrono::milliseconds timeout);

  // Sends raw bytes as one WebSocket message (tests of the server's input handling).
  void send_raw(std::string bytes);

  boost::asio::awaitable<void> close();
  void abort();
  bool is_open() const;

  void set_request_timeout(std::chrono::milliseconds t) { request_timeout_ = t; }

 private:
  struct pending_request;
  static boost::asio::awaitable<void> read_loop(std::shared_ptr<ws_connection> ws,
                                                std::shared_ptr<struct shared_inbox> inbox);

  boost::asio::any_io_executor executor_;
  std::shared_ptr<ws_connection> ws_;
  std::shared_ptr<struct shared_inbox> inbox_;
  std::uint64_t next_request_id_ = 1;
  std::string ca_file_;
  std::chrono::milliseconds request_timeout_{10'000};
};

std::string describe(const client_error& e);

}  // namespace parley::client
