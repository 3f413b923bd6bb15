#include "client/client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <optional>
#include <stdexcept>

#include "wire/frame_codec.hpp"

namespace boost::system {
void throw_exception_from_error(const parley::client::client_error& e,
                                const boost::source_location&) {
  throw std::runtime_error(parley::client::describe(e));
}
}  // namespace boost::system

namespace parley::client {

namespace asio = boost::asio;
namespace v1 = parley::v1;
using asio::awaitable;
constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

// State shared by the client and its read loop (which may outlive the client briefly).
struct shared_inbox {
  explicit shared_inbox(asio::any_io_executor ex)
      : push_ready(ex, asio::steady_timer::time_point::max()) {}

  struct slot {
    explicit slot(asio::any_io_executor ex) : ready(ex, asio::steady_timer::time_point::max()) {}
    std::optional<v1::Frame> response;
    asio::steady_timer ready;
  };
  std::map<std::uint64_t, std::shared_ptr<slot>> pending;
  std::deque<v1::Frame> pushes;
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
    case client_error::kind::server: {
      std::string name = v1::ErrorCode_Name(e.code);
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
    co_return client_error{client_error::kind::unreachable, v1::ERROR_CODE_UNSPECIFIED,
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
    v1::Frame frame;
    if (auto err = wire::decode_push(bytes, frame)) continue;  // ignore what we cannot parse
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

awaitable<result<v1::Frame>> client::request(v1::Frame frame) {
  if (!ws_ || inbox_->closed) {
    co_return client_error{client_error::kind::closed, v1::ERROR_CODE_UNSPECIFIED,
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
      co_return client_error{client_error::kind::closed, v1::ERROR_CODE_UNSPECIFIED,
                             inbox->close_reason};
    }
    co_return client_error{client_error::kind::timeout, v1::ERROR_CODE_UNSPECIFIED, {}};
  }
  if (s->response->has_error()) {
    co_return client_error{client_error::kind::server, s->response->error().code(),
                           s->response->error().message(),
                           s->response->error().retry_after_ms()};
  }
  co_return std::move(*s->response);
}

namespace {
client_error unexpected(const v1::Frame& f) {
  return {client_error::kind::protocol, v1::ERROR_CODE_UNSPECIFIED,
          "response " + std::to_string(f.body_case())};
}
}  // namespace

awaitable<result<v1::Registered>> client::register_account(std::string username) {
  v1::Frame f;
  f.mutable_register_()->set_username(username);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_registered()) co_return unexpected(*r);
  co_return r->registered();
}

awaitable<result<v1::Authenticated>> client::authenticate(std::uint64_t device_id,
                                                          std::string token) {
  v1::Frame f;
  f.mutable_authenticate()->set_device_id(device_id);
  f.mutable_authenticate()->set_token(token);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_authenticated()) co_return unexpected(*r);
  co_return r->authenticated();
}

awaitable<result<v1::SendResult>> client::send(std::string to, std::string client_msg_id,
                                               std::string payload, v1::CipherType type,
                                               std::uint32_t recipient_registration_id) {
  v1::Frame f;
  auto* m = f.mutable_send_message();
  m->set_to(to);
  m->set_client_msg_id(client_msg_id);
  m->set_payload(payload);
  m->set_type(type);
  m->set_recipient_registration_id(recipient_registration_id);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_send_result()) co_return unexpected(*r);
  co_return r->send_result();
}

awaitable<result<v1::KeysStored>> client::upload_keys(v1::UploadKeys keys) {
  v1::Frame f;
  *f.mutable_upload_keys() = std::move(keys);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_keys_stored()) co_return unexpected(*r);
  co_return r->keys_stored();
}

awaitable<result<v1::KeyBundles>> client::fetch_keys(std::string username) {
  v1::Frame f;
  f.mutable_fetch_keys()->set_username(username);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_key_bundles()) co_return unexpected(*r);
  co_return r->key_bundles();
}

awaitable<result<void>> client::ack(std::vector<std::uint64_t> event_ids) {
  v1::Frame f;
  for (auto id : event_ids) f.mutable_ack()->add_event_ids(id);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_ok()) co_return unexpected(*r);
  co_return result<void>{};
}

void client::ack_async(const std::vector<std::uint64_t>& event_ids) {
  if (!ws_ || event_ids.empty()) return;
  v1::Frame f;
  for (auto id : event_ids) f.mutable_ack()->add_event_ids(id);
  ws_->send(f.SerializeAsString());
}

awaitable<result<void>> client::mark_read(std::string peer, std::uint64_t up_to) {
  v1::Frame f;
  f.mutable_mark_read()->set_peer(peer);
  f.mutable_mark_read()->set_up_to_message_id(up_to);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_ok()) co_return unexpected(*r);
  co_return result<void>{};
}

awaitable<result<v1::MessageStatus>> client::status(std::uint64_t message_id) {
  v1::Frame f;
  f.mutable_get_status()->set_message_id(message_id);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_status_result()) co_return unexpected(*r);
  co_return r->status_result().status();
}

awaitable<result<v1::History>> client::history(std::string peer, std::uint64_t before,
                                               std::uint32_t limit) {
  v1::Frame f;
  f.mutable_get_history()->set_peer(peer);
  f.mutable_get_history()->set_before_message_id(before);
  f.mutable_get_history()->set_limit(limit);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_history()) co_return unexpected(*r);
  co_return r->history();
}

awaitable<result<void>> client::subscribe_presence(std::vector<std::string> users) {
  v1::Frame f;
  for (const auto& u : users) f.mutable_subscribe_presence()->add_usernames(u);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_ok()) co_return unexpected(*r);
  co_return result<void>{};
}

awaitable<result<void>> client::set_privacy(bool hide_last_seen) {
  v1::Frame f;
  f.mutable_set_privacy()->set_hide_last_seen(hide_last_seen);
  auto r = co_await request(std::move(f));
  if (!r) co_return r.error();
  if (!r->has_ok()) co_return unexpected(*r);
  co_return result<void>{};
}

void client::typing(const std::string& peer, bool typing) {
  if (!ws_) return;
  v1::Frame f;
  f.mutable_typing()->set_peer(peer);
  f.mutable_typing()->set_typing(typing);
  ws_->send(f.SerializeAsString());
}

awaitable<result<v1::Frame>> client::next_push(std::chrono::milliseconds timeout) {
  auto inbox = inbox_;
  if (inbox->pushes.empty() && !inbox->closed) {
    inbox->push_ready.expires_after(timeout);
    co_await inbox->push_ready.async_wait(as_tuple_awaitable);
  }
  if (!inbox->pushes.empty()) {
    v1::Frame f = std::move(inbox->pushes.front());
    inbox->pushes.pop_front();
    co_return f;
  }
  if (inbox->closed) {
    co_return client_error{client_error::kind::closed, v1::ERROR_CODE_UNSPECIFIED,
                           inbox->close_reason};
  }
  co_return client_error{client_error::kind::timeout, v1::ERROR_CODE_UNSPECIFIED, {}};
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
