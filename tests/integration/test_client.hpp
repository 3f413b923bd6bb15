// Test support: an SDK client with blocking calls, for writing integration tests top-down.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <map>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "server_process.hpp"

namespace parley::test {

namespace v2 = parley::v2;

class test_client {
 public:
  test_client(boost::asio::io_context& io, std::string url)
      : io_(io), url_(std::move(url)), api_(io.get_executor()) {}

  client::client& api() { return api_; }

  template <class T>
  T run(boost::asio::awaitable<T> a, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    return block_on(io_, std::move(a), timeout);
  }

  void connect() {
    auto r = run(api_.connect(url_));
    ASSERT_TRUE(r) << client::describe(r.error());
  }

  // Registers `name` on a fresh connection and authenticates it.
  void register_and_login(const std::string& name) {
    connect();
    auto r = run(api_.register_account(name));
    ASSERT_TRUE(r) << client::describe(r.error());
    username = name;
    device_id = r->device_id();
    token = r->token();
    login_on_this_connection();
  }

  void login_on_this_connection() {
    auto a = run(api_.authenticate(device_id, token, receipts_since));
    ASSERT_TRUE(a) << client::describe(a.error());
    authenticated = *a;
  }

  // Reconnects and authenticates as the same device.
  void reconnect() {
    connect();
    login_on_this_connection();
  }
  // The server's address for the next connect() (a restarted server listens elsewhere).
  void retarget(std::string url) { url_ = std::move(url); }

  // Connects and authenticates as `other`'s device: a second connection of the same device,
  // or the same device after a server restart. Client message ids continue from `other`'s, so
  // that send() is not taken for a retry of an earlier message.
  void login_as(const test_client& other) {
    username = other.username;
    device_id = other.device_id;
    token = other.token;
    next_client_id_ = std::max(next_client_id_, other.next_client_id_);
    reconnect();
  }

  void disconnect() { run(api_.close()); }

  v2::SendResult send(const std::string& to, const std::string& text, std::string client_id = {}) {
    if (client_id.empty()) client_id = "c" + std::to_string(next_client_id_++);
    auto r = run(api_.send(to, client_id, text));
    EXPECT_TRUE(r) << client::describe(r.error());
    return r ? *r : v2::SendResult{};
  }

  // `n` requests made by `request(i)` written back to back without waiting for answers, and
  // their results in that order.
  template <class Request>
  auto pipelined(int n, Request request) {
    using result_type = typename decltype(request(0))::value_type;
    std::vector<std::future<result_type>> requests;
    for (int i = 0; i < n; ++i) {
      requests.push_back(boost::asio::co_spawn(io_, request(i), boost::asio::use_future));
    }
    std::vector<result_type> out;
    for (auto& r : requests) {
      while (r.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        io_.restart();
        io_.run_one_for(std::chrono::milliseconds(50));
      }
      out.push_back(r.get());
    }
    return out;
  }

  // `n` sends to `to` written back to back without waiting for answers (client_msg_ids
  // prefix0, prefix1, ...), and their results in that order.
  std::vector<client::result<v2::SendResult>> send_pipelined(const std::string& to, int n,
                                                             const std::string& prefix) {
    return pipelined(n, [&](int i) { return api_.send(to, prefix + std::to_string(i), "x"); });
  }

  // The next push, or a failed expectation after `timeout`.
  v2::Frame next(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto f = run(api_.next_push(timeout));
    EXPECT_TRUE(f) << "no push: " << client::describe(f.error());
    return f ? *f : v2::Frame{};
  }

  // The Envelopes pushed until `count` have come (each awaited up to 10 s: a push may take
  // seconds on a loaded machine), then any that come within `quiet` more (a test checks that
  // nothing else arrives); other pushes are skipped.
  std::vector<v2::Envelope> envelopes(
      std::size_t count, std::chrono::milliseconds quiet = std::chrono::milliseconds(300)) {
    std::vector<v2::Envelope> out;
    for (;;) {
      const bool all_in = out.size() >= count;
      auto f = run(api_.next_push(all_in ? quiet : std::chrono::seconds(10)));
      if (!f) break;
      if (f->has_envelope()) out.push_back(f->envelope());
      if (all_in) break;
    }
    return out;
  }

