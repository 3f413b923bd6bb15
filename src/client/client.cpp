#include "client/client.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>
#include <stdexcept>

#include "client/profile.hpp"
#include "wire/frame_codec.hpp"

namespace boost::system {
void throw_exception_from_error(const parley::client::client_error& e,
                                const boost::source_location&) {
  throw std::runtime_error(parley::client::describe(e));
}
}  // namespace boost::system

namespace parley::client {

namespace asio = boost::asio;
namespace v2 = parley::v2;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// State shared by the client and its read loop (which may outlive the client briefly).
struct shared_inbox {
  explicit shared_inbox(asio::any_io_executor ex)
      : push_ready(ex, asio::steady_timer::time_point::max()) {}

  struct slot {
    explicit slot(asio::any_io_executor ex) : ready(ex, asio::steady_timer::time_point::max()) {}
    std::optional<v2::Frame> response;
    asio::steady_timer ready;
  };
  std::map<std::uint64_t, std::shared_ptr<slot>> pending;
  std::deque<v2::Frame> pushes;
  asio::steady_timer push_ready;
  bool closed = false;
  std::string close_reason;

  void close(std::string why) {
    if (closed) return;
    closed = true;
    close_reason = std::move(why);
    for (auto& [id, s] : pending) s->ready.cancel();
    push_ready.cancel();
  }
};

std::string describe(const client_error& e) {
  switch (e.what) {
    case client_error::kind::unreachable:
      return "server not reachable: " + e.message;
    case client_error::kind::timeout:
      return "no answer from the server in time";
    case client_error::kind::closed:
      return "connection to the server lost" + (e.message.empty() ? "" : ": " + e.message);
    case client_error::kind::protocol:
      return "unexpected answer from the server: " + e.message;
    case client_error::kind::crypto:
      return "end-to-end encryption failed: " + e.message;
    case client_error::kind::local:
      return e.message;
    case client_error::kind::server: {
      std::string name = v2::ErrorCode_Name(e.code);
      if (name.rfind("ERROR_CODE_", 0) == 0) name = name.substr(11);
      return e.message + " (" + name + ")";
    }
  }
  return e.message;
}

client::client(asio::any_io_executor executor)
    : executor_(executor), inbox_(std::make_shared<shared_inbox>(executor)) {}

client::~client() {
  if (ws_) ws_->abort();
  inbox_->close("client destroyed");
}

bool client::is_open() const { return ws_ && !inbox_->closed; }

awaitable<result<void>> client::connect(std::string url) {
  // Reconnecting starts afresh: requests of the old connection are failed as closed.
  if (ws_) ws_->abort();
  inbox_->close("reconnecting");
  inbox_ = std::make_shared<shared_inbox>(executor_);
  ws_ = std::make_shared<ws_connection>(executor_);
  ws_->set_ca_file(ca_file_);
  auto ec = co_await ws_->connect(url, std::chrono::seconds(5));
  if (ec) {
    co_return client_error{client_error::kind::unreachable, v2::ERROR_CODE_UNSPECIFIED,
                           url + " (" + ec.message() + ")"};
  }
  asio::co_spawn(executor_, read_loop(ws_, inbox_), asio::detached);
  co_return result<void>{};
}

awaitable<void> client::read_loop(std::shared_ptr<ws_connection> ws,
                                  std::shared_ptr<shared_inbox> inbox) {
  for (;;) {
    auto [ec, bytes] = co_await ws->read();
    if (ec) {
      inbox->close(ec.message());
      co_return;
    }
    v2::Frame frame;
    if (!frame.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      // It could be an Envelope or Receipts: dropped, the next frames (a later seq acked,
      // QueueEmpty's stamp) would pass over it for good. The connection goes instead, and the
      // next one's drain sends it again.
      inbox->close("the server sent a frame that is not a parley.v2.Frame");
      co_await ws->close(std::chrono::seconds(1));
      co_return;
    }
    if (frame.body_case() == v2::Frame::BODY_NOT_SET) continue;  // a kind this client predates
    if (frame.request_id() != 0) {
      auto it = inbox->pending.find(frame.request_id());
      if (it != inbox->pending.end()) {
        it->second->response = std::move(frame);
        it->second->ready.cancel();
        inbox->pending.erase(it);
      }
      continue;
    }
    inbox->pushes.push_back(std::move(frame));
    inbox->push_ready.cancel();
  }
}

awaitable<result<v2::Frame>> client::request(v2::Frame frame) {
  if (!ws_ || inbox_->closed) {
    co_return client_error{client_error::kind::closed, v2::ERROR_CODE_UNSPECIFIED,
                           inbox_->close_reason};
  }
  const std::uint64_t id = next_request_id_++;
  frame.set_request_id(id);
  auto inbox = inbox_;
  auto s = std::make_shared<shared_inbox::slot>(executor_);
  inbox->pending.emplace(id, s);
  s->ready.expires_after(request_timeout_);
  ws_->send(frame.SerializeAsString());
  co_await s->ready.async_wait(as_tuple_awaitable);
  if (!s->response) {
    inbox->pending.erase(id);
    if (inbox->closed) {
      co_return client_error{client_error::kind::closed, v2::ERROR_CODE_UNSPECIFIED,
                             inbox->close_reason};
    }
    co_return client_error{client_error::kind::timeout, v2::ERROR_CODE_UNSPECIFIED, {}};
  }
  if (s->response->has_error()) {
    co_return client_error{client_error::kind::server, s->response->error().code(),
                           s->response->error().message(), s->response->error().retry_after_ms(),
                           s->response->error().subject()};
  }
  co_return std::move(*s->response);
}

namespace {
client_error unexpected(const v2::Frame& f) {
  return {client_error::kind::protocol, v2::ERROR_CODE_UNSPECIFIED,
          "response " + std::to_string(f.body_case())};
}

// The answer to `f` when it is the body `has` tells of, moved out of the frame by `take`;
// else the request's own error (client::request), or a protocol error naming the frame that
// came instead.
template <class Body>
awaitable<result<Body>> answer(client& c, v2::Frame f, bool (v2::Frame::*has)() const,
                               Body* (v2::Frame::*take)()) {
  auto r = co_await c.request(std::move(f));
  if (!r) co_return r.error();
  if (!((*r).*has)()) co_return unexpected(*r);
  co_return std::move(*((*r).*take)());
}

// The same for a request answered with Ok.
awaitable<result<void>> answer_ok(client& c, v2::Frame f) {
  auto r = co_await c.request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_ok()) co_return unexpected(*r);
  co_return result<void>{};
}
}  // namespace

