// Test support: an SDK client with blocking calls, for writing integration tests top-down.
#pragma once

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <string>
#include <vector>

#include "client/client.hpp"
#include "server_process.hpp"

namespace parley::test {

namespace v1 = parley::v1;

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
    auto a = run(api_.authenticate(device_id, token));
    ASSERT_TRUE(a) << client::describe(a.error());
    authenticated = *a;
  }

  // Reconnects and authenticates as the same device.
  void reconnect() {
    connect();
    login_on_this_connection();
  }

  void disconnect() { run(api_.close()); }

  v1::SendResult send(const std::string& to, const std::string& text, std::string client_id = {}) {
    if (client_id.empty()) client_id = "c" + std::to_string(next_client_id_++);
    auto r = run(api_.send(to, client_id, text));
    EXPECT_TRUE(r) << client::describe(r.error());
    return r ? *r : v1::SendResult{};
  }

  // The next push, or a failed expectation after `timeout`.
  v1::Frame next(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto f = run(api_.next_push(timeout));
    EXPECT_TRUE(f) << "no push: " << client::describe(f.error());
    return f ? *f : v1::Frame{};
  }

  // Pushes until QueueEmpty (exclusive).
  std::vector<v1::Frame> drain(std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::vector<v1::Frame> out;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto f = run(api_.next_push(std::chrono::seconds(10)));
      if (!f) {
        ADD_FAILURE() << "drain: " << client::describe(f.error());
        break;
      }
      if (f->has_queue_empty()) return out;
      out.push_back(std::move(*f));
    }
    ADD_FAILURE() << "no QueueEmpty";
    return out;
  }

  void ack(const std::vector<std::uint64_t>& ids) {
    auto r = run(api_.ack(ids));
    ASSERT_TRUE(r) << client::describe(r.error());
  }

  std::string username;
  std::uint64_t device_id = 0;
  std::string token;
  v1::Authenticated authenticated;  // the last Authenticate's answer

 private:
  boost::asio::io_context& io_;
  std::string url_;
  client::client api_;
  int next_client_id_ = 1;
};

}  // namespace parley::test