  // Pushes until QueueEmpty (exclusive): after an Authenticate, the drain's Envelopes, then
  // any Receipts. QueueEmpty's count of drained envelopes is kept in `drained`.
  std::vector<v2::Frame> drain(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::vector<v2::Frame> out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto f = run(api_.next_push(std::chrono::seconds(10)));
      if (!f) {
        ADD_FAILURE() << "drain: " << client::describe(f.error());
        break;
      }
      if (f->has_queue_empty()) {
        drained = f->queue_empty().drained();
        receipts_stamp = f->queue_empty().receipts_stamp();
        return out;
      }
      out.push_back(std::move(*f));
    }
    ADD_FAILURE() << "no QueueEmpty";
    return out;
  }

  // Moves this device's cursors (waits for the server's Ok).
  void ack(const std::vector<client::chat_cursor>& cursors) {
    auto r = run(api_.ack(cursors));
    ASSERT_TRUE(r) << client::describe(r.error());
  }
  // Acks every Envelope among `frames` (one cursor per chat, at its highest seq); other frames
  // are skipped. Nothing is sent if there is no Envelope.
  void ack_all(const std::vector<v2::Frame>& frames) {
    const auto cursors = cursors_of(frames);
    if (!cursors.empty()) ack(cursors);
  }

  // The cursor that acks `e` (and everything before it in its chat).
  static client::chat_cursor cursor_of(const v2::Envelope& e) { return {e.chat_id(), e.seq()}; }
  // One cursor per chat among the Envelopes of `frames`, at its highest seq, ordered by chat.
  static std::vector<client::chat_cursor> cursors_of(const std::vector<v2::Frame>& frames) {
    std::map<std::uint64_t, std::uint64_t> highest;
    for (const auto& f : frames) {
      if (!f.has_envelope()) continue;
      auto& seq = highest[f.envelope().chat_id()];
      seq = std::max(seq, f.envelope().seq());
    }
    std::vector<client::chat_cursor> out;
    for (const auto& [chat, seq] : highest) out.push_back({chat, seq});
    return out;
  }
  // The Envelopes among `frames`, in order.
  static std::vector<v2::Envelope> envelopes_in(const std::vector<v2::Frame>& frames) {
    std::vector<v2::Envelope> out;
    for (const auto& f : frames) {
      if (f.has_envelope()) out.push_back(f.envelope());
    }
    return out;
  }
  // Every Receipt of the Receipts frames among `frames`, in order.
  static std::vector<v2::Receipt> receipts_in(const std::vector<v2::Frame>& frames) {
    std::vector<v2::Receipt> out;
    for (const auto& f : frames) {
      if (f.has_receipts())
        out.insert(out.end(), f.receipts().receipts().begin(), f.receipts().receipts().end());
    }
    return out;
  }

  std::string username;
  std::uint64_t device_id = 0;
  std::string token;
  v2::Authenticated authenticated;  // the last Authenticate's answer
  std::uint64_t drained = 0;        // the last QueueEmpty's count, as drain() saw it
  std::uint64_t receipts_stamp = 0;  // the last QueueEmpty's receipts stamp, as drain() saw it
  std::uint64_t receipts_since = 0;  // presented at each login (Authenticate.receipts_since)

 private:
  boost::asio::io_context& io_;
  std::string url_;
  client::client api_;
  int next_client_id_ = 1;
};

// The error code of a failed request (UNSPECIFIED, and a failure, if it succeeded).
template <class T>
inline v2::ErrorCode code_of(const client::result<T>& r) {
  EXPECT_FALSE(r) << "the server accepted it";
  if (r) return v2::ERROR_CODE_UNSPECIFIED;
  EXPECT_EQ(r.error().what, client::client_error::kind::server) << client::describe(r.error());
  return r.error().code;
}

// A user online with nothing pending: registered as `name`, authenticated, and drained to
// QueueEmpty (the set-up most tests start from).
inline test_client online(boost::asio::io_context& io, const std::string& url,
                          const std::string& name) {
  test_client c(io, url);
  c.register_and_login(name);
  c.drain();
  return c;
}

}  // namespace parley::test