awaitable<result<v2::Registered>> client::register_account(std::string username) {
  v2::Frame f;
  f.mutable_register_()->set_username(username);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_registered,
                            &v2::Frame::mutable_registered);
}

awaitable<result<v2::Authenticated>> client::authenticate(std::uint64_t device_id,
                                                          std::string token,
                                                          std::uint64_t receipts_since) {
  v2::Frame f;
  f.mutable_authenticate()->set_device_id(device_id);
  f.mutable_authenticate()->set_token(token);
  f.mutable_authenticate()->set_receipts_since(receipts_since);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_authenticated,
                            &v2::Frame::mutable_authenticated);
}

bool receipts_stamp_tracker::on_frame(const v2::Frame& f) {
  std::uint64_t to = token_;
  if (f.has_receipts()) {
    highest_ = std::max(highest_, f.receipts().stamp());
    if (drained_) to = std::max(to, f.receipts().stamp());
  } else if (f.has_queue_empty()) {
    drained_ = true;
    to = std::max({to, highest_, f.queue_empty().receipts_stamp()});
  } else {
    return false;
  }
  if (stuck_ || to == token_) return false;
  token_ = to;
  return true;
}

awaitable<result<v2::SendResult>> client::send(std::string to, std::string client_msg_id,
                                               std::string payload, v2::CipherType type,
                                               std::uint32_t recipient_registration_id,
                                               std::string media_id) {
  v2::Frame f;
  auto* m = f.mutable_send_message();
  m->set_to(to);
  m->set_client_msg_id(client_msg_id);
  m->set_payload(payload);
  m->set_type(type);
  m->set_recipient_registration_id(recipient_registration_id);
  m->set_media_id(std::move(media_id));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_send_result,
                            &v2::Frame::mutable_send_result);
}

