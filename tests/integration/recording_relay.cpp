#include "recording_relay.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/write.hpp>

namespace parley::test {

namespace asio = boost::asio;
using asio::ip::tcp;

recording_relay::recording_relay(unsigned short server_port)
    : server_port_(server_port), acceptor_(io_) {
  const tcp::endpoint local(asio::ip::make_address("127.0.0.1"), 0);
  acceptor_.open(local.protocol());
  acceptor_.bind(local);
  acceptor_.listen();
  port_ = acceptor_.local_endpoint().port();
  acceptor_thread_ = std::thread([this] { accept_loop(); });
}

recording_relay::~recording_relay() {
  stopping_ = true;
  boost::system::error_code ec;
  // Unblocks accept(): a connection to ourselves, then close.
  {
    tcp::socket poke(io_);
    poke.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
  }
  acceptor_thread_.join();
  acceptor_.close(ec);
  {
    std::lock_guard lock(mutex_);
    for (auto& s : sockets_) s->shutdown(tcp::socket::shutdown_both, ec);
  }
  for (auto& t : threads_) t.join();
}

std::string recording_relay::to_clients() const {
  std::lock_guard lock(mutex_);
  return down_;
}

std::string recording_relay::to_server() const {
  std::lock_guard lock(mutex_);
  return up_;
}

void recording_relay::accept_loop() {
  for (;;) {
    auto client = std::make_shared<tcp::socket>(io_);
    boost::system::error_code ec;
    acceptor_.accept(*client, ec);
    if (ec || stopping_) return;
    auto server = std::make_shared<tcp::socket>(io_);
    server->connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_port_), ec);
    if (ec) continue;  // the client sees its connection closed
    ++connections_;
    std::lock_guard lock(mutex_);
    sockets_.push_back(client);
    sockets_.push_back(server);
    threads_.emplace_back([this, client, server] { pump(client, server, false); });
    threads_.emplace_back([this, client, server] { pump(server, client, true); });
  }
}

void recording_relay::pump(std::shared_ptr<tcp::socket> from, std::shared_ptr<tcp::socket> to,
                           bool downstream) {
  char buf[16 * 1024];
  for (;;) {
    boost::system::error_code ec;
    const std::size_t n = from->read_some(asio::buffer(buf), ec);
    if (n > 0) {
      {
        std::lock_guard lock(mutex_);
        (downstream ? down_ : up_).append(buf, n);
      }
      asio::write(*to, asio::buffer(buf, n), ec);
    }
    if (ec) break;
  }
  boost::system::error_code ignored;
  to->shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace parley::test