awaitable<result<v2::KeysStored>> client::upload_keys(v2::UploadKeys keys) {
  v2::Frame f;
  *f.mutable_upload_keys() = std::move(keys);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_keys_stored,
                            &v2::Frame::mutable_keys_stored);
}

awaitable<result<v2::KeyBundles>> client::fetch_keys(std::string username) {
  v2::Frame f;
  f.mutable_fetch_keys()->set_username(username);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_key_bundles,
                            &v2::Frame::mutable_key_bundles);
}

namespace {
v2::Frame ack_frame(const std::vector<chat_cursor>& cursors) {
  v2::Frame f;
  for (const auto& c : cursors) {
    auto* e = f.mutable_ack()->add_cursors();
    e->set_chat_id(c.chat_id);
    e->set_seq(c.seq);
  }
  return f;
}
}  // namespace

awaitable<result<void>> client::ack(std::vector<chat_cursor> cursors) {
  co_return co_await answer_ok(*this, ack_frame(cursors));
}

void client::ack_async(const std::vector<chat_cursor>& cursors) {
  if (!ws_ || cursors.empty()) return;
  ws_->send(ack_frame(cursors).SerializeAsString());
}

awaitable<result<void>> client::mark_read(std::uint64_t chat_id, std::uint64_t up_to_seq) {
  v2::Frame f;
  f.mutable_mark_read()->set_chat_id(chat_id);
  f.mutable_mark_read()->set_up_to_seq(up_to_seq);
  co_return co_await answer_ok(*this, std::move(f));
}

awaitable<result<v2::MessageStatus>> client::status(std::uint64_t chat_id, std::uint64_t seq) {
  v2::Frame f;
  f.mutable_get_status()->set_chat_id(chat_id);
  f.mutable_get_status()->set_seq(seq);
  auto r = co_await answer(*this, std::move(f), &v2::Frame::has_status_result,
                           &v2::Frame::mutable_status_result);
  if (!r) co_return r.error();
  co_return r->status();
}

awaitable<result<v2::StatusResult>> client::status_result(std::uint64_t chat_id, std::uint64_t seq,
                                                          bool detail) {
  v2::Frame f;
  f.mutable_get_status()->set_chat_id(chat_id);
  f.mutable_get_status()->set_seq(seq);
  f.mutable_get_status()->set_detail(detail);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_status_result,
                            &v2::Frame::mutable_status_result);
}

awaitable<result<v2::SendResult>> client::send_to_chat(std::uint64_t chat_id,
                                                       std::string client_msg_id,
                                                       std::string payload, v2::CipherType type,
                                                       std::uint32_t recipient_registration_id,
                                                       std::string media_id) {
  v2::Frame f;
  auto* m = f.mutable_send_message();
  m->set_chat_id(chat_id);
  m->set_client_msg_id(std::move(client_msg_id));
  m->set_payload(std::move(payload));
  m->set_type(type);
  m->set_recipient_registration_id(recipient_registration_id);
  m->set_media_id(std::move(media_id));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_send_result,
                            &v2::Frame::mutable_send_result);
}

awaitable<result<v2::UploadSlot>> client::request_upload(std::uint64_t size, std::string sha256) {
  v2::Frame f;
  f.mutable_request_upload()->set_size(size);
  f.mutable_request_upload()->set_sha256(std::move(sha256));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_upload_slot,
                            &v2::Frame::mutable_upload_slot);
}

awaitable<result<v2::UploadParts>> client::request_upload_parts(std::string media_id,
                                                                std::string upload_id) {
  v2::Frame f;
  f.mutable_request_upload_parts()->set_media_id(std::move(media_id));
  f.mutable_request_upload_parts()->set_upload_id(std::move(upload_id));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_upload_parts,
                            &v2::Frame::mutable_upload_parts);
}

awaitable<result<v2::DownloadSlot>> client::request_download(std::uint64_t chat_id,
                                                             std::uint64_t seq) {
  v2::Frame f;
  f.mutable_request_download()->set_chat_id(chat_id);
  f.mutable_request_download()->set_seq(seq);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_download_slot,
                            &v2::Frame::mutable_download_slot);
}

awaitable<result<v2::GroupInfo>> client::create_group(std::string name,
                                                      std::vector<std::string> members,
                                                      std::string client_request_id) {
  v2::Frame f;
  auto* c = f.mutable_create_group();
  c->set_name(std::move(name));
  for (auto& m : members) c->add_members(std::move(m));
  c->set_client_request_id(client_request_id.empty() ? new_request_id()
                                                     : std::move(client_request_id));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_group_info,
                            &v2::Frame::mutable_group_info);
}

awaitable<result<v2::GroupInfo>> client::update_group(std::uint64_t chat_id, v2::GroupChange change,
                                                      std::string user, std::string name) {
  v2::Frame f;
  auto* u = f.mutable_update_group();
  u->set_chat_id(chat_id);
  u->set_change(change);
  u->set_user(std::move(user));
  u->set_name(std::move(name));
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_group_info,
                            &v2::Frame::mutable_group_info);
}

awaitable<result<v2::GroupInfo>> client::get_group(std::uint64_t chat_id) {
  v2::Frame f;
  f.mutable_get_group()->set_chat_id(chat_id);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_group_info,
                            &v2::Frame::mutable_group_info);
}

awaitable<result<v2::History>> client::history(std::string peer, std::uint64_t before_seq,
                                               std::uint32_t limit) {
  v2::Frame f;
  f.mutable_get_history()->set_peer(peer);
  f.mutable_get_history()->set_before_seq(before_seq);
  f.mutable_get_history()->set_limit(limit);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_history,
                            &v2::Frame::mutable_history);
}

awaitable<result<v2::History>> client::history_of_chat(std::uint64_t chat_id,
                                                       std::uint64_t before_seq,
                                                       std::uint32_t limit) {
  v2::Frame f;
  f.mutable_get_history()->set_chat_id(chat_id);
  f.mutable_get_history()->set_before_seq(before_seq);
  f.mutable_get_history()->set_limit(limit);
  co_return co_await answer(*this, std::move(f), &v2::Frame::has_history,
                            &v2::Frame::mutable_history);
}

awaitable<result<void>> client::subscribe_presence(std::vector<std::string> users) {
  v2::Frame f;
  for (const auto& u : users) f.mutable_subscribe_presence()->add_usernames(u);
  co_return co_await answer_ok(*this, std::move(f));
}

awaitable<result<void>> client::set_privacy(bool hide_last_seen) {
  v2::Frame f;
  f.mutable_set_privacy()->set_hide_last_seen(hide_last_seen);
  co_return co_await answer_ok(*this, std::move(f));
}

void client::typing(const std::string& peer, bool typing) {
  if (!ws_) return;
  v2::Frame f;
  f.mutable_typing()->set_peer(peer);
  f.mutable_typing()->set_typing(typing);
  ws_->send(f.SerializeAsString());
}

awaitable<result<v2::Frame>> client::next_push(std::chrono::milliseconds timeout) {
  auto inbox = inbox_;
  if (inbox->pushes.empty() && !inbox->closed) {
    inbox->push_ready.expires_after(timeout);
    co_await inbox->push_ready.async_wait(as_tuple_awaitable);
  }
  if (!inbox->pushes.empty()) {
    v2::Frame f = std::move(inbox->pushes.front());
    inbox->pushes.pop_front();
    co_return f;
  }
  if (inbox->closed) {
    co_return client_error{client_error::kind::closed, v2::ERROR_CODE_UNSPECIFIED,
                           inbox->close_reason};
  }
  co_return client_error{client_error::kind::timeout, v2::ERROR_CODE_UNSPECIFIED, {}};
}

void client::send_raw(std::string bytes) {
  if (ws_) ws_->send(std::move(bytes));
}

awaitable<void> client::close() {
  if (ws_ && !inbox_->closed) co_await ws_->close(std::chrono::seconds(2));
  inbox_->close("closed by the client");
}

void client::abort() {
  if (ws_) ws_->abort();
  inbox_->close("aborted by the client");
}

}  // namespace parley::client
